"""matplotlib helpers for volumes in notebooks: a montage of slices and a histogram of values."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .volume import Volume

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["histogram", "montage"]


def _array(volume_or_array: Any) -> np.ndarray:
    array = volume_or_array.array if isinstance(volume_or_array, Volume) else np.asarray(volume_or_array)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3:
        raise ValueError(f"expected a volume or a 2-D/3-D array, got shape {array.shape}")
    return array


def _limits(volume_or_array: Any, array: np.ndarray, window: tuple[float, float] | None) -> tuple[float, float]:
    if window is None and isinstance(volume_or_array, Volume):
        window = volume_or_array.window
    if window is not None:
        center, width = float(window[0]), float(window[1])
        return center - width / 2, center + width / 2
    finite = array[np.isfinite(array)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)


def montage(
    volume_or_array: Any,
    *,
    columns: int | None = None,
    window: tuple[float, float] | None = None,
    ax: Axes | None = None,
    max_panels: int | None = 64,
    cmap: str = "gray",
) -> Figure:
    """Slices side by side, one panel each (at most ``max_panels``, evenly spaced), windowed with
    ``window`` (center, width), else the volume's window, else the value range. With ``ax`` the
    slices are tiled into that one axes."""
    import matplotlib.pyplot as plt

    array = _array(volume_or_array)
    n = array.shape[0]
    picks = list(range(n))
    if max_panels is not None and n > max_panels:
        picks = sorted({round(i * (n - 1) / (max_panels - 1)) for i in range(max_panels)})
    columns = columns or math.ceil(math.sqrt(len(picks)))
    rows = math.ceil(len(picks) / columns)
    vmin, vmax = _limits(volume_or_array, array, window)
    if ax is not None:
        h, w = array.shape[1:3]
        tiled = np.full((rows * h, columns * w), np.nan, dtype=np.float32)
        for k, i in enumerate(picks):
            r, c = divmod(k, columns)
            tiled[r * h : (r + 1) * h, c * w : (c + 1) * w] = array[i]
        ax.imshow(tiled, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_axis_off()
        return ax.figure  # type: ignore[return-value]
    figure, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2 * rows), squeeze=False)
    for k, a in enumerate(axes.flat):
        if k < len(picks):
            a.imshow(array[picks[k]], cmap=cmap, vmin=vmin, vmax=vmax)
            a.set_title(str(picks[k]), fontsize=8)
            a.set_axis_off()
        else:
            figure.delaxes(a)
    figure.tight_layout()
    return figure


def histogram(
    volume_or_array: Any, *, bins: int = 256, ax: Axes | None = None, range: tuple[float, float] | None = None
) -> Figure:
    """The distribution of the values (e.g. Hounsfield units) in ``bins`` bars."""
    import matplotlib.pyplot as plt

    values = _array(volume_or_array).ravel()
    values = values[np.isfinite(values)]
    if ax is None:
        figure, ax = plt.subplots(figsize=(6, 3))
    else:
        figure = ax.figure  # type: ignore[assignment]
    ax.hist(values, bins=bins, range=range, color="0.3")
    ax.set_xlabel("value")
    ax.set_ylabel("pixels")
    return figure
