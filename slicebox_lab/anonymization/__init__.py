"""De-identification (PS3.15 Annex E basic profile and options) with node-keyed pseudonyms. See ARCHITECTURE.md."""

from __future__ import annotations

from .anonymizer import anonymize, deidentification_method
from .keys import PseudonymKeys
from .pixels import PixelMask, Rectangle, load_pixel_masks
from .profile import Action, Option, Profile
from .report import Report, report_frame, review

__all__ = [
    "Action",
    "Option",
    "PixelMask",
    "Profile",
    "PseudonymKeys",
    "Rectangle",
    "Report",
    "anonymize",
    "deidentification_method",
    "load_pixel_masks",
    "report_frame",
    "review",
]
