"""The landing page (``slicebox/``) reads like a product: its cards say what each notebook is about in plain
words, never the markdown of the notebooks they come from, nor a sentence cut at an abbreviation."""

from __future__ import annotations

import re

from slicebox_lab.handlers.pages import _notebook_intro
from slicebox_lab.server.shipped import dashboards, tutorials


def test_every_card_is_a_plain_title_and_whole_sentences():
    notebooks = {**dashboards(), **tutorials()}
    assert len(notebooks) >= 9
    for name, path in notebooks.items():
        title, about = _notebook_intro(path)
        for text in (title, about):
            assert not re.search(r"\*|`|\]\(|^#", text), (name, text)
        assert title and not title.startswith(("0", "dashboards")), (name, title)  # the heading, not the file name
        assert about.endswith(".") and not about.endswith(("e.g.", "i.e.")), (name, about)
        assert about.count("(") == about.count(")"), (name, about)  # no sentence cut inside its parenthesis
    _, about = _notebook_intro(tutorials()["05-building-a-training-set"])
    assert about.startswith("Series types are rules the node applies to every series (e.g. CT chest:")


async def test_the_landing_page_shows_the_cards_as_text(jp_fetch):
    page = (await jp_fetch("slicebox/")).body.decode()
    assert "Two nodes connect through a box." in page
    assert "**" not in page and "`" not in page
