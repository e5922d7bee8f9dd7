"""The landing page (``slicebox/``) reads like a product: its cards say what each notebook is about in plain
words, never the markdown of the notebooks they come from, nor a sentence cut at an abbreviation."""

from __future__ import annotations

import json
import re

from helpers import serve_with

from slicebox_lab.handlers.pages import _notebook_intro
from slicebox_lab.net.scp import scp_service_factory
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


async def test_the_landing_page_counts_the_running_dicom_listeners(jp_fetch, jp_serverapp):
    """The listeners are the node's SCP service's (the one its handlers use), not an attribute of the context."""
    context = jp_serverapp.web_app.settings["slicebox_context"]
    service = scp_service_factory(context)
    service.start()
    serve_with(jp_serverapp, service)
    try:
        assert "0 DICOM listeners running" in (await jp_fetch("slicebox/")).body.decode()
        body = json.dumps({"name": "pacs in", "ae_title": "SBX-IN", "port": 0, "host": "127.0.0.1"})
        added = await jp_fetch("slicebox", "api", "scps", method="POST", body=body)
        assert added.code == 201
        assert "1 DICOM listener running" in (await jp_fetch("slicebox/")).body.decode()
    finally:
        service.stop(5.0)
