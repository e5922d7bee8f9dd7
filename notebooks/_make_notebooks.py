"""Writes the tutorial and dashboard notebooks of this folder (``python notebooks/_make_notebooks.py``).

The notebooks are the product; this script only keeps them consistent (same first cells, no outputs,
same kernel). Edit the cells here and run it again; tests/e2e/test_notebooks.py executes every
``.ipynb`` under notebooks/ against a real node.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

CONNECT = """\
import slicebox_lab

sbx = slicebox_lab.connect()  # the node of this Jupyter server (or $SLICEBOX_URL / $SLICEBOX_TOKEN)
sbx.health()"""

ENSURE_SAMPLE = """\
import tempfile

from slicebox_lab.sample import make_sample_files

# the synthetic sample patients (made here, no download); uploading them again replaces, never duplicates
sample_files = make_sample_files(tempfile.mkdtemp(prefix="sample-dicom-"))
sbx.upload(sample_files, progress=False)"""


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip("\n"))


def code(text: str, tags: list[str] | None = None) -> nbformat.NotebookNode:
    cell = new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = tags
    return cell


TUTORIALS: dict[str, list[nbformat.NotebookNode]] = {}
DASHBOARDS: dict[str, list[nbformat.NotebookNode]] = {}

TUTORIALS["01-getting-started"] = [
    md("""
# 1 · Getting started: upload, browse, query, view

This Jupyter server is a DICOM node. A notebook talks to it with `slicebox_lab.connect()`: every call
goes over the node's REST API (`slicebox/api/`), and listings come back as pandas DataFrames.
"""),
    code(CONNECT),
    md("""
## Upload

`slicebox_lab.sample` makes synthetic patients with pydicom (a CT chest and an MR head of *Andersson^Anna*,
a CT abdomen of *Berg^Erik*, a multi-frame and an RGB secondary capture of *Lindqvist^Maria*).
`upload` takes a file, a folder or a list of files; what the node refuses is listed with its reason.
"""),
    code("""
import tempfile

from slicebox_lab.sample import make_sample_files

files = make_sample_files(tempfile.mkdtemp(prefix="sample-dicom-"))
summary = sbx.upload(files, progress=False)
summary"""),
    md("## Browse: patients, studies, series"),
    code("""
patients = sbx.patients()
patients"""),
    code("""
anna = patients[patients.PatientName == "Andersson^Anna"].iloc[0]
sbx.studies(patient_id=int(anna.id))"""),
    md("""
## Query as a DataFrame

`flat_series` gives one row per series with its study and patient. Filter it with pandas, or let the
node do the query with DICOM keywords (`Modality="CT"`).
"""),
    code("""
series = sbx.flat_series()
series[["series_id", "PatientName", "StudyDate", "Modality", "SeriesDescription", "source"]]"""),
    code("""
ct = sbx.flat_series(Modality="CT")
ct[["series_id", "PatientName", "SeriesDescription"]]"""),
    md("## View\n\nA PNG rendered by the node (with a window), and the widgets: a browser with a viewer."),
    code("""
from IPython.display import Image

ct_series_id = int(ct.iloc[0].series_id)
images = sbx.images(series_id=ct_series_id)
Image(sbx.png(int(images.iloc[len(images) // 2].id), window=400, level=40))"""),
    code("""
from slicebox_lab.ui import Browser, Viewer

viewer = Viewer(sbx, series_id=ct_series_id)
browser = Browser(sbx, viewer=viewer)  # tick a series in the table: the viewer below shows it
browser"""),
    md("""
## Pixels as numpy

`to_numpy()` gives the series as a volume sorted along the slice normal, rescaled to HU for CT.
"""),
    code("""
from slicebox_lab.client import plots

volume = sbx.series_obj(ct_series_id).to_numpy()
print(volume.array.shape, volume.spacing, volume.array.min(), volume.array.max())
plots.montage(volume, columns=8, window=(40, 400));"""),
]

TUTORIALS["02-two-nodes-and-sending"] = [
    md("""
# 2 · Two nodes: send de-identified images to a partner

Two nodes connect through a **box**. One node creates the connection and hands its URL to the other,
which connects with it; images sent through the box are de-identified on the way out and verified on
arrival.

The partner here is a second `jupyter slicebox` started by this notebook on a free loopback port
(set `SLICEBOX_PARTNER_URL` and `SLICEBOX_PARTNER_TOKEN` to use a real partner instead).
"""),
    code(CONNECT),
    code(ENSURE_SAMPLE),
    code("""
import os

from slicebox_lab.sample import DemoNode

if os.environ.get("SLICEBOX_PARTNER_URL"):
    partner_node = None
    partner = slicebox_lab.connect(os.environ["SLICEBOX_PARTNER_URL"], token=os.environ.get("SLICEBOX_PARTNER_TOKEN"))
else:
    partner_node = DemoNode.start()  # its own data folder, its own token
    partner = partner_node.client()
partner.url"""),
    md("""
## Connect

The partner (the university) creates a box for us; the answer holds the URL to hand over (a secret:
it works as a password). We connect with it: our node pushes to the partner and polls it.
"""),
    code("""
def delete_boxes(client, name):
    \"\"\"Boxes left by an earlier run of this notebook.\"\"\"
    boxes = client.boxes()
    for box_id in boxes.loc[boxes["name"] == name, "id"] if len(boxes) else []:
        client.delete_box(int(box_id))


delete_boxes(partner, "hospital")
delete_boxes(sbx, "university")
connection = partner.create_box_connection("hospital")
box = sbx.connect_box("university", connection["base_url"])
sbx.boxes()"""),
    md("""
## Review, then send

Before anything leaves, the review lists what the de-identification profile does to every attribute.
"""),
    code("""
selection = sbx.select(sbx.flat_series(PatientName="Berg^Erik"))
report = selection.review()
report.attrs["summary"]["outcomes"]"""),
    code("""
# everything that does not leave as it is, and why
report.loc[report.outcome != "kept", ["keyword", "outcome", "decided_by", "risk"]].head(25)"""),
    code("""
transfer = selection.send(box="university", wait=True, progress=False, timeout=300)
transfer.transaction["status"], transfer.transaction["sent_image_count"]"""),
    md("## What arrived at the partner\n\nNames, IDs and UIDs are pseudonyms; the key to them stays with us."),
    code("""
partner.transactions("incoming")"""),
    code("""
arrived = partner.flat_series()
arrived[["PatientName", "PatientID", "StudyDate", "Modality", "SeriesDescription", "source"]]"""),
    code("""
keys = sbx.keys()
keys.tail(3)"""),
    md("## Clean up"),
    code("""
delete_boxes(sbx, "university")
delete_boxes(partner, "hospital")
if partner_node is not None:
    partner_node.stop()"""),
]

TUTORIALS["03-pacs-query-retrieve"] = [
    md("""
# 3 · PACS query and retrieve (C-FIND, C-MOVE)

A node speaks DICOM: its SCPs listen for C-STORE, C-FIND, C-MOVE; remote nodes (SCUs) are the PACS it
queries. The "PACS" here is a second `jupyter slicebox` started by this notebook with the sample data,
listening on a DICOM port; any PACS works the same way.
"""),
    code(CONNECT),
    code(ENSURE_SAMPLE),
    code("""
from slicebox_lab.sample import DemoNode

pacs_node = DemoNode.start()
pacs = pacs_node.client()
pacs.upload(sample_files, progress=False)"""),
    md("""
## Wire the two DICOM nodes

The PACS listens (SCP `PACS`); our node listens too (SCP `SLICEBOX_TUT`), to receive what the PACS
moves to it. Each one knows the other as a remote node. Port 0 lets the node pick a free port.
"""),
    code("""
def delete_named(listing, delete, name):
    \"\"\"Entries left by an earlier run of this notebook.\"\"\"
    table = listing()
    for entry_id in table.loc[table["name"] == name, "id"] if len(table) else []:
        delete(int(entry_id))


delete_named(sbx.scus, sbx.delete_scu, "tutorial-pacs")
delete_named(sbx.scps, sbx.delete_scp, "tutorial-store")
pacs_scp = pacs.add_scp("pacs", "PACS", 0, host="127.0.0.1")
our_scp = sbx.add_scp("tutorial-store", "SLICEBOX_TUT", 0, host="127.0.0.1")
pacs.add_scu("slicebox", "SLICEBOX_TUT", "127.0.0.1", our_scp["port"])
sbx.add_scu("tutorial-pacs", "PACS", "127.0.0.1", pacs_scp["port"])
sbx.echo_scu("tutorial-pacs")"""),
    md("## C-FIND: what does the PACS have?"),
    code("""
studies = sbx.query_scu(
    "tutorial-pacs", "STUDY",
    PatientName="*", PatientID="", StudyInstanceUID="", StudyDate="", StudyDescription="",
)
studies"""),
    code("""
erik_study = studies[studies.PatientName == "Berg^Erik"].iloc[0].StudyInstanceUID
sbx.query_scu(
    "tutorial-pacs", "SERIES",
    StudyInstanceUID=erik_study, SeriesInstanceUID="", Modality="", SeriesDescription="",
)"""),
    md("""
## C-MOVE: bring a study here

Our node has *Berg^Erik* from the sample upload; delete it here first, to watch it come back.
"""),
    code("""
local = sbx.flat_series(PatientName="Berg^Erik")
if len(local):
    sbx.select(local).delete()
job = sbx.retrieve_scu("tutorial-pacs", "STUDY", {"StudyInstanceUID": erik_study}, destination_scp_id=our_scp["id"])
sbx.wait_job(int(job["id"]), progress=False, timeout=300)"""),
    code("""
back = sbx.flat_series(PatientName="Berg^Erik")
back[["PatientName", "SeriesDescription", "Modality", "source"]]"""),
    md("## Clean up"),
    code("""
delete_named(sbx.scus, sbx.delete_scu, "tutorial-pacs")
delete_named(sbx.scps, sbx.delete_scp, "tutorial-store")
pacs_node.stop()"""),
]

TUTORIALS["04-deidentification-options-and-keys"] = [
    md("""
# 4 · De-identification: profiles, options and keys

Images leave a node de-identified by the DICOM Basic Application Level Confidentiality Profile
(PS3.15 Annex E), plus the options you choose. Anonymous UIDs, pseudonyms and date shifts are derived
from the node's secret: the same image always gives the same anonymous values. Every de-identification
that is stored or sent records a **key**, the way back to the real patient, which never leaves the node.
"""),
    code(CONNECT),
    code(ENSURE_SAMPLE),
    code("""
import pandas as pd

pd.DataFrame(sbx.anonymization_options())[["name", "title"]]"""),
    md("## One image, three ways"),
    code("""
import io

import pydicom

anna_ct = sbx.flat_series(PatientName="Andersson^Anna", Modality="CT")
image_id = sbx.select(anna_ct).image_ids()[0]


def read(data):
    return pydicom.dcmread(io.BytesIO(data))


versions = {
    "original": read(sbx.image_bytes(image_id)),
    "basic profile": read(sbx.anonymized_bytes(image_id)),
    "+ dates, patient characteristics": read(
        sbx.anonymized_bytes(image_id, ["RETAIN_LONGITUDINAL_FULL_DATES", "RETAIN_PATIENT_CHARACTERISTICS"])
    ),
}
keywords = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAddress", "StudyDate",
            "AccessionNumber", "InstitutionName", "ReferringPhysicianName", "StudyInstanceUID",
            "PatientIdentityRemoved"]
pd.DataFrame({name: [str(ds.get(k, "—")) for k in keywords] for name, ds in versions.items()}, index=keywords)"""),
    md("""
## Review a selection before sending

The report lists every attribute path of the selection and what the profile does to it, with the
residual risk (free text kept, private attributes, burned-in pixels).
"""),
    code("""
report = sbx.select(anna_ct).review(["RETAIN_PATIENT_CHARACTERISTICS"])
report.loc[report.risk.astype(bool) | (report.outcome != "kept"), ["path", "outcome", "decided_by", "risk"]]"""),
    code("""
report.attrs["summary"]"""),
    md("""
## Keys

Anonymizing in place (or sending through a box) records a key: real and anonymous identities side by
side. Here Lindqvist^Maria's secondary captures are anonymized in place.

Secondary captures, ultrasound and other captured images often show names, IDs and dates in their
pixels, and their `BurnedInAnnotation` flag is absent or wrong as often as not, so the node refuses to
let them out de-identified unless a pixel mask covers the text or the profile accepts the pixels as
they are (`"burnedInAnnotation": "keep"`). These sample captures hold no text (we drew them), so we
accept their pixels.
"""),
    code("""
maria = sbx.select(sbx.flat_series(PatientName="Lindqvist^Maria"))
job = maria.anonymize({"burnedInAnnotation": "keep"}, wait=True, progress=False, timeout=300)
job["state"], job.get("counts")"""),
    code("""
keys = sbx.keys(filter="Lindqvist")
keys"""),
    code("""
sbx.key_values(int(keys.iloc[0].id))"""),
    code("""
print(sbx.export_keys_csv()[:600])"""),
    md("Put the original sample images back (the anonymized copies stay, under their pseudonym):"),
    code("""
sbx.upload([f for f in sample_files if "lindqvist" in str(f)], progress=False)"""),
]

TUTORIALS["05-building-a-training-set"] = [
    md("""
# 5 · Building a training set: series types, tags, `to_numpy`

Series **types** are rules the node applies to every series (e.g. *CT chest*: Modality CT and
BodyPartExamined CHEST); **tags** are free-form labels you put on series. Both filter every listing.
Then `to_numpy` turns the chosen series into arrays.
"""),
    code(CONNECT),
    code(ENSURE_SAMPLE),
    md("## A series type, by rule"),
    code("""
import time

types = sbx.series_types()
for type_id in types.loc[types["name"] == "CT chest/abdomen", "id"] if len(types) else []:
    sbx.delete_series_type(int(type_id))
ct_body = sbx.add_series_type("CT chest/abdomen")
sbx.add_series_type_rule(ct_body["id"], [{"tag": "Modality", "values": ["CT"]},
                                        {"tag": "BodyPartExamined", "values": ["CHEST", "ABDOMEN"]}])
deadline = time.monotonic() + 120  # the node re-classifies every series in the background
while len(sbx.flat_series(types="CT chest/abdomen")) < 2 and time.monotonic() < deadline:
    time.sleep(0.5)
sbx.flat_series(types="CT chest/abdomen")[["series_id", "PatientName", "SeriesDescription", "series_types"]]"""),
    md("## Tags: pick what goes into the training set"),
    code("""
chosen = sbx.select(sbx.flat_series(types="CT chest/abdomen"))
chosen.tag("training-set")
sbx.flat_series(tags="training-set")[["series_id", "PatientName", "SeriesDescription", "tags"]]"""),
    md("## Arrays"),
    code("""
import numpy as np

volumes = chosen.to_numpy()
for volume in volumes:
    print(volume.array.shape, "spacing (z, y, x) mm:", volume.spacing)"""),
    code("""
from slicebox_lab.client import plots

plots.histogram(volumes[0], bins=200);"""),
    md("""
Sample a fixed number of slices from each volume into one array, with the series id beside each
slice (to join your own labels on), and save it for training.
"""),
    code("""
import tempfile
from pathlib import Path

slices, labels = [], []
for volume, series_id in zip(volumes, chosen.series_ids, strict=True):
    picks = np.linspace(0, volume.array.shape[0] - 1, 8).astype(int)
    slices.append(volume.array[picks])
    labels += [series_id] * len(picks)
x = np.concatenate(slices)
y = np.array(labels)
out = Path(tempfile.mkdtemp()) / "training-set.npz"
np.savez_compressed(out, x=x, y=y)
x.shape, y.shape, out.stat().st_size"""),
    code("""
plots.montage(x, columns=8, window=(40, 400));"""),
    md("## Clean up"),
    code("""
chosen.untag("training-set")
sbx.delete_series_type(int(ct_body["id"]))"""),
]

TUTORIALS["06-writing-an-app"] = [
    md("""
# 6 · Writing an app: your code on every series, results back as DICOM

An *app* is a Python function (or a notebook) that the node runs on series: on demand, on a cohort, or
by itself on every new series of a type once it is complete. It gets the series as files, a volume and a
DataFrame, and hands back plain values, DICOM datasets (a Segmentation, a Structured Report, ...) or both;
DICOM results are stored in the same study, with the app as their source, and are classified and
forwarded like any other image.

**An app is code that runs with the server's rights**: it can read every image and file the server can.
Only administrators register apps (a USER lists and runs them); read an app before you register it.
"""),
    code(CONNECT),
    code(ENSURE_SAMPLE),
    md("""
## 1. Write a function

`inputs` is an `AppInputs`: `inputs.volume()` (the series as a numpy volume in Hounsfield units, sorted
along the slice normal), `inputs.series` (a DataFrame of its attributes), `inputs.datasets()` (pydicom),
`inputs.files` (paths), `inputs.log` (what it logs is kept with the run). Parameters are keyword arguments
with defaults. Import what the function needs inside it: the node runs it in a process of its own.
"""),
    code("""
def lung_share(inputs, lung_hu=-400.0):
    \"\"\"The share of the body's voxels darker than lung_hu: a plain value, no DICOM.\"\"\"
    volume = inputs.volume()
    body = volume.array > -500
    lungs = (volume.array > -950) & (volume.array < lung_hu)
    inputs.log.info("%d slices of %s", volume.array.shape[0], inputs.series.PatientName[0])
    return {"slices": int(volume.array.shape[0]), "lung_share": round(float(lungs.sum() / max(body.sum(), 1)), 3)}"""),
    md("""
## 2. Register it

`register_app` sends the function's source to the node. `series_types=["CT"]` would run it by itself on
every CT series once no image has arrived for `stable_seconds` (30 s by default, a trait of the node);
without it, the app runs when asked.
"""),
    code("""
for name in ("lung-share", "body-and-lungs"):  # this tutorial run again: register afresh
    if name in set(sbx.apps()["name"]):
        sbx.delete_app(name)
sbx.register_app("lung-share", lung_share, version="1", parameters={"lung_hu": -400.0})
sbx.apps()[["name", "version", "kind", "level", "enabled", "parameters"]]"""),
    md("## 3. Send it a series, see the result"),
    code("""
ct = sbx.flat_series(PatientName="Andersson^Anna", Modality="CT")
ct_series_id = int(ct.series_id[0])
job = sbx.run_app("lung-share", [ct_series_id], wait=True, progress=False)
run = sbx.app_run(job["result"]["run_ids"][-1])  # the job's run on the series
job["state"], run["values"]"""),
    md(
        "Every run is kept with its provenance: app and version, parameters, the series and SOP instances it ran on, "
        "start, end, state, log, outputs."
    ),
    code("""
runs = sbx.app_runs("lung-share")
print(sbx.app_run(int(runs.id[0]))["log"])
runs[["app", "version", "subject_id", "state", "started", "finished", "values"]]"""),
    md("""
## 4. A DICOM result: the example app

`slicebox_lab.apps.examples.body_and_lungs` finds the body and the lungs of a CT by thresholds and returns
a DICOM Segmentation made with highdicom. Registered by its name (`module:function`), it runs like the
function above; its SEG lands in the CT's study with source `app:body-and-lungs`.
"""),
    code("""
sbx.register_app("body-and-lungs", "slicebox_lab.apps.examples.body_and_lungs:segment", version="1.0")
job = sbx.run_app("body-and-lungs", [ct_series_id], wait=True, progress=False)
(output,) = sbx.app_run(job["result"]["run_ids"][-1])["outputs"]
seg_series_id = output["series_id"]
sbx.source_of(seg_series_id)"""),
    md("The Viewer draws the segmentation over the CT (tick *segmentation* to hide it, drag *opacity*):"),
    code("""
from slicebox_lab.ui import Viewer

Viewer(sbx, series_id=ct_series_id)"""),
    md("""
## 5. A cohort, and what else an app can be

`run_app` takes a list of series, a DataFrame of series or a flat-series query: one job, with progress per
series, that can be cancelled and resumed (series already done are not run again).

An app can also be a notebook: the node runs it headless with papermill (the cell tagged `parameters` gets
`files`, `series`, `output_dir` and the app's parameters; DICOM files left in `output_dir` are the results),
and keeps the executed notebook with the run (`sbx.app_run_notebook(run_id)`). The example ships as one:
`sbx.register_app("body-and-lungs-notebook", notebook="body_and_lungs.ipynb", series_types=["CT"])`.
The *App runs* dashboard lists the runs and opens their results.
"""),
    code("""
cohort = sbx.flat_series(Modality="CT")
job = sbx.run_app("lung-share", cohort, wait=True, progress=False)
job["progress_done"], job["progress_total"], job["state"]"""),
    md("## Clean up (the runs and the segmentation stay, with the apps' names and versions)"),
    code("""
sbx.delete_app("lung-share")
sbx.delete_app("body-and-lungs")"""),
]

# ---------------------------------------------------------------------------------------- dashboards

DASHBOARD_CONNECT = """\
import ipywidgets as widgets
from IPython.display import display

import slicebox_lab
from slicebox_lab.client import ClientError


def problem(message):
    \"\"\"A clear message on the page instead of a traceback.\"\"\"
    return widgets.HTML(f'<div class="slicebox-problem" style="color:#c62828;font-size:1.1em">{message}</div>')


try:
    sbx = slicebox_lab.connect()
except ClientError as e:
    sbx = None
    display(problem(f"The node cannot be reached: {e.message if hasattr(e, 'message') else e}"))"""

DASHBOARDS["send-to-partner"] = [
    md("""
# Send to partner

Find the patient's study, look at it, review what de-identification will do, and send it to the
partner. The review also shows the text the node finds burned into the pixels (ultrasound, captures,
documents), masked, with a thumbnail; choose under *Text in pixels* whether such images are refused or
leave with that text blacked out. The progress bar follows the transfer until the partner has every
image.
"""),
    code(DASHBOARD_CONNECT),
    code("""
if sbx is not None:
    from slicebox_lab.ui import Browser, Sender, Viewer

    try:
        boxes = sbx.boxes()
    except ClientError as e:
        boxes = None
        display(problem(f"Boxes cannot be listed: {e.message}"))
    if boxes is not None and not len(boxes):
        display(problem("No partner is connected to this node yet: an administrator adds one (box) first."))
    elif boxes is not None and "online" in boxes and not boxes["online"].any():
        display(problem("No partner is online right now: sending waits until the partner answers."))
    viewer = Viewer(sbx)
    browser = Browser(sbx, viewer=viewer)
    sender = Sender(sbx, browser)
    display(widgets.VBox([browser, sender]))  # the browser shows the viewer below its table"""),
]

DASHBOARDS["incoming"] = [
    md("""
# Incoming

What partners sent to this node: the transfers received, and the series here by where they came from
and by type.
"""),
    code(DASHBOARD_CONNECT),
    code("""
from slicebox_lab.ui.present import table

status = widgets.HTML()
transactions = widgets.HTML()
by_source = widgets.HTML()
by_type = widgets.HTML()
refresh = widgets.Button(description="Refresh", icon="refresh")


def show(_=None):
    if sbx is None:
        return
    try:
        incoming = sbx.transactions("incoming")
        series = sbx.flat_series()
    except ClientError as e:
        status.value = problem(f"The node answered: {e.message}").value
        return
    transfers = "1 transfer received" if len(incoming) == 1 else f"{len(incoming)} transfers received"
    status.value = f"<b>{transfers}</b>, {len(series)} series on this node"
    columns = ["box_name", "status", "received_image_count", "added_image_count", "total_image_count", "created",
               "updated"]
    transactions.value = "<h3>Transfers received</h3>" + table(
        incoming, columns, empty="Nothing has arrived from a partner yet.")
    if len(series):
        sources = series.groupby("source").size().rename("series").reset_index()
        types = series.explode("series_types").groupby("series_types").size().rename("series").reset_index()
    else:
        sources = types = series.iloc[:0]
    by_source.value = "<h3>Series by where they came from</h3>" + table(
        sources, empty="No series on this node yet.")
    by_type.value = "<h3>Series by type</h3>" + table(
        types, labels={"series_types": "Series type"},
        empty="No series type is defined, or none matches yet.")


refresh.on_click(show)
show()
by_source.layout.margin = "0 48px 0 0"  # apart from the table beside it (ipywidgets' Layout has no gap)
side_by_side = widgets.HBox([by_source, by_type], layout=widgets.Layout(flex_flow="row wrap"))
status.layout.margin = "0 0 0 12px"
display(widgets.VBox([widgets.HBox([refresh, status], layout=widgets.Layout(align_items="center")),
                      transactions, side_by_side]))"""),
]

DASHBOARDS["node-status"] = [
    md("""
# Node status

Whether the node is up, its DICOM listeners, folder watches, partners (boxes), jobs and recent log.
"""),
    code(DASHBOARD_CONNECT),
    code("""
from slicebox_lab.ui.present import chip, table

# what each section lists, the columns a person reads, and what it says when there is nothing
sections = {
    "DICOM listeners (SCPs)": (lambda: sbx.scps(), ["name", "ae_title", "host", "port", "running"],
                               "No DICOM listener: an administrator adds one for a PACS to send here."),
    "Folder watches": (lambda: sbx.watches(), ["name", "path", "created"], "No folder is watched."),
    "Partners (boxes)": (lambda: sbx.boxes(), ["name", "send_method", "online", "last_contact", "last_error"],
                         "No partner is connected to this node."),
    "Jobs": (lambda: sbx.jobs(limit=20), ["kind", "description", "state", "progress_done", "progress_total",
                                          "error", "finished"], "No job has run yet."),
    "Recent log": (lambda: sbx.log(limit=20), ["created", "entry_type", "subject", "message"], "The log is empty."),
}
panels = {title: widgets.HTML() for title in sections}
health = widgets.HTML()
refresh = widgets.Button(description="Refresh", icon="refresh")


def show(_=None):
    if sbx is None:
        return
    try:
        info = sbx.information()
        counts = info.get("counts", {})
        health.value = (f"{chip('Node up', 'green')} &nbsp;{counts.get('patients', 0)} patients, "
                        f"{counts.get('series', 0)} series, {counts.get('images', 0)} images "
                        f"<span style='color:#52606d'>· slicebox_lab {info.get('version', '')}</span>")
    except ClientError as e:
        health.value = problem(f"The node cannot be reached: {e.message}").value
        return
    for title, (fetch, columns, empty) in sections.items():
        try:
            body = table(fetch(), columns, max_rows=20, empty=empty)
        except ClientError as e:  # e.g. a USER may not list everything: say so, show the rest
            body = problem(e.message).value
        panels[title].value = f"<h3>{title}</h3>{body}"


refresh.on_click(show)
show()
health.layout.margin = "0 0 0 12px"
display(widgets.VBox([widgets.HBox([refresh, health], layout=widgets.Layout(align_items="center")),
                      *panels.values()]))"""),
]

DASHBOARDS["viewer"] = [
    md("# Viewer\n\nFind a patient's series and look at it: scroll through the slices, window, zoom."),
    code(DASHBOARD_CONNECT),
    code("""
if sbx is not None:
    from slicebox_lab.ui import Browser, Viewer

    browser = Browser(sbx, viewer=Viewer(sbx))  # the viewer shows the first checked series
    display(browser)"""),
]


DASHBOARDS["app-runs"] = [
    md("# App runs\n\nWhat the node's apps ran, on which patient's series, how it went, and their results."),
    code(DASHBOARD_CONNECT),
    code("""
import pandas as pd

from slicebox_lab.ui import Viewer
from slicebox_lab.ui.present import human_time, table

status = widgets.HTML()
runs_panel = widgets.HTML()
refresh = widgets.Button(description="Refresh", icon="refresh")
results = widgets.Dropdown(description="Result", options=[], layout=widgets.Layout(width="38em"))
open_result = widgets.Button(description="Open the result", icon="eye", disabled=True)
detail = widgets.HTML()
viewer = Viewer(sbx) if sbx is not None else None
if viewer is not None:
    viewer.layout.display = "none"  # until a result is opened


def took(run):
    if pd.isna(run["started"]) or pd.isna(run["finished"]) or not run["finished"]:
        return ""
    seconds = (pd.Timestamp(run["finished"]) - pd.Timestamp(run["started"])).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def result_of(run):
    outputs = run["outputs"] or []
    if outputs:
        return f"{len(outputs)} DICOM object{'s' if len(outputs) != 1 else ''} stored"
    values = run["values"] or {}
    if values:
        return ", ".join(f"{str(k).replace('_', ' ')}: {v}" for k, v in values.items())
    return str(run["error"]).splitlines()[0][:200] if isinstance(run["error"], str) and run["error"] else ""


def show(_=None):
    if sbx is None:
        return
    try:
        runs = sbx.app_runs(limit=100)
        series = sbx.flat_series(details=False)
    except ClientError as e:
        status.value = problem(f"The node answered: {e.message}").value
        return
    names = {int(r.series_id): f"{r.PatientName} · {r.Modality} {r.SeriesDescription or ''}".strip()
             for r in series.itertuples()}
    rows, choices = [], []
    for run in runs.to_dict("records"):
        on = names.get(int(run["subject_id"]), f"series {run['subject_id']} (deleted)") \\
            if run["level"] == "series" else f"study {run['subject_id']}"
        rows.append({"app": f"{run['app']} {run['version']}", "on": on, "state": run["state"],
                     "trigger": "new series" if run["trigger"] == "stable" else run["trigger"],
                     "started": run["started"], "took": took(run), "result": result_of(run)})
        for output in run["outputs"] or []:
            if int(output["series_id"]) in names:
                choices.append((f"{run['app']} on {on} · {human_time(run['started'])}", int(output["series_id"])))
    count = "1 run" if len(runs) == 1 else f"{len(runs)} runs"
    failed = int((runs["state"] == "FAILED").sum()) if len(runs) else 0
    status.value = f"<b>{count}</b>" + (f", {failed} failed" if failed else "")
    runs_panel.value = "<h3>Runs, newest first</h3>" + table(
        rows, ["app", "on", "state", "trigger", "started", "took", "result"],
        labels={"app": "App", "on": "Ran on", "trigger": "Why", "took": "Took", "result": "Result"},
        empty="No app has run on this node yet. An administrator registers one "
              "(tutorial 06, writing an app); its runs appear here.")
    results.options = choices
    if choices:
        results.value = choices[0][1]  # the newest result is chosen
    open_result.disabled = not choices
    if not choices:
        detail.value = "<p class='sbx-empty' style='color:#52606d'>No stored result to open yet.</p>"
    else:
        detail.value = ""


def show_result(_=None):
    if results.value is not None:
        viewer.layout.display = None
        viewer.show(results.value)  # a segmentation: its series, with the segmentation drawn over it


refresh.on_click(show)
open_result.on_click(show_result)
show()
if sbx is not None:
    status.layout.margin = "0 0 0 12px"  # ipywidgets' Layout has no gap
    display(widgets.VBox([widgets.HBox([refresh, status], layout=widgets.Layout(align_items="center")),
                          runs_panel, widgets.HBox([results, open_result]), detail, viewer]))"""),
]


# ---------------------------------------------------------------------------------------- example app

#: the notebook version of the example app (slicebox_lab/apps/examples/body_and_lungs.py), shipped in the package
EXAMPLE_APP = [
    md("""
# Body and lungs (notebook app)

The node runs this notebook headless (papermill) on each CT series it is registered for, with the cell
tagged `parameters` replaced: `files` (the series' DICOM files), `series` (its attributes), `output_dir`
(where DICOM results go), `app_name`, `app_version`, and the app's own parameters. The executed notebook,
with its figures, is kept with the run.
"""),
    code(
        """
# parameters (replaced by the node for each run)
files = []
series = []
output_dir = "."
app_name = "body-and-lungs-notebook"
app_version = "1"
body_hu = -500.0
lung_hu = -400.0""",
        tags=["parameters"],
    ),
    code("""
import json
from pathlib import Path

import numpy as np
import pydicom

from slicebox_lab.apps.examples.body_and_lungs import masks

images = [pydicom.dcmread(f) for f in files]
normal = np.cross(*np.array(images[0].ImageOrientationPatient, dtype=float).reshape(2, 3))
images.sort(key=lambda ds: float(np.dot(np.array(ds.ImagePositionPatient, dtype=float), normal)))
for ds in images:  # type 2 attributes a Segmentation copies: empty when the CT lacks them
    for keyword in ("StudyTime", "StudyDate", "ReferringPhysicianName", "AccessionNumber", "StudyID"):
        if keyword not in ds:
            setattr(ds, keyword, "")
hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in images])
body, lungs = masks(hu, body_hu, lung_hu)
print(f"{len(images)} slices of {series[0]['PatientName'] if series else '?'}: "
      f"body {int(body.sum())} voxels, lungs {int(lungs.sum())} voxels")"""),
    code("""
import matplotlib.pyplot as plt

middle = len(images) // 2
plt.imshow(hu[middle], cmap="gray", vmin=-1000, vmax=400)
plt.contour(body[middle], colors="yellow", linewidths=0.8)
plt.contour(lungs[middle], colors="cyan", linewidths=0.8)
plt.title("body (yellow) and lungs (cyan), middle slice")
plt.axis("off");"""),
    code("""
import hashlib

import highdicom as hd
from pydicom.sr.codedict import codes


def uid(*parts):
    # the same run again gives the same UIDs: its result replaces the earlier one
    text = "|".join([app_name, app_version, *(s["SeriesInstanceUID"] for s in series), *map(str, parts)])
    return "2.25." + str(int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big"))


algorithm = hd.AlgorithmIdentificationSequence(name=app_name, version=app_version,
                                               family=codes.cid7162.ArtificialIntelligence)
segments = [
    hd.seg.SegmentDescription(
        segment_number=n, segment_label=label, segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm)
    for n, label, kind in ((1, "Body", codes.SCT.EntireBody), (2, "Lungs", codes.SCT.Lung))
]
seg = hd.seg.Segmentation(
    source_images=images, pixel_array=np.stack([body, lungs], axis=-1).astype(np.uint8),
    segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=segments,
    series_instance_uid=uid("series"), series_number=901, sop_instance_uid=uid("instance"), instance_number=1,
    manufacturer="slicebox_lab", manufacturer_model_name=app_name, software_versions=app_version,
    device_serial_number="1", series_description=f"{app_name} {app_version}: body and lungs",
)
seg.save_as(Path(output_dir) / "body-and-lungs.dcm")
values = {"body_voxels": int(body.sum()), "lungs_voxels": int(lungs.sum())}
(Path(output_dir) / "values.json").write_text(json.dumps(values))"""),
]


def write(folder: Path, name: str, cells: list[nbformat.NotebookNode]) -> Path:
    """Write one notebook; its cells' ids follow from its name and their place, so running this again
    changes no file when nothing changed (nbformat makes random ones)."""
    for number, cell in enumerate(cells):
        cell.id = hashlib.sha256(f"{name}/{number}".encode()).hexdigest()[:8]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path


def main() -> None:
    for name, cells in TUTORIALS.items():
        print(write(HERE, name, cells))
    for name, cells in DASHBOARDS.items():
        print(write(HERE / "dashboards", name, cells))
    print(write(HERE.parent / "slicebox_lab" / "apps" / "examples", "body_and_lungs", EXAMPLE_APP))


if __name__ == "__main__":
    main()
