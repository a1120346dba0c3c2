"""A sample of a run's inputs: what the structure rule ``auto`` and ``--adapt`` look at before the
run segments every input.

Up to ``n`` inputs spread evenly over the sorted inputs (the same ones on every run of a folder),
each read once as the run reads it. A page larger than ``max_side`` on a side gives its central
``max_side`` x ``max_side`` window (memory and time stay bounded whatever the image size; the
scale of its objects is kept, which a downscaled copy would change). Inputs that cannot be read
are named in ``skipped`` (the run itself fails them later, by name); constant pages (an empty
field of view) carry nothing to measure and are named too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from unsupseg.core.padding import central_window
from unsupseg.infer.inputs import Item
from unsupseg.infer.report import describe_error

DEFAULT_SAMPLE = 16  # inputs the structure rule auto looks at
ADAPT_INPUTS = 32  # inputs seginfer --adapt adapts on
ADAPT_PAGES_PER_INPUT = 2  # pages it takes from a multi-page input
MAX_SIDE = 1024  # larger pages give their central window of this side


@dataclass
class Sample:
    pages: list[np.ndarray] = field(default_factory=list)  # 2-D pages as read (windows of large ones)
    sources: list[str] = field(default_factory=list)  # the input of each page
    skipped: list[dict] = field(default_factory=list)  # {"input", "why"} of inputs not used

    def __len__(self) -> int:
        return len(self.pages)


def spread(n_items: int, n: int) -> list[int]:
    """``n`` indices spread evenly over ``n_items`` (all of them when there are fewer)."""
    if n_items <= n:
        return list(range(n_items))
    return sorted({round(i * (n_items - 1) / (n - 1)) for i in range(n)}) if n > 1 else [n_items // 2]


def sample_pages(
    items: Sequence[Item],
    read: Callable[[Item], np.ndarray],
    n: int = DEFAULT_SAMPLE,
    max_side: int = MAX_SIDE,
    pages_per_input: int = 1,
) -> Sample:
    """Read up to ``n`` inputs spread over ``items`` with ``read`` (the run's reader, so the same
    checks and pixel limit apply); from each, up to ``pages_per_input`` pages spread over its pages."""
    out = Sample()
    for i in spread(len(items), n):
        item = items[i]
        try:
            pages = read(item)
        except Exception as e:  # named here; the run fails the input itself, by name, later
            out.skipped.append({"input": item.src, "why": describe_error(e)})
            continue
        for k in spread(len(pages), pages_per_input):
            page = central_window(pages[k], max_side)
            if page.size == 0 or float(page.max()) == float(page.min()):
                why = f"page {k + 1} is constant: nothing to measure"
                out.skipped.append({"input": item.src, "why": why})
                continue
            out.pages.append(page)
            out.sources.append(item.src)
    return out
