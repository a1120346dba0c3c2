"""Pictures of a segmentation for people: the input in gray with outlines drawn on it.

    display_u8(page)                  input page -> uint8 gray (1st/99th percentiles -> 0/255)
    outline(mask) / outer_outline     1-pixel boundaries of a mask (inside / just outside it)
    label_outline(labels)             boundaries between instance labels (label images)
    render_overlay(gray, mask, ...)   (H, W, 3) uint8: gray input, mask outline in orange, the
                                      ground truth's in sky blue, labels each in its own colour
    preview(page, mask, ...)          small layers for the HTML report (image, mask, outlines)

The mask is outlined on its inside and the ground truth just outside its region, so
where the two agree both lines stay visible side by side. Colours are from the
Okabe-Ito palette (told apart with the common colour-vision deficiencies); instance
labels cycle through the other colours of that palette and some of their own, never
the ground truth's blue. numpy and Pillow only: inference uses it without torch.
"""

from __future__ import annotations

import numpy as np

from unsupseg.core.normalize import Normalization

MASK_COLOUR = (230, 159, 0)  # orange: the segmentation's outline
TRUTH_COLOUR = (86, 180, 233)  # sky blue: the ground truth's outline
# label k > 0 gets LABEL_COLOURS[(k - 1) % len]: distinct neighbours, no sky blue
LABEL_COLOURS = (
    (230, 159, 0),
    (0, 158, 115),
    (240, 228, 66),
    (213, 94, 0),
    (204, 121, 167),
    (255, 255, 255),
    (0, 114, 178),
    (170, 255, 80),
    (255, 90, 150),
    (160, 110, 255),
)
_DISPLAY = Normalization()  # the 1st and 99th percentiles, as the model sees an image by default


def display_u8(page: np.ndarray) -> np.ndarray:
    """One page (any dtype) as uint8 gray for display: percentiles 1/99 -> 0/255, clipped."""
    return (_DISPLAY(page) * np.float32(255) + np.float32(0.5)).astype(np.uint8)


def _differs(a: np.ndarray) -> np.ndarray:
    """Pixels whose value differs from one of their 4 neighbours (image borders do not count)."""
    d = np.zeros(a.shape, dtype=bool)
    ne_v = a[1:, :] != a[:-1, :]
    ne_h = a[:, 1:] != a[:, :-1]
    d[1:, :] |= ne_v
    d[:-1, :] |= ne_v
    d[:, 1:] |= ne_h
    d[:, :-1] |= ne_h
    return d


def outline(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels that touch the background (4-neighbours): its inner boundary."""
    mask = np.asarray(mask, dtype=bool)
    return mask & _differs(mask)


def outer_outline(mask: np.ndarray) -> np.ndarray:
    """The background pixels that touch the mask: its boundary drawn just outside it."""
    mask = np.asarray(mask, dtype=bool)
    return ~mask & _differs(mask)


def label_outline(labels: np.ndarray) -> np.ndarray:
    """Labels on the boundary of each object (inside it; 0 elsewhere): touching objects both show."""
    labels = np.asarray(labels)
    return np.where((labels > 0) & _differs(labels), labels, 0)


def label_colours(ids: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 colours of label ids (> 0), neighbouring ids in different colours."""
    table = np.array(LABEL_COLOURS, dtype=np.uint8)
    return table[(np.asarray(ids, dtype=np.int64) - 1) % len(table)]


def render_overlay(
    gray: np.ndarray,
    mask: np.ndarray,
    truth: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """(H, W, 3) uint8: ``gray`` (uint8) with the outlines of ``truth`` (sky blue, outside it)
    and of ``mask`` (orange) or, when given, of each object of ``labels`` in its own colour."""
    rgb = np.repeat(np.asarray(gray, dtype=np.uint8)[..., None], 3, axis=2)
    if truth is not None:
        rgb[outer_outline(truth)] = TRUTH_COLOUR
    if labels is not None:
        edge = label_outline(labels)
        where = edge > 0
        rgb[where] = label_colours(edge[where])
    else:
        rgb[outline(mask)] = MASK_COLOUR
    return rgb


def _fit(shape: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(width, height) of ``shape`` scaled to fit ``max_side`` (never enlarged)."""
    h, w = shape
    scale = min(1.0, max_side / max(h, w))
    return max(1, round(w * scale)), max(1, round(h * scale))


def _nearest(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D array to ``size`` (width, height): labels stay labels."""
    w, h = size
    if (h, w) == a.shape:
        return a
    rows = (np.arange(h) * a.shape[0] // h).astype(np.intp)
    cols = (np.arange(w) * a.shape[1] // w).astype(np.intp)
    return a[rows[:, None], cols[None, :]]


def preview(
    page: np.ndarray,
    mask: np.ndarray | None,
    truth: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    max_side: int = 256,
):
    """Small layers of one page for the HTML report, at most ``max_side`` pixels a side.

    Returns (gray, mask, outlines): Pillow images ``L`` (the input, area-averaged),
    ``1`` (the mask; None without one) and ``RGBA`` (the outlines of ``render_overlay``
    on a transparent background, drawn at the small size so they stay one pixel wide;
    None without a mask). The overlay is the outlines laid over the gray image.
    """
    from PIL import Image

    size = _fit(page.shape, max_side)
    gray = Image.fromarray(display_u8(page))
    if gray.size != size:
        gray = gray.resize(size, Image.Resampling.BOX)
    if mask is None:
        return gray, None, None
    small = _nearest(np.asarray(mask, dtype=bool), size)
    small_truth = _nearest(np.asarray(truth, dtype=bool), size) if truth is not None else None
    small_labels = _nearest(labels, size) if labels is not None else None
    rgb = render_overlay(np.zeros(small.shape, np.uint8), small, small_truth, small_labels)
    alpha = np.where(rgb.any(axis=2), 255, 0).astype(np.uint8)
    outlines = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    return gray, Image.fromarray(small).convert("1"), outlines
