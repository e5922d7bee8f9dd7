"""DICOM without a server: reading and validation, indexed attributes, listing, rendering, dictionary.

Nothing here imports tornado, jupyter_server or ipywidgets (ARCHITECTURE.md rule 2);
every function is blocking and runs in a worker thread when called from a handler.
"""

from __future__ import annotations

from slicebox_lab.dicom.dictionary import keyword, keywords, tag, vm, vr
from slicebox_lab.dicom.listing import attribute_listing
from slicebox_lab.dicom.reading import (
    ACCEPTED_TRANSFER_SYNTAXES,
    Header,
    ParsedDicom,
    TrailingPixels,
    checked_header,
    extract_attributes,
    parse_header,
    parse_part10,
    read_until_pixels,
    transfer_syntax_of,
)
from slicebox_lab.dicom.render import image_information, render_png, verify_number_of_frames, verify_pixel_data
from slicebox_lab.dicom.writing import MetaValues, write_part10, write_part10_and_meta

__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "Header",
    "MetaValues",
    "ParsedDicom",
    "TrailingPixels",
    "attribute_listing",
    "checked_header",
    "extract_attributes",
    "image_information",
    "keyword",
    "keywords",
    "parse_header",
    "parse_part10",
    "read_until_pixels",
    "render_png",
    "tag",
    "transfer_syntax_of",
    "verify_number_of_frames",
    "verify_pixel_data",
    "vm",
    "vr",
    "write_part10",
    "write_part10_and_meta",
]
