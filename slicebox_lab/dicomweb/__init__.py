"""DICOMweb over the node's index and storage: QIDO-RS, WADO-RS, STOW-RS (PS3.18).

Domain code only (house rule 2): the Tornado handlers in ``slicebox_lab/handlers/dicomweb.py``
parse requests, call these blocking functions through ``run_blocking`` and stream the answers.
STOW-RS stores through ``SliceboxContext.ingest`` like every other source.
"""

from __future__ import annotations

from . import dicomjson, multipart, qido, stow, wado
from .errors import NotAcceptable, UnsupportedMediaType

__all__ = ["NotAcceptable", "UnsupportedMediaType", "dicomjson", "multipart", "qido", "stow", "wado"]
