"""Text drawn over pixel noise: the frame with the noise lifted out, for :mod:`.ocr` to read (issue 16).

Dark text over a panel of full-range grey noise (a screenshot's embedded image) defeats contrast: the
noise holds as many dark pixels as the text, and a median or a threshold blends them into one grain.
What tells them apart is flatness. A glyph's stroke is a few pixels of *one* value (the ink, where it
covers the pixel wholly), while in such noise a pixel almost never has a neighbour of the same value
(1 in 256 per neighbour for uniform noise). So, where the ground is noise (:func:`noise_region`:
most pixels differ from all eight neighbours and their 3x3 range is wide), the pixels that equal none
of their neighbours are set to the light (or dark) end, and what is left, the flat strokes, reads as
text on a clean ground (:func:`lifted_views`). Outside the noise and its surroundings the views are
blank, so no line is read twice; a frame without such noise (ultrasound speckle, clean screens,
documents, captures with milder noise) costs one pass of neighbour comparisons and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["lifted_views", "noise_region"]

#: a noise pixel: equal to none of its eight neighbours, and their 3x3 range at least this (grey levels)
_NOISE_RANGE = 64
#: the window (pixels) over which noise pixels are counted, and the share of them that makes a noisy ground
_WINDOW, _NOISY_SHARE = 41, 0.3
#: the fewest pixels of noisy ground a frame needs before it is looked at this way
_MIN_REGION = 4000
#: how far (pixels) around the noise the views keep the frame: text that starts on the noise and ends beside it
_REACH = 48
#: the fewest flat pixels (8-connected) a piece of stroke has on the noise: fewer are the noise's own
_MIN_STROKE = 4


def _neighbours(grey: NDArray[np.uint8]) -> tuple[NDArray[np.int8], NDArray[np.int16]]:
    """Per pixel: how many of its eight neighbours have its value, and the range of its 3x3 neighbourhood."""
    values = grey.astype(np.int16)
    rows, columns = values.shape
    padded = np.pad(values, 1, mode="constant", constant_values=-1)  # the frame's edge is no neighbour
    equal = np.zeros(values.shape, dtype=np.int8)
    low, high = values.copy(), values.copy()
    for dy in range(3):
        for dx in range(3):
            if dy == 1 and dx == 1:
                continue
            shifted = padded[dy : dy + rows, dx : dx + columns]
            equal += shifted == values
            np.minimum(low, shifted, out=low)
            np.maximum(high, shifted, out=high)
    return equal, high - low


def noise_region(grey: NDArray[np.uint8]) -> tuple[NDArray[np.bool_], NDArray[np.bool_]] | None:
    """(noisy ground, noise pixels) of a frame, or None when it has no ground of wide pixel noise."""
    from scipy import ndimage

    equal, spread = _neighbours(grey)
    noise = (equal == 0) & (spread >= _NOISE_RANGE)
    if int(noise.sum()) < _MIN_REGION:
        return None
    region = ndimage.uniform_filter(noise.astype(np.float32), _WINDOW, mode="constant") >= _NOISY_SHARE
    if int(region.sum()) < _MIN_REGION:
        return None
    return region, noise & region


def lifted_views(grey: NDArray[np.float32]) -> list[tuple[NDArray[np.float32], float]] | None:
    """The frame with its noise lifted out, as (view, polarity) pairs: for dark text (noise pixels made
    white) and for bright text (made black), each blank away from the noise; None for a frame without
    a noisy ground (see the module's docstring)."""
    from scipy import ndimage

    found = noise_region(np.clip(grey, 0, 255).astype(np.uint8))
    if found is None:
        return None
    region, noise = found
    # flat specks of the noise itself (two pixels that happen to be equal) go too: strokes are longer
    kept = region & ~noise
    labels, _ = ndimage.label(kept, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())
    noise = noise | (kept & (sizes[labels] < _MIN_STROKE))
    near = ndimage.maximum_filter(region, size=2 * _REACH + 1, mode="constant")
    views: list[tuple[NDArray[np.float32], float]] = []
    for polarity, lifted in ((-1.0, 255.0), (1.0, 0.0)):
        view = np.where(near & ~noise, grey, lifted).astype(np.float32)
        views.append((view, polarity))
    return views
