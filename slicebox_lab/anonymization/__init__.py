"""De-identification (PS3.15 Annex E basic profile and options) with node-keyed pseudonyms. See ARCHITECTURE.md."""

from __future__ import annotations

from .anonymizer import anonymize, deidentification_method
from .keys import PseudonymKeys
from .profile import Action, Option, Profile

__all__ = ["Action", "Option", "Profile", "PseudonymKeys", "anonymize", "deidentification_method"]
