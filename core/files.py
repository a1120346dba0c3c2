"""Finding image files in folders, and the ground-truth mask that belongs to an image.

One walker serves inference (``seginfer --input DIR``), ground-truth matching
(``--masks DIR``) and training (``segtrain --data DIR``): hidden files and folders
are skipped, and the order is deterministic (sub-folders and names sorted within
each folder), so every process of a run lists the same files in the same order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from unsupseg.core.errors import ImageReadError
from unsupseg.core.imageio import is_image_name


def iter_image_files(root: str | os.PathLike, recursive: bool = True) -> Iterator[str]:
    """Paths relative to ``root`` ("/"-separated) of the image files under it.

    Folder by folder (sub-folders in sorted order, hidden ones skipped), names sorted
    within each folder. Only one folder's names are in memory at a time.
    """
    top = os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        sub = os.path.relpath(dirpath, top)
        prefix = "" if sub == "." else Path(sub).as_posix() + "/"
        for name in sorted(filenames):
            if is_image_name(name):
                yield prefix + name


class MaskIndex:
    """Ground-truth masks under a folder, looked up by relative path or by stem.

    An input ``a/b.jpg`` matches the mask ``a/b.*`` (any image suffix), else the one
    mask named ``b.*`` anywhere under the folder (none when the stem is ambiguous).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ImageReadError(
                f"{self.root}: masks folder not found; pass --masks DIR with ground-truth masks"
            )
        self._by_rel: dict[str, Path] = {}
        self._by_stem: dict[str, list[Path]] = {}
        for rel in iter_image_files(self.root):
            path = self.root / rel
            rel_path = PurePosixPath(rel)
            self._by_rel.setdefault(str(rel_path.with_suffix("")), path)
            self._by_stem.setdefault(rel_path.stem, []).append(path)

    def __len__(self) -> int:
        return len(self._by_rel)

    def find(self, rel: str | PurePosixPath) -> Path | None:
        """Mask for the input at relative path ``rel`` (with "/"), or None."""
        rel = PurePosixPath(rel)
        hit = self._by_rel.get(str(rel.with_suffix("")))
        if hit is not None:
            return hit
        same_stem = self._by_stem.get(rel.stem, [])
        return same_stem[0] if len(same_stem) == 1 else None
