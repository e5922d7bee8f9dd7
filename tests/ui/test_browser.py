"""The Browser widget against a real `jupyter slicebox` node with 30 series: tree, table, filters, sort,
paging and the selection, driven through the widget models as a click in the browser would."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from generators import ct_bytes
from ipywidgets.embed import embed_data
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from nodeproc import NodeProcess, start_node  # noqa: E402

from slicebox_lab.client import connect  # noqa: E402
from slicebox_lab.ui import Browser, Viewer  # noqa: E402

DICOM = {"Content-Type": "application/dicom"}
PATIENTS = ("Alpha^Ann", "Beta^Bo", "Gamma^Cy")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A node with 3 patients × 2 studies × 5 series (one image each); series desc-01..desc-30;
    desc-01..desc-04 tagged `follow-up`, desc-05 typed `T1`."""
    work = tmp_path_factory.mktemp("browser")
    node = start_node(work / "node", work)
    try:
        s = node.session()
        n = 0
        for p, name in enumerate(PATIENTS):
            for _study in range(2):
                study_uid = generate_uid()
                for _series in range(5):
                    n += 1
                    modality = "MR" if n % 3 == 0 else "CT"
                    data = ct_bytes(PatientName=name, PatientID=f"PID-{p}", StudyInstanceUID=study_uid,
                                    SeriesDescription=f"desc-{n:02d}", Modality=modality)  # fmt: skip
                    r = s.post(node.api + "/images", data=data, headers=DICOM, timeout=30)
                    assert r.status_code == 201, r.text
        flat = s.get(node.api + "/metadata/flatseries", params={"count": 100}, timeout=30).json()
        by_desc = {f["series"]["SeriesDescription"]: int(f["id"]) for f in flat}
        assert len(by_desc) == 30
        for desc in ("desc-01", "desc-02", "desc-03", "desc-04"):
            r = s.post(f"{node.api}/metadata/series/{by_desc[desc]}/seriestags", json={"name": "follow-up"}, timeout=30)
            assert r.status_code == 201, r.text
        t1 = s.post(node.api + "/seriestypes", json={"name": "T1"}, timeout=30).json()
        assert s.put(f"{node.api}/metadata/series/{by_desc['desc-05']}/seriestypes/{t1['id']}", timeout=30).ok
        yield {"node": node, "series": by_desc, "type_id": int(t1["id"])}
    finally:
        node.stop()


@pytest.fixture
def client(seeded: dict[str, Any]) -> Any:
    node: NodeProcess = seeded["node"]
    return connect(node.url, token=node.token)


def _descriptions(browser: Browser) -> list[str]:
    return [str(r["SeriesDescription"]) for r in browser.table.grid.records]


def test_pages_through_the_flat_table(client: Any):
    browser = Browser(client, page_size=10)
    assert browser.status.level != "error", browser.status.message
    table = browser.table
    assert _descriptions(browser) == [f"desc-{n:02d}" for n in range(1, 11)]
    assert table.prev_button.disabled and not table.next_button.disabled
    for column in ("PatientName", "StudyDate", "SeriesDescription", "Modality", "source"):
        assert column in table.grid.columns, table.grid.columns
    table.next_button.click()
    assert _descriptions(browser) == [f"desc-{n:02d}" for n in range(11, 21)]
    table.next_button.click()
    assert _descriptions(browser) == [f"desc-{n:02d}" for n in range(21, 31)]
    assert table.next_button.disabled and not table.prev_button.disabled
    table.prev_button.click()
    assert _descriptions(browser)[0] == "desc-11"
    table.page_size_picker.value = 50
    assert len(table.grid.records) == 30 and table.page == 0 and table.next_button.disabled
    state = embed_data(views=[browser])["manager_state"]["state"]  # every model serializes for a front end
    assert len(state) > 30 * len(table.grid.columns)


def test_sorts_by_a_column_header_both_ways(client: Any, seeded: dict[str, Any]):
    browser = Browser(client, page_size=50)
    header = browser.table.grid.header_buttons["SeriesDescription"]
    header.click()
    assert _descriptions(browser) == [f"desc-{n:02d}" for n in range(1, 31)]
    browser.table.grid.header_buttons["SeriesDescription"].click()  # the grid is rebuilt: the new header
    assert _descriptions(browser) == [f"desc-{n:02d}" for n in range(30, 0, -1)]
    browser.table.grid.header_buttons["PatientName"].click()
    names = [r["PatientName"] for r in browser.table.grid.records]
    assert names == sorted(names) and names[0] == "Alpha^Ann" and names[-1] == "Gamma^Cy"
    assert browser.table.grid.header_buttons["PatientName"].description.endswith("▲")


def test_filters_by_text_tag_type_and_source(client: Any, seeded: dict[str, Any]):
    browser = Browser(client, page_size=50)
    table = browser.table
    table.filter.value = "desc-1"
    assert sorted(_descriptions(browser)) == [f"desc-{n}" for n in range(10, 20)]
    table.filter.value = "gamma"  # the patient's name, case-insensitive
    assert len(table.grid.records) == 10
    table.filter.value = ""
    assert len(table.grid.records) == 30

    tag_ids = {label: value for label, value in table.tag_filter.options}
    table.tag_filter.value = (tag_ids["follow-up"],)
    assert sorted(_descriptions(browser)) == ["desc-01", "desc-02", "desc-03", "desc-04"]
    assert all("follow-up" in str(r.get("tags")) for r in table.grid.records)
    table.tag_filter.value = ()

    type_ids = {label: value for label, value in table.type_filter.options}
    table.type_filter.value = (type_ids["T1"],)
    assert _descriptions(browser) == ["desc-05"]
    table.type_filter.value = ()

    sources = dict(table.source_filter.options)
    assert len(sources) >= 1 and any(label.startswith("user") for label in sources)
    table.source_filter.value = (next(v for k, v in sources.items() if k.startswith("user")),)
    assert len(table.grid.records) == 30

    client.tag_series(seeded["series"]["desc-30"], "late")  # a tag made elsewhere appears on Refresh
    table.refresh_button.click()
    assert "late" in dict(table.tag_filter.options) and len(table.source_filter.value) == 1  # the choice stays
    table.tag_filter.value = (dict(table.tag_filter.options)["late"],)
    assert _descriptions(browser) == ["desc-30"] and table.grid.records[0]["tags"] == ["late"]


def test_checked_rows_make_the_selection_across_pages(client: Any, seeded: dict[str, Any]):
    browser = Browser(client, page_size=10)
    seen: list[list[int]] = []
    browser.on_select(lambda selection: seen.append(list(selection.series_ids)))
    ids = seeded["series"]
    table = browser.table
    table.grid.checkboxes[ids["desc-02"]].value = True
    table.grid.checkboxes[ids["desc-07"]].value = True
    assert browser.selected_series_ids == [ids["desc-02"], ids["desc-07"]]
    table.next_button.click()
    table.grid.checkboxes[ids["desc-15"]].value = True
    wanted = [ids["desc-02"], ids["desc-07"], ids["desc-15"]]
    assert browser.selected_series_ids == wanted
    selection = browser.selection
    assert sorted(selection.series_ids) == sorted(wanted)
    assert len(selection.image_ids()) == 3
    assert sorted(seen[-1]) == sorted(wanted)
    table.prev_button.click()  # the ticks of page 1 are still shown
    assert table.grid.checked_ids() == [ids["desc-02"], ids["desc-07"]]
    table.grid.checkboxes[ids["desc-02"]].value = False
    assert browser.selected_series_ids == [ids["desc-07"], ids["desc-15"]]
    table.clear_button.click()
    assert browser.selected_series_ids == [] and table.grid.checked_ids() == []
    table.select_page_button.click()
    assert browser.selected_series_ids == [ids[f"desc-{n:02d}"] for n in range(1, 11)]


def test_tree_walks_patient_study_series(client: Any, seeded: dict[str, Any]):
    browser = Browser(client)
    tree = browser.tree
    labels = [label for label, _ in tree.patients.options]
    assert len(labels) == 3 and any(label.startswith("Beta^Bo") for label in labels)
    tree.patients.value = dict(tree.patients.options)[next(label for label in labels if label.startswith("Beta"))]
    assert len(tree.studies.options) == 2
    tree.studies.value = tree.studies.options[0][1]
    assert len(tree.series.options) == 5
    chosen = tuple(v for _, v in tree.series.options[:2])
    tree.series.value = chosen
    assert browser.selected_series_ids == list(chosen)
    assert sorted(browser.selection.series_ids) == sorted(chosen)
    descriptions = {seeded["series"][d]: d for d in seeded["series"]}
    assert all(descriptions[i] in {f"desc-{n:02d}" for n in range(11, 21)} for i in chosen)


def test_the_servers_message_shows_in_the_status_line(client: Any):
    browser = Browser(client)
    browser.table.grid.sort_column = "NoSuchAttribute"
    browser.table.reload()
    assert browser.status.level == "error"
    assert "NoSuchAttribute" in browser.status.message
    assert "NoSuchAttribute" in browser.status.value


def test_a_viewer_follows_the_selection(client: Any, seeded: dict[str, Any]):
    viewer = Viewer(client)
    browser = Browser(client, viewer=viewer)
    assert viewer in browser.children
    series_id = seeded["series"]["desc-03"]
    browser.table.grid.checkboxes[series_id].value = True
    assert browser.status.level != "error", browser.status.message
    assert viewer.wait(30)
    assert (viewer.series_id, viewer.n_slices, viewer.error) == (series_id, 1, "")
