"""Training on a folder of images, streamed from disk (``segtrain --data DIR``).

``FileIndex`` lists the image files once, onto disk; ``EpochSampler`` chooses the files
each epoch sees; ``FolderCropDataset`` reads, normalises and crops them when a sample
needs them, through a bounded cache. A sample's random choices derive from its number
and the seed, so the result does not depend on the number of workers or ranks. A file
that cannot be read is reported once and its samples come from the next readable file.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from array import array
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from unsupseg.core.errors import DataError, ImageReadError
from unsupseg.core.files import MaskIndex, iter_image_files
from unsupseg.core.imageio import IMAGE_SUFFIXES, read_image, read_mask
from unsupseg.core.normalize import Normalization
from unsupseg.train.augment import apply_augment, build_augment

MB = 1 << 20
PERMUTATION_SEED_STRIDE = 1_000_003  # permutation p of files is seeded seed * this + p: runs apart


# ----------------------------------------------------------------------------- the index
class FileIndex:
    """The image files under ``root`` (recursively), listed once and kept on disk.

    Order: ``core.files.iter_image_files`` (deterministic: every rank of a multi-process
    run lists the same files in the same order; one folder's names in memory at a time).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: not a folder")
        self._owner = os.getpid()
        self._offsets = self._fd = self._fd_pid = None
        self._dir = Path(tempfile.mkdtemp(prefix="unsupseg-index-"))
        self._paths_file = self._dir / "paths.txt"
        offsets = array("q", [0])
        try:
            with open(self._paths_file, "wb") as f:
                for rel in iter_image_files(self.root):
                    line = (rel + "\n").encode("utf-8", "surrogateescape")  # any name the OS allows
                    f.write(line)
                    offsets.append(offsets[-1] + len(line))
            self._n = len(offsets) - 1
            np.asarray(offsets, dtype=np.int64).tofile(self._dir / "offsets.bin")
            del offsets
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        if self._n == 0:
            self.close()
            raise DataError(f"{self.root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")

    def __len__(self) -> int:
        return self._n

    def _open(self) -> None:
        if self._fd is None or self._fd_pid != os.getpid():  # one descriptor per process
            self._fd = os.open(self._paths_file, os.O_RDONLY)
            self._fd_pid = os.getpid()
            self._offsets = np.memmap(self._dir / "offsets.bin", dtype=np.int64, mode="r")

    def rel(self, i: int) -> PurePosixPath:
        """The i-th file's path relative to the root."""
        if not 0 <= i < self._n:
            raise IndexError(i)
        self._open()
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        return PurePosixPath(os.pread(self._fd, end - start - 1, start).decode("utf-8", "surrogateescape"))

    def path(self, i: int) -> Path:
        return self.root / self.rel(i)

    def __getstate__(self):  # DataLoader workers started with "spawn" reopen the files
        state = dict(self.__dict__)
        state.update(_offsets=None, _fd=None, _fd_pid=None)
        return state

    def close(self) -> None:
        """Remove the index files (only the process that made them does)."""
        if self._fd is not None and self._fd_pid == os.getpid():
            os.close(self._fd)
        self._fd = self._offsets = None
        if os.getpid() == self._owner:
            shutil.rmtree(self._dir, ignore_errors=True)


# ----------------------------------------------------------------------------- sampling
class EpochSampler(Sampler):
    """Yields ``(file_index, sample_number)`` keys for one epoch of ``length`` samples.

    Sample numbers run on across epochs (epoch e covers e*length .. (e+1)*length - 1).
    Sample k takes position k mod n of permutation k // n of the n files; permutation p
    is ``torch.randperm(n)`` seeded by (seed, p). With ``world`` ranks, rank r takes the
    samples r, r + world, ... and every rank gets the same count (length // world).
    """

    def __init__(self, n_files: int, length: int, seed: int, rank: int = 0, world: int = 1):
        if length // world < 1:
            raise ValueError(f"{length} samples per epoch cannot be shared by {world} processes")
        self.n, self.length, self.seed = n_files, length, seed
        self.rank, self.world = rank, world
        self.epoch = 0
        self._perm_cache: tuple[int, torch.Tensor] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length // self.world

    def _perm(self, p: int) -> torch.Tensor:
        if self._perm_cache is None or self._perm_cache[0] != p:
            g = torch.Generator().manual_seed(self.seed * PERMUTATION_SEED_STRIDE + p)
            self._perm_cache = (p, torch.randperm(self.n, generator=g))
        return self._perm_cache[1]

    def __iter__(self):
        first = self.epoch * self.length
        for j in range(len(self)):
            k = first + self.rank + j * self.world
            yield int(self._perm(k // self.n)[k % self.n]), k


# ----------------------------------------------------------------------------- samples
def noisier_input(
    image: np.ndarray, norm: Normalization, strength: float, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The network's training input: ``image`` plus Gaussian noise, normalised.

    The noise std is drawn per image from U(0, strength) times the image's normalisation
    range (p_high - p_low), so it is relative to the image's own contrast. The loss still
    measures the image as observed: the network learns to recover, from a noisier view,
    the partition that fits the real image, i.e. it learns to denoise (the Noisier2Noise
    idea, Moran et al. 2020). No labels are involved. ``rng``: numpy's global generator
    when None.
    """
    if strength <= 0:
        return norm(image)
    r = np.random if rng is None else rng
    lo, hi = norm.bounds(image)
    std = r.uniform(0.0, strength) * (hi - lo)
    noisy = image.astype(np.float32) + r.normal(0.0, std, size=image.shape).astype(np.float32)
    return norm(noisy)


def read_pair(
    path: Path, rel: PurePosixPath, norm: Normalization, masks: MaskIndex | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalised float32 pages (P, H, W) of an image and its bool mask pages, or None."""
    pages = read_image(path)
    mpages = None
    if masks is not None:
        mp = masks.find(rel)
        if mp is not None:
            mpages = read_mask(mp)
            if mpages.shape != pages.shape:
                raise ImageReadError(f"{mp}: mask shape {mpages.shape} differs from image {pages.shape}")
    return np.stack([norm(p) for p in pages]), mpages


class FolderCropDataset(Dataset):
    """Random square crops ``(input, image, mask)``, each (1, crop, crop), read on demand.

    Indexed by the ``(file_index, sample_number)`` keys of ``EpochSampler``. Images
    smaller than the crop are reflected up to it. Without a mask the mask is all false
    (IoU is then not reported).
    """

    def __init__(
        self,
        index: FileIndex,
        crop: int,
        norm: Normalization,
        augment: str = "none",
        input_noise: float = 0.0,
        masks: MaskIndex | None = None,
        seed: int = 0,
        cache_mb: float = 1024,
        workers: int = 0,
        log: Callable[[str], None] = print,
    ):
        self.index, self.crop, self.norm = index, crop, norm
        self.transform = build_augment(augment) if augment != "none" else None
        self.input_noise, self.masks, self.seed = input_noise, masks, seed
        self.cache_bytes = int(cache_mb * MB / max(1, workers))  # each worker process has its own cache
        self.log = log
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        self._cached = 0
        self._bad: set[int] = set()

    def __len__(self) -> int:  # samples are drawn by EpochSampler; this is the number of files
        return len(self.index)

    def __getstate__(self):
        # DataLoader workers started with "spawn" (macOS, Windows) get a pickled copy; the
        # caller's log function may be a lambda, so they report to stderr directly
        state = dict(self.__dict__)
        state["log"] = _log_to_stderr
        return state

    def _load(self, i: int) -> tuple[int, np.ndarray, np.ndarray | None]:
        """File i's pages (from the cache or disk); an unreadable file passes to the next."""
        n = len(self.index)
        for step in range(n):
            j = (i + step) % n
            if j in self._bad:
                continue
            hit = self._cache.get(j)
            if hit is not None:
                self._cache.move_to_end(j)
                return j, *hit
            try:
                pages, mpages = read_pair(self.index.path(j), self.index.rel(j), self.norm, self.masks)
            except ImageReadError as e:
                self._bad.add(j)
                self.log(f"skipped {e}")
                continue
            size = pages.nbytes + (0 if mpages is None else mpages.nbytes)
            if size <= self.cache_bytes:
                self._cache[j] = (pages, mpages)
                self._cached += size
                while self._cached > self.cache_bytes:
                    _, (p, m) = self._cache.popitem(last=False)
                    self._cached -= p.nbytes + (0 if m is None else m.nbytes)
            return j, pages, mpages
        raise DataError(f"{self.index.root}: none of the {n} image files could be read")

    def __getitem__(self, key: tuple[int, int]):
        i, k = key
        rng = np.random.default_rng([self.seed, k])
        _, pages, mpages = self._load(i)
        page = int(rng.integers(len(pages)))
        img = pages[page]
        msk = mpages[page] if mpages is not None else np.zeros(img.shape, dtype=bool)
        c = self.crop
        h, w = img.shape
        if h < c or w < c:  # small images are reflected up to the crop size
            ph, pw = max(0, c - h), max(0, c - w)
            img = np.pad(img, ((0, ph), (0, pw)), mode="reflect" if min(h, w) > max(ph, pw) else "symmetric")
            msk = np.pad(msk, ((0, ph), (0, pw)), mode="constant")
            h, w = img.shape
        y, x = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
        crop = np.ascontiguousarray(img[y : y + c, x : x + c])
        t_img = torch.from_numpy(crop)[None]
        t_msk = torch.from_numpy(np.ascontiguousarray(msk[y : y + c, x : x + c]))[None]
        t_inp = t_img
        if self.input_noise > 0:
            # the crop is already normalised (range ~[0, 1]); noise is relative to that range
            noisy = noisier_input(crop, Normalization(clip=False), self.input_noise, rng)
            t_inp = torch.from_numpy(noisy)[None].clamp(0, 1)
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(2**62)))
                t_inp, t_img, t_msk = apply_augment(self.transform, t_inp, t_img, t_msk)
        return t_inp, t_img, t_msk


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def eval_subset(n_files: int, limit: int) -> list[int]:
    """Up to ``limit`` file indices spread evenly over ``n_files`` (all when n <= limit)."""
    if n_files <= limit:
        return list(range(n_files))
    return sorted({int(math.floor(j * n_files / limit)) for j in range(limit)})


def load_eval_images(
    index: FileIndex,
    norm: Normalization,
    masks: MaskIndex | None,
    limit: int,
    log: Callable[[str], None],
) -> list[tuple[PurePosixPath, np.ndarray, np.ndarray | None]]:
    """(relative path, normalised page, mask page or None) for every page of the
    evaluation files; an unreadable evaluation file is reported and replaced by the next
    readable one, so the set keeps its size when it can."""
    out = []
    chosen = eval_subset(len(index), limit)
    for i, stop in zip(chosen, chosen[1:] + [len(index)], strict=True):
        for j in range(i, stop):  # the chosen file, else the next ones up to the next choice
            try:
                pages, mpages = read_pair(index.path(j), index.rel(j), norm, masks)
            except ImageReadError as e:
                log(f"skipped {e}")
                continue
            rel = index.rel(j)
            out.extend((rel, p, None if mpages is None else mpages[q]) for q, p in enumerate(pages))
            break
    if not out:
        raise DataError(f"{index.root}: none of the {len(index)} image files could be read")
    return out
