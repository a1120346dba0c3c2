"""Folder runs: gather inputs, plan outputs, stream read -> segment -> write, report.

Inputs: a folder (``recursive`` for sub-folders), one image file, or a ``.txt``
list of paths (one per line, ``#`` comments, relative paths resolved against the
list's folder). The list is sorted by relative path, so runs and shards are
deterministic; ``shard=(i, n)`` keeps every n-th input starting at the i-th
(1-based), which balances sizes across shards.

Streaming: a small thread pool reads and normalises the next few images while
onnxruntime runs the current batch, and writes masks while the next batch runs.
Both queues are bounded (``depth``), so memory stays flat however many files
there are; only the per-image result rows (a few hundred bytes each) are kept
for the report.

Outputs mirror the inputs' relative paths under the output folder: ``a/b.jpg``
-> ``a/b.png`` (or ``.tif``; multi-page inputs always give a multi-page
``.tif``), ``a/b_prob.tif`` with ``save_prob``. Two inputs that differ only by
suffix (``b.png``, ``b.tif``) keep it in the name: ``b_png.png``, ``b_tif.png``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from unsupseg.core.errors import OutputExistsError, UnsupsegError
from unsupseg.core.imageio import (
    IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    is_image_path,
    read_image,
    read_mask,
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
    """One input file and where its outputs go."""

    src: Path  # the input file
    rel: PurePosixPath  # its path relative to the input root
    out_base: Path  # output path without suffix: mask = out_base + ".png"/".tif"

    def mask_path(self, pages: int, fmt: str) -> Path:
        ext = ".tif" if pages > 1 or fmt == "tif" else ".png"
        return self.out_base.with_name(self.out_base.name + ext)

    def prob_path(self) -> Path:
        return self.out_base.with_name(self.out_base.name + "_prob.tif")

    def possible_masks(self, fmt: str) -> list[Path]:
        """Mask paths a run could write for this input (a TIFF input may be multi-page)."""
        paths = [self.mask_path(1, fmt)]
        if fmt == "png" and self.src.suffix.lower() in TIFF_SUFFIXES:
            paths.append(self.mask_path(2, fmt))
        return paths


# -- inputs ---------------------------------------------------------------------------
def gather_inputs(input_path: Path, recursive: bool = False) -> tuple[Path, list[Path]]:
    """(root, files): the folder the relative paths start from, and the input files, sorted."""
    input_path = Path(input_path)
    if input_path.is_dir():
        files = []
        for dirpath, dirnames, filenames in os.walk(input_path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
            files.extend(Path(dirpath) / f for f in filenames if is_image_path(Path(f)))
        if not files:
            hint = "" if recursive else " (add --recursive to include sub-folders)"
            raise InputError(f"{input_path}: no images ({', '.join(IMAGE_SUFFIXES)}) found{hint}")
        root = input_path
    elif input_path.suffix.lower() in LIST_SUFFIXES:
        files = _read_list(input_path)
        parents = {os.path.abspath(f.parent) for f in files}
        root = Path(os.path.commonpath(sorted(parents)))
    else:
        files, root = [input_path], input_path.parent
    files = sorted(set(files), key=lambda f: Path(os.path.relpath(f, root)).as_posix())
    return root, files


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


def plan(root: Path, files: list[Path], output: Path, shard: tuple[int, int] | None = None) -> list[Item]:
    """Items for this shard, with output paths; refuses an output folder inside the input."""
    out, src_root = output.resolve(), root.resolve()
    if out == src_root or src_root in out.parents:
        raise InputError(
            f"--output {output} is the input folder {root} or inside it; masks would mix with the images "
            "(and be read as inputs next time). Choose a folder outside the input, e.g. "
            f"{root.parent / (root.name + '_masks')}"
        )
    if shard is not None:
        i, n = shard
        files = files[i - 1 :: n]
    rels = [PurePosixPath(Path(os.path.relpath(f, root)).as_posix()) for f in files]
    stems: dict[str, int] = {}
    for rel in rels:
        key = str(rel.with_suffix(""))
        stems[key] = stems.get(key, 0) + 1
    items = []
    for f, rel in zip(files, rels, strict=True):
        base = rel.with_suffix("")
        if stems[str(base)] > 1:  # a.png and a.tif in one folder: keep the suffix in the name
            base = rel.with_name(f"{rel.stem}_{rel.suffix[1:]}")
        items.append(Item(f, rel, output / base))
    return items


def existing_outputs(items: Iterable[Item], fmt: str, save_prob: bool) -> Iterator[Path]:
    for item in items:
        for p in item.possible_masks(fmt) + ([item.prob_path()] if save_prob else []):
            if p.exists():
                yield p


def check_overwrite(items: list[Item], fmt: str, save_prob: bool) -> None:
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


def _prefetch(
    pool: ThreadPoolExecutor, items: list[Item], fn: Callable, depth: int
) -> Iterator[tuple[Item, Future]]:
    """Submit ``fn(item)`` at most ``depth`` ahead of the consumer; yield in order."""
    queue: deque[tuple[Item, Future]] = deque()
    it = iter(items)
    for item in it:
        queue.append((item, pool.submit(fn, item)))
        if len(queue) >= depth:
            break
    while queue:
        item, fut = queue.popleft()
        nxt = next(it, None)
        if nxt is not None:
            queue.append((nxt, pool.submit(fn, nxt)))
        yield item, fut


def run(
    segmenter: Segmenter,
    items: list[Item],
    options: RunOptions,
    report: Report,
    on_done: Callable[[Item, str | None], None] | None = None,
    mask_index: MaskIndex | None = None,
) -> Report:
    """Segment ``items`` and write their masks; every result lands in ``report``.

    ``on_done(item, error_message_or_None)`` is called once per input (progress bars).
    ``mask_index``: the ``options.masks`` folder already indexed (callers that run many
    small batches, like the Ray engine's actors, index it once).
    """
    on_done = on_done or (lambda item, err: None)
    index = mask_index
    if index is None and options.masks is not None:
        index = MaskIndex(options.masks)
    depth = options.depth or max(8, 2 * segmenter.batch_size)

    todo, skipped = [], []
    for item in items:
        found = next(existing_outputs([item], options.fmt, False), None) if options.skip_existing else None
        (skipped if found is not None else todo).append((item, found))

    def fail(item: Item, error: BaseException) -> None:
        on_done(item, report.fail(item.src, error))

    def finish(item: Item, fut: Future) -> None:
        try:
            case, eval_error = fut.result()
        except Exception as e:  # writing failed: the input is failed, nothing was kept
            fail(item, e)
            return
        report.add(case)
        if eval_error is not None:
            fail(item, eval_error)
        else:
            on_done(item, None)

    def read(item: Item) -> np.ndarray:
        return segmenter.prepare(read_image(item.src), item.src)

    def write(item: Item, mask: np.ndarray, prob: np.ndarray):
        path = item.mask_path(mask.shape[0], options.fmt)
        if options.save_prob:
            write_float_tiff(item.prob_path(), prob[0] if prob.shape[0] == 1 else prob)
        write_mask(path, mask[0] if mask.shape[0] == 1 else mask)
        case = CaseResult(str(item.src), str(path), "written", n_pixels=int(mask.size))
        case.n_foreground = int(np.count_nonzero(mask))
        return case, _evaluate(case, mask, item)

    def keep(item: Item, path: Path):
        case = CaseResult(str(item.src), str(path), "skipped")
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

    writes: deque[tuple[Item, Future]] = deque()

    def drain(limit: int) -> None:
        while writes and (len(writes) > limit or writes[0][1].done()):
            finish(*writes.popleft())

    with ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="seginfer-io") as pool:
        try:
            for item, found in skipped:
                writes.append((item, pool.submit(keep, item, found)))
                drain(depth)

            def good_inputs() -> Iterator[tuple[Item, np.ndarray]]:
                for item, fut in _prefetch(pool, [t[0] for t in todo], read, depth):
                    try:
                        yield item, fut.result()
                    except Exception as e:  # unreadable or unusable input: name it, go on
                        fail(item, e)

            for item, result in segmenter.predict_stream(good_inputs(), max_pending=depth):
                if isinstance(result, BaseException):
                    fail(item, result)
                else:
                    writes.append((item, pool.submit(write, item, *result)))
                drain(depth)
            drain(0)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: let started writes finish their rename
            raise
    return report
