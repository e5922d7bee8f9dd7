"""The Python client of a slicebox_lab node: REST over HTTP (requests), pandas DataFrames, numpy volumes.

```python
import slicebox_lab
sbx = slicebox_lab.connect()                 # the Jupyter server that started this kernel
sbx.flat_series(limit=10)                    # a DataFrame
vol = sbx.series_obj(3).to_numpy()           # a Volume: vol.array (slices, rows, cols), vol.spacing
sbx.select(sbx.flat_series(tags="study-A")).send(box="partner", wait=True)
```
Kernels never import the server's objects; everything goes through ``<base_url>slicebox/api/``.
"""

from __future__ import annotations

from .client import SliceboxClient, UploadSummary, connect
from .errors import (
    BadRequest,
    ClientError,
    Conflict,
    Forbidden,
    NodeUnreachable,
    NotFound,
    PeerError,
    Refused,
    Unauthorized,
)
from .http import discover_server
from .selection import Selection, Series, Transfer
from .volume import Volume

__all__ = [
    "BadRequest",
    "ClientError",
    "Conflict",
    "Forbidden",
    "NodeUnreachable",
    "NotFound",
    "PeerError",
    "Refused",
    "Selection",
    "Series",
    "SliceboxClient",
    "Transfer",
    "Unauthorized",
    "UploadSummary",
    "Volume",
    "connect",
    "discover_server",
]
