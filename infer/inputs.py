"""The inputs of a folder run and where each one's outputs go.

Inputs: a folder (``recursive`` for sub-folders), one image file, or a ``.txt``
list of paths (one per line, UTF-8 or the names' own bytes, ``#`` comments, relative
paths resolved against the list's folder), sorted by relative path so runs and shards are deterministic.
``--shard i/n`` keeps every n-th input starting at the i-th (1-based), which
balances sizes across shards.

Outputs mirror the inputs' relative paths under the output folder: ``a/b.jpg`` ->
``OUT/a/b`` + the writer's suffix (``.png``, ``_prob.tif``...). Two inputs that
differ only by suffix (``b.png``, ``b.tif``) keep it in the name: ``b_png``,
``b_tif``. Only one string per input is kept, however many inputs there are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unsupseg.core.files import iter_image_files
from unsupseg.core.imageio import IMAGE_SUFFIXES
from unsupseg.infer.errors import InputError

LIST_SUFFIXES = (".txt",)


@dataclass(frozen=True, slots=True)
class Item:
    """One input file and where its outputs go (plain strings: cheap to make per file)."""

    src: str  # the input file
    rel: str  # its path relative to the input root, with "/"
    out_base: str  # output path without suffix: each writer adds its own ("OUT/a/b" + ".png")


def _prefix(folder: Path) -> str:
    """``str(folder / rel) == _prefix(folder) + rel`` for a plain relative path ``rel``."""
    return str(Path(folder) / "x")[:-1]


@dataclass
class Inputs:
    """The input files of a run: relative paths (sorted) under ``root``."""

    root: Path  # the folder the relative paths start from
    rels: list[str]  # relative paths with "/", sorted
    srcs: list[str] | None = None  # the paths as given (list and single-file inputs); None: root + rel

    def __len__(self) -> int:
        return len(self.rels)

    def __post_init__(self) -> None:
        self._root_prefix = _prefix(self.root)  # once: pathlib per input would cost the driving process

    def src(self, i: int) -> str:
        return self.srcs[i] if self.srcs is not None else self._root_prefix + self.rels[i]


def gather_inputs(input_path: str | os.PathLike, recursive: bool = False) -> Inputs:
    """The input files, sorted by relative path, and the folder those paths start from."""
    input_path = Path(input_path)
    if input_path.is_dir():
        rels = sorted(iter_image_files(input_path, recursive))
        if not rels:
            hint = "" if recursive else " (add --recursive to include sub-folders)"
            raise InputError(f"{input_path}: no images ({', '.join(IMAGE_SUFFIXES)}) found{hint}")
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
    # names that are not UTF-8 are read as their bytes (surrogate escapes), as os.listdir gives them
    for line in list_path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
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
    """The items of one run (or shard), made on demand from ``Inputs``."""

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


def plan_items(inputs: Inputs, output: Path, shard: tuple[int, int] | None = None) -> Plan:
    """Items for this shard, with output paths; refuses an output folder inside the input.

    Names that would collide (``a.png`` + ``a.tif``) are found over all inputs before
    sharding, so every shard names an input's outputs the same way.
    """
    root = inputs.root
    out, src_root = Path(output).resolve(), root.resolve()
    if out == src_root or src_root in out.parents:
        raise InputError(
            f"--output {output} is the input folder {root} or inside it; masks would mix with the images "
            "(and be read as inputs next time). Choose a folder outside the input, e.g. "
            f"{root.parent / (root.name + '_masks')}"
        )
    renamed = _same_stems(inputs.rels)
    if shard is not None:
        i, n = shard
        srcs = inputs.srcs[i - 1 :: n] if inputs.srcs is not None else None
        inputs = Inputs(root, inputs.rels[i - 1 :: n], srcs)
        renamed = frozenset(r for r in inputs.rels if r in renamed)
    return Plan(inputs, output, renamed)


def _same_stems(rels: list[str]) -> frozenset[str]:
    """The relative paths that share their path without suffix with another one.

    Hashes of the names without suffix find the candidates without a dict of every name.
    """
    hashes = np.fromiter((hash(os.path.splitext(r)[0]) for r in rels), np.int64, len(rels))
    values, counts = np.unique(hashes, return_counts=True)
    if not (counts > 1).any():
        return frozenset()
    suspects = set(values[counts > 1].tolist())
    stems: dict[str, list[str]] = {}
    for r in rels:
        stem = os.path.splitext(r)[0]
        if hash(stem) in suspects:
            stems.setdefault(stem, []).append(r)
    return frozenset(r for same in stems.values() if len(same) > 1 for r in same)
