"""Folder runs: gather inputs, plan outputs, stream read -> segment -> write, report.

Inputs: a folder (``recursive`` for sub-folders), one image file, or a ``.txt``
list of paths (one per line, ``#`` comments, relative paths resolved against the
list's folder). The list is sorted by relative path, so runs and shards are
deterministic; ``shard=(i, n)`` keeps every n-th input starting at the i-th
(1-based), which balances sizes across shards.

Streaming: a small thread pool reads and normalises the next few images while
onnxruntime runs the current batch, and writes masks while the next batch runs;
files go to the threads a chunk (a batch's worth) at a time, so the threads and
the inference loop hand over the GIL once per chunk, not once per file. Both
queues are bounded (``depth``), so memory stays flat however many files there
are: the inputs are kept as one relative-path string each (``Inputs``; ``Plan``
makes each ``Item`` when it is needed), and the per-image result rows go to the
``Report``, which the ``seginfer`` command spools to a temporary file in the
output folder instead of memory.

Outputs mirror the inputs' relative paths under the output folder: ``a/b.jpg``
-> ``a/b.png`` (or ``.tif``; multi-page inputs always give a multi-page
``.tif``), ``a/b_prob.tif`` with ``save_prob``. Two inputs that differ only by
suffix (``b.png``, ``b.tif``) keep it in the name: ``b_png.png``, ``b_tif.png``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from unsupseg.core.errors import OutputExistsError, UnsupsegError
from unsupseg.core.imageio import (
    IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    is_image_name,
    read_mask,
    read_pages,
    write_float_tiff,
    write_mask,
)
from unsupseg.infer.api import Segmenter
from unsupseg.infer.report import CaseResult, MaskIndex, Report, evaluate

LIST_SUFFIXES = (".txt",)
FORMATS = ("png", "tif")


class InputError(UnsupsegError):
    """The --input/--output combination cannot be run (no images, output inside input...)."""


@dataclass(frozen=True, slots=True)
class Item:
    """One input file and where its outputs go (plain strings: cheap to make per file)."""

    src: str  # the input file
    rel: str  # its path relative to the input root, with "/"
    out_base: str  # output path without suffix: mask = out_base + ".png"/".tif"

    def mask_path(self, pages: int, fmt: str) -> str:
        return self.out_base + (".tif" if pages > 1 or fmt == "tif" else ".png")

    def prob_path(self) -> str:
        return self.out_base + "_prob.tif"

    def possible_masks(self, fmt: str) -> list[str]:
        """Mask paths a run could write for this input (a TIFF input may be multi-page)."""
        paths = [self.mask_path(1, fmt)]
        if fmt == "png" and os.path.splitext(self.src)[1].lower() in TIFF_SUFFIXES:
            paths.append(self.mask_path(2, fmt))
        return paths


def _prefix(folder: Path) -> str:
    """``str(folder / rel) == _prefix(folder) + rel`` for a plain relative path ``rel``."""
    return str(Path(folder) / "x")[:-1]


@dataclass
class Inputs:
    """The input files of a run: relative paths (sorted) under ``root``.

    Kept as one string per file (no Path objects): a folder of a million images
    costs tens of MB here, not hundreds.
    """

    root: Path  # the folder the relative paths start from
    rels: list[str]  # relative paths with "/", sorted
    srcs: list[str] | None = None  # the paths as given (list and single-file inputs); None: root + rel

    def __len__(self) -> int:
        return len(self.rels)

    def src(self, i: int) -> str:
        return self.srcs[i] if self.srcs is not None else _prefix(self.root) + self.rels[i]


# -- inputs ---------------------------------------------------------------------------
def gather_inputs(input_path: Path, recursive: bool = False) -> Inputs:
    """The input files, sorted by relative path, and the folder those paths start from."""
    input_path = Path(input_path)
    if input_path.is_dir():
        rels: list[str] = []
        top = os.fspath(input_path)
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
            sub = os.path.relpath(dirpath, top)
            if sub == ".":  # the top folder: the file names themselves are the relative paths
                rels.extend(f for f in filenames if is_image_name(f))
            else:
                sub = Path(sub).as_posix() + "/"
                rels.extend(sub + f for f in filenames if is_image_name(f))
        if not rels:
            hint = "" if recursive else " (add --recursive to include sub-folders)"
            raise InputError(f"{input_path}: no images ({', '.join(IMAGE_SUFFIXES)}) found{hint}")
        rels.sort()
        return Inputs(input_path, rels)
    if input_path.suffix.lower() in LIST_SUFFIXES:
        files = _read_list(input_path)
        parents = {os.path.abspath(f.parent) for f in files}
        root = Path(os.path.commonpath(sorted(parents)))
    else:
        files, root = [input_path], input_path.parent
    pairs = sorted({(Path(os.path.relpath(f, root)).as_posix(), str(f)) for f in set(files)})
    return Inputs(root, [r for r, _ in pairs], [f for _, f in pairs])


def _read_list(list_path: Path) -> list[Path]:
    base = list_path.parent
    files = []
    for line in list_path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            files.append(p if p.is_absolute() else base / p)
    if not files:
        raise InputError(f"{list_path}: the list names no files; put one image path per line")
    return files


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (1 <= I <= N) -> (I, N)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like I/N, e.g. 1/4, got {text!r}") from None
    if not 1 <= i <= n:
        raise ValueError(f"shard I/N needs 1 <= I <= N, got {text!r} (shards are 1/{max(n, 1)} .. {n}/{n})")
    return i, n


class Plan(Sequence[Item]):
    """The items of one run (or shard), made on demand from ``Inputs``: one string per
    input is all that is kept, however many inputs there are."""

    def __init__(self, inputs: Inputs, output: Path, renamed: frozenset[str] = frozenset()):
        self.inputs = inputs
        self.output = Path(output)
        self.renamed = renamed  # relative paths whose output keeps the suffix (a.png + a.tif)
        self._out_prefix = _prefix(self.output)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        rel = self.inputs.rels[i]
        stem, suffix = os.path.splitext(rel)
        base = f"{stem}_{suffix[1:]}" if rel in self.renamed else stem
        return Item(self.inputs.src(i), rel, self._out_prefix + base)

    def __iter__(self) -> Iterator[Item]:
        return (self[i] for i in range(len(self)))


def plan(inputs: Inputs, output: Path, shard: tuple[int, int] | None = None) -> Plan:
    """Items for this shard, with output paths; refuses an output folder inside the input."""
    root = inputs.root
    out, src_root = Path(output).resolve(), root.resolve()
    if out == src_root or src_root in out.parents:
        raise InputError(
            f"--output {output} is the input folder {root} or inside it; masks would mix with the images "
            "(and be read as inputs next time). Choose a folder outside the input, e.g. "
            f"{root.parent / (root.name + '_masks')}"
        )
    if shard is not None:
        i, n = shard
        srcs = inputs.srcs[i - 1 :: n] if inputs.srcs is not None else None
        inputs = Inputs(root, inputs.rels[i - 1 :: n], srcs)
    # a.png and a.tif in one folder: both keep their suffix in the output name. Hashes
    # of the names without suffix find the candidates without a dict of every name.
    hashes = np.fromiter((hash(os.path.splitext(r)[0]) for r in inputs.rels), np.int64, len(inputs))
    values, counts = np.unique(hashes, return_counts=True)
    renamed: set[str] = set()
    if (counts > 1).any():
        suspects = set(values[counts > 1].tolist())
        stems: dict[str, list[str]] = {}
        for r in inputs.rels:
            stem = os.path.splitext(r)[0]
            if hash(stem) in suspects:
                stems.setdefault(stem, []).append(r)
        renamed = {r for same in stems.values() if len(same) > 1 for r in same}
    return Plan(inputs, output, frozenset(renamed))


def existing_outputs(items: Iterable[Item], fmt: str, save_prob: bool) -> Iterator[str]:
    for item in items:
        for p in item.possible_masks(fmt) + ([item.prob_path()] if save_prob else []):
            if os.path.exists(p):
                yield p


def check_overwrite(items: Iterable[Item], fmt: str, save_prob: bool) -> None:
    """Raise OutputExistsError naming an existing output and the two ways forward."""
    found = existing_outputs(items, fmt, save_prob)
    first = next(found, None)
    if first is not None:
        more = sum(1 for _ in found)
        others = f" (and {more} more)" if more else ""
        raise OutputExistsError(
            f"{first} already exists{others}; pass --overwrite to replace existing masks "
            "or --skip-existing to keep them and process only the rest"
        )


# -- the run --------------------------------------------------------------------------
@dataclass
class RunOptions:
    fmt: str = "png"  # "png" or "tif" for single-page masks
    save_prob: bool = False  # also write the foreground probability as float32 TIFF
    skip_existing: bool = False  # leave inputs whose mask exists alone
    masks: Path | None = None  # ground-truth folder for the IoU report
    workers: int = 4  # reader/writer threads
    depth: int = 0  # images read ahead / waiting for a batch / being written; 0 = max(8, 2 * batch size)
    chunk: int = 0  # files per reader/writer task; 0 = the batch size


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _prefetch(pool: ThreadPoolExecutor, chunks: Iterable[list], fn: Callable, depth: int) -> Iterator:
    """Submit ``fn(chunk)`` at most ``depth`` chunks ahead of the consumer; yield
    ``(chunk, future)`` in order."""
    queue: deque[tuple[list, Future]] = deque()
    it = iter(chunks)
    for chunk in it:
        queue.append((chunk, pool.submit(fn, chunk)))
        if len(queue) >= depth:
            break
    while queue:
        nxt = next(it, None)
        if nxt is not None:
            queue.append((nxt, pool.submit(fn, nxt)))
        yield queue.popleft()


def _each(fn: Callable, args: list) -> list:
    """``[fn(*a) for a in args]``, with an input's exception in its place (one task, many files)."""
    out = []
    for a in args:
        try:
            out.append(fn(*a))
        except Exception as e:
            out.append(e)
    return out


def run(
    segmenter: Segmenter,
    items: Iterable[Item],
    options: RunOptions,
    report: Report,
    on_done: Callable[[Item, str | None], None] | None = None,
    mask_index: MaskIndex | None = None,
) -> Report:
    """Segment ``items`` and write their masks; every result lands in ``report``.

    ``items``: a ``Plan`` (or any iterable of ``Item``), consumed once, in order.
    ``on_done(item, error_message_or_None)`` is called once per input (progress bars).
    ``mask_index``: the ``options.masks`` folder already indexed (callers that run many
    small batches, like the Ray engine's actors, index it once).
    """
    on_done = on_done or (lambda item, err: None)
    index = mask_index
    if index is None and options.masks is not None:
        index = MaskIndex(options.masks)
    depth = options.depth or max(8, 2 * segmenter.batch_size)
    chunk = max(1, min(options.chunk or segmenter.batch_size, depth))
    fmt, save_prob = options.fmt, options.save_prob

    def fail(item: Item, error: BaseException) -> None:
        on_done(item, report.fail(item.src, error))

    def finish(chunk: list[Item], fut: Future) -> None:
        for item, result in zip(chunk, fut.result(), strict=True):
            if isinstance(result, Exception):  # writing failed: the input is failed, nothing was kept
                fail(item, result)
                continue
            case, eval_error = result
            report.add(case)
            if eval_error is not None:
                fail(item, eval_error)
            else:
                on_done(item, None)

    def read(item: Item):
        return segmenter.prepare(read_pages(item.src), item.src)

    def write(item: Item, mask: np.ndarray, prob: np.ndarray | None):
        path = item.mask_path(mask.shape[0], fmt)
        if save_prob:
            write_float_tiff(item.prob_path(), prob[0] if prob.shape[0] == 1 else prob)
        write_mask(path, mask[0] if mask.shape[0] == 1 else mask)
        case = CaseResult(item.src, path, "written", n_pixels=mask.size)
        case.n_foreground = int(np.count_nonzero(mask))
        return case, _evaluate(case, mask, item) if index is not None else None

    def keep(item: Item, path: str):
        case = CaseResult(item.src, path, "skipped")
        if index is None or index.find(item.rel) is None:
            return case, None
        mask = read_mask(path)
        case.n_pixels, case.n_foreground = int(mask.size), int(np.count_nonzero(mask))
        return case, _evaluate(case, mask, item)

    def _evaluate(case: CaseResult, mask: np.ndarray, item: Item) -> BaseException | None:
        mask_path = index.find(item.rel) if index is not None else None
        if mask_path is None:
            return None
        try:
            evaluate(case, mask, mask_path)
        except Exception as e:  # a bad ground-truth file fails this input, not the run
            return e
        return None

    writes: deque[tuple[list[Item], Future]] = deque()  # chunks of inputs being written

    def drain(limit: int) -> None:
        while writes and (len(writes) > limit or writes[0][1].done()):
            finish(*writes.popleft())

    # Reading and writing go to the threads a chunk of files at a time (a batch's worth):
    # one task and one hand-over of the GIL per chunk instead of per file.
    n_chunks = max(1, depth // chunk)
    with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="seginfer-io") as pool:
        try:

            def todo() -> Iterator[Item]:
                """The inputs to segment; with skip_existing, the others are kept (and evaluated)."""
                for item in items:
                    if options.skip_existing:
                        found = next(existing_outputs([item], fmt, False), None)
                        if found is not None:
                            writes.append(([item], pool.submit(_each, keep, [(item, found)])))
                            drain(n_chunks)
                            continue
                    yield item

            def good_inputs() -> Iterator[tuple[Item, np.ndarray]]:
                chunks = _chunks(((item,) for item in todo()), chunk)  # (item,): the arguments of read
                for items_read, fut in _prefetch(pool, chunks, partial(_each, read), n_chunks):
                    results = fut.result()
                    del fut  # the future would keep the pages alive while they are segmented
                    for (item,), result in zip(items_read, results, strict=True):
                        if isinstance(result, Exception):  # unreadable or unusable input: name it, go on
                            fail(item, result)
                        else:
                            yield item, result
                    del results

            to_write: list[tuple] = []

            def flush() -> None:
                writes.append(([t[0] for t in to_write], pool.submit(_each, write, list(to_write))))
                to_write.clear()
                drain(n_chunks)

            results = segmenter.predict_stream(good_inputs(), max_pending=depth, with_prob=save_prob)
            for item, result in results:
                if isinstance(result, BaseException):
                    fail(item, result)
                else:
                    to_write.append((item, *result))
                    if len(to_write) >= chunk:
                        flush()
                del result
            if to_write:
                flush()
            drain(0)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: let started writes finish their rename
            raise
    return report
