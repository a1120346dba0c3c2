"""The papers the package cites (rdf.yaml ``cite`` and the README): DOIs, which the spec checks offline."""

from __future__ import annotations

CITATIONS = (
    (
        "Chan, T. F. and Vese, L. A. Active contours without edges. IEEE Transactions on "
        "Image Processing 10(2), 266-277 (2001): the energy the network minimises.",
        "10.1109/83.902291",
    ),
    (
        "Kim, B. and Ye, J. C. Mumford-Shah loss functional for image segmentation with deep "
        "learning. IEEE Transactions on Image Processing 29, 1856-1866 (2020): training a "
        "network by minimising it, without labels.",
        "10.1109/TIP.2019.2941265",
    ),
)


def citation_text() -> str:
    """The README's list: one Markdown bullet per paper, ending in its DOI."""
    return "\n".join(f"* {text} doi:{doi}" for text, doi in CITATIONS)
