"""Streaming training from folders: the on-disk index, the sampler, the crop dataset."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from unsupseg.core import Normalization
from unsupseg.core.data import generate
from unsupseg.core.errors import DataError
from unsupseg.core.files import MaskIndex
from unsupseg.train import folder as folder_mod
from unsupseg.train.folder import (
    EpochSampler,
    FileIndex,
    FolderCropDataset,
    eval_subset,
    load_eval_images,
)


def _write_folder(root, n=6, h=40, w=56, seed=0, masks=None):
    x, m = generate(n, h, w, sigma=(0.05, 0.1), seed=seed, quantize=8, polarity="bright")
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(x[i]).save(root / f"img{i:02d}.png")
        if masks is not None:
            masks.mkdir(parents=True, exist_ok=True)
            Image.fromarray(m[i].astype(np.uint8) * 255).save(masks / f"img{i:02d}.png")
    return x, m


@pytest.fixture
def index_of():
    made = []

    def make(root):
        idx = FileIndex(root)
        made.append(idx)
        return idx

    yield make
    for idx in made:
        idx.close()


def test_index_lists_images_recursively_in_order_and_keeps_them_on_disk(tmp_path, index_of):
    root = tmp_path / "d"
    (root / "b").mkdir(parents=True)
    (root / "a").mkdir()
    (root / ".hidden").mkdir()
    for p in ["z.png", "b/y.tif", "a/x.jpg", "a/ü ber.png", ".hidden/h.png", "notes.txt", ".dot.png"]:
        (root / p).write_bytes(b"x")
    idx = index_of(root)
    rels = [str(idx.rel(i)) for i in range(len(idx))]
    assert rels == ["z.png", "a/x.jpg", "a/ü ber.png", "b/y.tif"]  # per folder: files, then sub-folders
    assert idx.path(2) == root / "a" / "ü ber.png"
    with pytest.raises(IndexError):
        idx.rel(4)
    index_dir = idx._dir
    assert (index_dir / "offsets.bin").stat().st_size == 8 * 5  # one int64 per file, plus the end
    idx.close()
    assert not index_dir.exists()


def test_index_of_an_empty_folder_is_an_error_and_leaves_nothing(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "readme.txt").write_text("no images")
    before = set(os.listdir(tempfile.gettempdir()))
    with pytest.raises(DataError, match="no images found"):
        FileIndex(tmp_path / "e")
    after = set(os.listdir(tempfile.gettempdir()))
    assert not [d for d in after - before if d.startswith("unsupseg-index-")]


def test_sampler_walks_a_permutation_across_epochs():
    s = EpochSampler(n_files=10, length=4, seed=3)
    seen = []
    for epoch in range(5):
        s.set_epoch(epoch)
        keys = list(s)
        assert len(keys) == len(s) == 4
        assert [k for _, k in keys] == list(range(4 * epoch, 4 * epoch + 4))
        seen += [i for i, _ in keys]
    assert sorted(seen[:10]) == list(range(10))  # every file once before any repeats
    assert sorted(seen[10:20]) == list(range(10))
    assert seen[:10] != seen[10:20]  # a fresh permutation each pass
    again = EpochSampler(10, 4, seed=3)
    again.set_epoch(2)
    assert [i for i, _ in again] == seen[8:12]


def test_sampler_ranks_share_the_single_process_stream():
    single = EpochSampler(7, 12, seed=1)
    ranks = [EpochSampler(7, 12, seed=1, rank=r, world=3) for r in range(3)]
    for epoch in (0, 3):
        single.set_epoch(epoch)
        for r in ranks:
            r.set_epoch(epoch)
        parts = [list(r) for r in ranks]
        assert all(len(p) == 4 for p in parts)
        merged = sorted(key for p in parts for key in p)
        assert merged == sorted(single)  # disjoint and complete
    with pytest.raises(ValueError, match="cannot be shared"):
        EpochSampler(7, 2, seed=1, world=3)


def test_eval_subset_spreads_over_the_folder():
    assert eval_subset(5, 100) == [0, 1, 2, 3, 4]
    sub = eval_subset(1000, 10)
    assert len(sub) == 10 and sub[0] == 0 and sub[-1] == 900


def _dataset(idx, **kw):
    args = dict(crop=32, norm=Normalization(), augment="default", input_noise=0.7, seed=0, log=lambda m: None)
    args.update(kw)
    return FolderCropDataset(idx, **args)


def test_samples_are_determined_by_their_key(tmp_path, index_of):
    _write_folder(tmp_path / "d")
    idx = index_of(tmp_path / "d")
    a, b = _dataset(idx), _dataset(idx)
    for key in [(0, 0), (3, 17), (5, 123456)]:
        for ta, tb in zip(a[key], b[key], strict=True):
            assert torch.equal(ta, tb)
    inp0, img0, _ = a[(2, 5)]
    inp1, img1, _ = a[(2, 6)]
    assert img0.shape == (1, 32, 32) and inp0.shape == (1, 32, 32)
    assert not torch.equal(inp0, inp1)  # another sample number: another crop / noise draw
    assert not torch.equal(inp0, img0)  # the input is the noisier view
    c = _dataset(idx, seed=1)
    assert not torch.equal(c[(2, 5)][0], inp0)  # the run's seed matters too


def test_crops_come_with_their_masks(tmp_path, index_of):
    _write_folder(tmp_path / "d", masks=tmp_path / "gt")
    idx = index_of(tmp_path / "d")
    ds = _dataset(idx, input_noise=0.0, masks=MaskIndex(tmp_path / "gt"))
    for k in range(20):
        inp, img, msk = ds[(k % len(idx), k)]
        assert torch.equal(inp, img)
        assert msk.any() or not (img > 0.5).any()
        assert (msk == (img > 0.5)).float().mean() > 0.95  # bright objects are the mask


def test_small_and_multipage_images(tmp_path, index_of):
    root = tmp_path / "d"
    root.mkdir()
    stack = np.full((3, 20, 24), 100, np.uint16)
    for p in range(3):  # the bright square moves from page to page
        stack[p, 2 + 5 * p : 8 + 5 * p, 3 : 9 + 4 * p] = 900
    tifffile.imwrite(root / "stack.tif", stack, photometric="minisblack")
    idx = index_of(root)
    ds = _dataset(idx, augment="none", input_noise=0.0, crop=32)
    norm = Normalization()
    pages = [np.pad(norm(page), ((0, 12), (0, 8)), mode="reflect") for page in stack]
    seen = set()
    for k in range(30):
        img = ds[(0, k)][1]
        assert img.shape == (1, 32, 32)  # reflected up to the crop
        seen |= {p for p, ref in enumerate(pages) if np.array_equal(img[0].numpy(), ref)}
    assert seen == {0, 1, 2}  # every page is sampled


def test_unreadable_files_are_reported_once_and_skipped(tmp_path, index_of):
    _write_folder(tmp_path / "d", n=3)
    (tmp_path / "d" / "img01.png").write_bytes(b"\x89PNG\r\n garbage")
    idx = index_of(tmp_path / "d")
    logged = []
    ds = _dataset(idx, log=logged.append)
    good = ds[(2, 7)]
    sample = ds[(1, 7)]  # the broken file: its samples come from the next file
    assert all(torch.equal(x, y) for x, y in zip(sample, good, strict=True))
    ds[(1, 8)]
    assert len(logged) == 1 and "img01.png" in logged[0] and "cannot decode" in logged[0]

    all_bad = tmp_path / "bad"
    all_bad.mkdir()
    (all_bad / "a.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="none of the 1 image files could be read"):
        _dataset(index_of(all_bad))[(0, 0)]


def test_cache_is_bounded_and_saves_reads(tmp_path, index_of, monkeypatch):
    _write_folder(tmp_path / "d", n=6, h=64, w=64)  # 16 KiB per normalised image
    idx = index_of(tmp_path / "d")
    reads = []
    real = folder_mod.read_image
    monkeypatch.setattr(folder_mod, "read_image", lambda p: reads.append(p) or real(p))
    roomy = _dataset(idx, cache_mb=1)
    for k in range(60):
        roomy[(k % 6, k)]
    assert len(reads) == 6  # each file decoded once
    reads.clear()
    tight = _dataset(idx, cache_mb=40 / 1024)  # room for two images
    for k in range(60):
        tight[(k % 6, k)]
        assert tight._cached <= tight.cache_bytes
    assert len(tight._cache) == 2 and len(reads) == 60  # round robin over 6 > 2: every read misses


def test_eval_images_replace_unreadable_ones(tmp_path, index_of):
    _write_folder(tmp_path / "d", n=6, masks=tmp_path / "gt")
    (tmp_path / "d" / "img00.png").write_bytes(b"junk")
    idx = index_of(tmp_path / "d")
    logged = []
    evals = load_eval_images(idx, Normalization(), MaskIndex(tmp_path / "gt"), limit=3, log=logged.append)
    assert [str(r) for r, _, _ in evals] == ["img01.png", "img02.png", "img04.png"]
    assert all(m is not None and m.shape == im.shape for _, im, m in evals)
    assert len(logged) == 1 and "img00.png" in logged[0]


def test_dataset_survives_pickling_for_spawned_workers(tmp_path, index_of):
    """DataLoader workers started with "spawn" (macOS, Windows) receive a pickled copy."""
    import pickle

    _write_folder(tmp_path / "d")
    idx = index_of(tmp_path / "d")
    ds = _dataset(idx, log=lambda m: None)  # a lambda does not pickle; the copy logs to stderr
    copy = pickle.loads(pickle.dumps(ds))
    for a, b in zip(ds[(4, 9)], copy[(4, 9)], strict=True):
        assert torch.equal(a, b)
