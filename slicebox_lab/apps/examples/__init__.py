"""The example apps shipped with the node: a body and lung threshold segmentation of CT, written as a DICOM
Segmentation with highdicom, as a function (``body_and_lungs.py``) and as a notebook (``body_and_lungs.ipynb``).

Register them with ``{"function": "slicebox_lab.apps.examples.body_and_lungs:segment"}`` or
``{"notebook": "body_and_lungs.ipynb"}`` (a notebook name the node does not find is looked up here).
"""

from __future__ import annotations

from pathlib import Path

#: where the example notebook lives (in the wheel and in a checkout)
FOLDER = Path(__file__).resolve().parent
