"""``python -m unsupseg.napari.adapt_job SAMPLE.npz OUT.onnx DEVICE``: the plugin's adaptation, in a
process of its own (segment.py's ``adapt_layers`` says why), on the sample it took of the open
layers: export/adapt.py's ``adapt_pages``, as ``seginfer --adapt`` runs it. Prints the adaptation's
log lines, then its record as one JSON line (or the error, in seginfer's words); exit code 0, or 2.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from unsupseg.core.errors import UnsupsegError
from unsupseg.napari.segment import FAILED, RECORD


def main(argv: list[str] | None = None) -> int:
    sample, out, device = argv if argv is not None else sys.argv[1:]
    try:
        from unsupseg.export.adapt import adapt_pages
    except ImportError as e:
        print(f'{FAILED}adapting trains the network and needs torch ({e}): pip install "unsupseg[train]" '
              "(make install installs it)", flush=True)  # fmt: skip
        return 2
    with np.load(sample) as data:
        pages = [data[f"arr_{i}"] for i in range(len(data.files) - 2)]
        sources, skipped = json.loads(str(data["sources"])), json.loads(str(data["skipped"]))
    try:
        adaptation = adapt_pages(
            pages, out, sources, skipped, device=device, log=lambda m: print(m, flush=True)
        )
    except (UnsupsegError, ValueError, OSError, RuntimeError) as e:
        print(f"{FAILED}{e}", flush=True)
        return 2
    print(RECORD + json.dumps(adaptation.record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
