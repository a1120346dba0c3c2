"""Segmenter API, tiling, polarity and device choice (no torch: the ONNX model is built in conftest)."""

from __future__ import annotations

import numpy as np
import pytest

from unsupseg.core.errors import DeviceError, ImageReadError, ModelFileError
from unsupseg.core.metrics import iou
from unsupseg.core.padding import pad_to_multiple
from unsupseg.core.polarity import apply_polarity
from unsupseg.infer import Segmenter
from unsupseg.infer.model.segmenter import default_model_path
from unsupseg.infer.model.session import cuda_problem, parse_device
from unsupseg.infer.model.tiles import RowBlender, TileBlender, TiledPages, TileGrid, tile_starts


@pytest.fixture(scope="module")
def segmenter(infer_model_path):
    return Segmenter(infer_model_path, device="cpu", threads=1)


def _record_runs(seg, monkeypatch) -> list[tuple[int, ...]]:
    """Record the input shape of every onnxruntime call."""
    shapes = []
    run = seg.session.run

    def spy(batch):
        shapes.append(batch.shape)
        return run(batch)

    monkeypatch.setattr(seg.session, "run", spy)
    return shapes


def test_card_and_provider(segmenter):
    assert segmenter.card.arch == "test-mean"
    assert segmenter.provider == "CPUExecutionProvider"
    assert segmenter.device == "cpu"
    assert segmenter.threshold == 0.5
    assert segmenter.foreground == "bright"


@pytest.mark.parametrize("shape", [(37, 53), (53, 37), (4, 4), (8, 8), (129, 65), (64, 64)])
def test_predict_any_size(segmenter, infer_disk_image, shape):
    image, truth = infer_disk_image(*shape, seed=1)
    mask, prob = segmenter.predict(image * 1000 + 7)  # any range: the model card normalises
    assert mask.shape == prob.shape == shape
    assert mask.dtype == bool and prob.dtype == np.float32
    assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1
    if min(shape) >= 32:
        assert iou(mask, truth) > 0.9


def test_predict_pages(segmenter, infer_disk_image):
    pages = np.stack([infer_disk_image(40, 48, seed=s)[0] for s in range(3)])
    mask, prob = segmenter.predict(pages)
    assert mask.shape == prob.shape == (3, 40, 48)
    for i in range(3):  # each page as if alone
        np.testing.assert_array_equal(mask[i], segmenter.predict(pages[i])[0])


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((1, 1)), "smaller than the minimum"),
        (np.full((16, 16), np.nan), "NaN or Inf"),
        (np.zeros((2, 3, 16, 16)), "got shape"),
        (np.zeros((16, 16, 3)), "colour image"),
    ],
    ids=["1x1", "nan", "4d", "rgb"],
)
def test_predict_rejects(segmenter, bad, match):
    with pytest.raises(ImageReadError, match=match):
        segmenter.predict(bad)


def test_batches_same_shapes_together(segmenter, infer_disk_image, monkeypatch):
    shapes = _record_runs(segmenter, monkeypatch)
    seg_images = [infer_disk_image(37, 53, seed=s)[0] for s in range(5)] + [infer_disk_image(20, 20)[0]]
    items = [(i, segmenter.prepare(im[None])) for i, im in enumerate(seg_images)]
    out = dict(segmenter.predict_stream(items))
    assert sorted(out) == list(range(6))
    # 37x53 pads to 40x56: five pages in one call (batch 8); 20x20 -> 24x24 alone.
    assert sorted(shapes) == [(1, 1, 24, 24), (5, 1, 40, 56)]


@pytest.mark.parametrize(
    "length, tile, overlap", [(100, 100, 8), (1000, 256, 32), (264, 128, 16), (129, 64, 8)]
)
def test_tile_starts_cover(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, dtype=bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all() and starts[-1] + tile == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_blender_constant_is_exact():
    grid = TileGrid.for_shape(200, 264, tile_size=64, overlap=16, multiple=8)
    blender = TileBlender(grid)
    for y, x in grid:
        blender.add(y, x, np.full((grid.tile_h, grid.tile_w), 0.25, np.float32))
    np.testing.assert_allclose(blender.result(), 0.25, rtol=1e-6)


def test_tiled_matches_untiled(infer_model_path, infer_disk_image, monkeypatch):
    image, truth = infer_disk_image(600, 700, seed=3)
    whole = Segmenter(infer_model_path, device="cpu", tile_size=1024)
    tiled = Segmenter(infer_model_path, device="cpu", tile_size=128, tile_overlap=16, batch_size=4)
    shapes = _record_runs(tiled, monkeypatch)
    m1, p1 = whole.predict(image)
    m2, p2 = tiled.predict(image)
    assert max(s[2] for s in shapes) <= 128 and max(s[3] for s in shapes) <= 128  # memory bounded by the tile
    assert max(s[0] for s in shapes) <= 4
    inner = np.s_[8:-8, 8:-8]  # away from the image border
    diff = np.abs(p1[inner] - p2[inner]).max()
    print(f"max |tiled - untiled| prob difference away from borders: {diff:.4f}")
    assert diff < 0.05
    assert (m1[inner] != m2[inner]).mean() < 1e-3
    assert iou(m2, truth) > 0.95


def test_pad_to_multiple_reflects():
    a = np.arange(5 * 6, dtype=np.float32).reshape(5, 6)
    p = pad_to_multiple(a, 8)
    assert p.shape == (8, 8)
    np.testing.assert_array_equal(p[:5, :6], a)
    np.testing.assert_array_equal(p[5, :6], a[3])  # reflection, not zeros


@pytest.mark.parametrize("rule", ["bright", "dark", "model"])
def test_polarity_rules(rule):
    norm = np.zeros((16, 16), np.float32)
    norm[4:12, 4:12] = 1.0  # a bright square
    prob = np.where(norm > 0, 0.1, 0.9).astype(np.float32)  # the network calls the *dark* part region 1
    mask, fg_prob = apply_polarity(norm, prob, 0.5, rule)
    expected = {"bright": norm > 0, "dark": norm == 0, "model": prob > 0.5}[rule]
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(fg_prob > 0.5, expected)  # prob is that of the foreground


def test_threshold_and_foreground_override(infer_model_path, infer_disk_image):
    image, truth = infer_disk_image(64, 64, seed=2)
    seg = Segmenter(infer_model_path, device="cpu", threshold=0.3, foreground="dark")
    assert seg.threshold == 0.3
    mask, _ = seg.predict(image)
    assert iou(mask, ~truth) > 0.9


@pytest.mark.parametrize("text, kind, index", [("auto", "auto", 0), ("CPU", "cpu", 0), ("cuda:2", "cuda", 2)])
def test_parse_device(text, kind, index):
    d = parse_device(text)
    assert (d.kind, d.index) == (kind, index)


@pytest.mark.parametrize("text", ["gpu", "cuda:", "cuda:x", "tpu:0"])
def test_parse_device_rejects(text):
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        parse_device(text)


@pytest.mark.skipif(cuda_problem() is None, reason="a working CUDA GPU is present")
def test_cuda_unavailable_is_an_error(infer_model_path):
    with pytest.raises(DeviceError, match="cannot run: .*--device cpu"):
        Segmenter(infer_model_path, device="cuda")


def test_auto_falls_back_to_a_working_provider(infer_model_path):
    seg = Segmenter(infer_model_path, device="auto")
    expected = "CPUExecutionProvider" if cuda_problem() else "CUDAExecutionProvider"
    assert seg.provider == expected


def test_missing_default_model_says_how_to_fix(tmp_path, monkeypatch):
    import unsupseg.infer.model.segmenter as api

    assert default_model_path().is_file()  # shipped with the package
    monkeypatch.setattr(api.resources, "files", lambda package: tmp_path)  # a package without it
    with pytest.raises(ModelFileError, match="make model") as e:
        default_model_path()
    assert "--model" in str(e.value)


@pytest.mark.parametrize(
    "content, match", [(b"not onnx", "cannot load this model"), (None, "not an unsupseg")]
)
def test_bad_model_files(tmp_path, content, match):
    path = tmp_path / "m.onnx"
    if content is None:  # a valid ONNX file without the unsupseg metadata
        import onnx
        from onnx import TensorProto, helper

        v = [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1, "H", "W"]) for n in ("image", "prob")
        ]
        graph = helper.make_graph([helper.make_node("Sigmoid", ["image"], ["prob"])], "g", v[:1], v[1:])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), path)
    else:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=match):
        Segmenter(path, device="cpu")


@pytest.mark.skipif(cuda_problem() is not None, reason="no working CUDA GPU here")
def test_cuda_matches_cpu(infer_model_path, infer_disk_image):
    image, _ = infer_disk_image(300, 420, seed=4)
    gpu = Segmenter(infer_model_path, device="cuda")
    assert gpu.provider == "CUDAExecutionProvider" and gpu.device == "cuda:0"
    m_cpu, p_cpu = Segmenter(infer_model_path, device="cpu").predict(image)
    m_gpu, p_gpu = gpu.predict(image)
    diff = np.abs(p_cpu - p_gpu).max()
    print(f"max |cuda - cpu| probability difference: {diff:.2e}")
    assert diff < 1e-4 and (m_cpu != m_gpu).mean() < 1e-4


def test_io_binding_equals_plain_run(infer_model_path):
    """I/O binding (CUDA's default) on the CPU: the same outputs as session.run for several batch
    shapes, buffers reused per shape, and no output aliased by the next call."""
    from unsupseg.infer.model.session import OnnxSession

    plain = OnnxSession(infer_model_path, device="cpu", threads=1)
    bound = OnnxSession(infer_model_path, device="cpu", threads=1, io_binding=True)
    assert bound.io_binding and not plain.io_binding
    rng = np.random.default_rng(3)
    outs = []
    for shape in [(8, 1, 64, 64), (3, 1, 40, 72), (8, 1, 64, 64), (1, 1, 64, 64)]:
        x = rng.random(shape, dtype=np.float32)
        got = bound.run(x)
        assert np.array_equal(got, plain.run(x)), shape
        outs.append((got.copy(), got))
    assert all(np.array_equal(copy, kept) for copy, kept in outs)  # later calls did not overwrite them
    assert len(bound._bound.buffers) == 3  # one set of buffers per batch shape


def test_segmenter_runs_through_a_given_session(infer_model_path, infer_disk_image):
    """Segmenter(session=...) runs the model through that object (a worker's proxy for a served
    model) with the same masks."""
    from unsupseg.infer.model.session import OnnxSession

    inner = OnnxSession(infer_model_path, device="cpu", threads=1)
    calls = []

    class Proxy:
        card, provider, device, threads, fallback_reason, path = (
            inner.card,
            "Served",
            "cuda:0",
            1,
            None,
            inner.path,
        )

        def run(self, batch):
            calls.append(batch.shape)
            return inner.run(batch)

    image, _ = infer_disk_image(64, 80, seed=2)
    seg = Segmenter(infer_model_path, device="cpu", session=Proxy())
    mask, prob = seg.predict(image)
    want_mask, want_prob = Segmenter(infer_model_path, device="cpu", threads=1).predict(image)
    assert calls and seg.provider == "Served" and seg.device == "cuda:0"
    assert np.array_equal(mask, want_mask) and np.array_equal(prob, want_prob)


# -- bounded memory for large images: tiles normalised as cut, rows blended in a band ---------------
def _whole_image_blend(seg: Segmenter, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The previous algorithm: normalise the whole image, pad, blend every tile into
    full-size accumulators (TileBlender), then apply the polarity rule to the whole page."""
    norm = seg.card.normalization(image)
    h, w = norm.shape
    grid = seg.grid(h, w)
    padded = pad_to_multiple(norm, seg.multiple)
    blender = TileBlender(grid)
    starts = list(grid)
    step = seg.batch_for(grid.tile_h, grid.tile_w)
    for k in range(0, len(starts), step):
        chunk = starts[k : k + step]
        tiles = np.stack([padded[y : y + grid.tile_h, x : x + grid.tile_w] for y, x in chunk])
        for (y, x), prob in zip(chunk, seg.session.run(tiles[:, None])[:, 0], strict=True):
            blender.add(y, x, prob)
    return apply_polarity(norm, blender.result()[:h, :w], seg.threshold, seg.foreground)


@pytest.mark.parametrize("shape, tile, overlap, batch", [((300, 437), 128, 16, 4), ((250, 203), 64, 8, 3)])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_tiled_band_equals_whole_image_blend(
    infer_model_path, infer_disk_image, shape, tile, overlap, batch, dtype
):
    image, _ = infer_disk_image(*shape, seed=7)
    if dtype != "float32":
        image = (np.clip(image, 0, 1) * np.iinfo(dtype).max).astype(dtype)
    seg = Segmenter(infer_model_path, device="cpu", tile_size=tile, tile_overlap=overlap, batch_size=batch)
    prepared = seg.prepare(image[None])
    assert isinstance(prepared, TiledPages)  # no float32 copy of the image
    assert prepared.raw.dtype == image.dtype
    want_mask, want_prob = _whole_image_blend(seg, image)
    mask, prob = seg.predict(image)
    np.testing.assert_array_equal(prob, want_prob)  # the same float32 values, not just close
    np.testing.assert_array_equal(mask, want_mask)
    ((_, (mask2, prob2)),) = seg.predict_stream([(0, prepared)], with_prob=False)
    assert prob2 is None
    np.testing.assert_array_equal(mask2[0], want_mask)


def test_tiled_dark_polarity_and_pages(infer_model_path, infer_disk_image):
    pages = np.stack([infer_disk_image(200, 150, seed=s)[0] for s in range(2)])
    pages = (np.clip(pages, 0, 1) * 255).astype(np.uint8)
    seg = Segmenter(infer_model_path, device="cpu", tile_size=64, tile_overlap=8, foreground="dark")
    mask, prob = seg.predict(pages)
    for i in range(2):
        want_mask, want_prob = _whole_image_blend(seg, pages[i])
        np.testing.assert_array_equal(mask[i], want_mask)
        np.testing.assert_array_equal(prob[i], want_prob)
        assert mask[i].mean() > 0.5  # the dark background is the foreground


def test_row_blender_equals_tile_blender():
    rng = np.random.default_rng(0)
    grid = TileGrid.for_shape(200, 264, tile_size=64, overlap=16, multiple=8)
    whole = TileBlender(grid)
    band = RowBlender(grid, grid.tile_h)
    rows = []
    starts = list(grid)
    for k, (y, x) in enumerate(starts):
        prob = rng.random((grid.tile_h, grid.tile_w), dtype=np.float32)
        whole.add(y, x, prob)
        band.add(y, x, prob)
        nxt = starts[k + 1][0] if k + 1 < len(starts) else grid.height
        if nxt > band.base:
            rows.append(band.pop(band.base, nxt))
    np.testing.assert_array_equal(np.concatenate(rows), whole.result())
    assert band.acc.shape == (grid.tile_h, grid.width)  # never more than one row of tiles
    with pytest.raises(ValueError, match="in order"):
        band.pop(0, 8)


# -- clean-up after the foreground rule ------------------------------------------------------------
def _ring_and_speck(h: int = 96, w: int = 112) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bright ring (its hole dark), a 4x4 bright speck: (image, ring mask, hole mask)."""
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - 48, xx - 50)
    ring, hole = (r >= 12) & (r <= 26), r < 12
    speck = np.zeros((h, w), bool)
    speck[78:82, 98:102] = True
    image = np.where(ring | speck, 0.9, 0.1).astype(np.float32)
    return image, ring, hole


@pytest.mark.parametrize("tile", [1024, 64], ids=["whole", "tiled"])
def test_cleanup_fills_holes_and_drops_specks(infer_model_path, tile):
    image, ring, hole = _ring_and_speck()
    plain = Segmenter(infer_model_path, device="cpu", tile_size=tile, tile_overlap=8)
    mask, _ = plain.predict(image)
    assert mask[80, 100] and not mask[48, 50]  # the speck is there, the hole is background
    seg = Segmenter(
        infer_model_path, device="cpu", tile_size=tile, tile_overlap=8, min_size=20, fill_holes=True
    )
    cleaned, prob = seg.predict(image)
    assert mask[78:82, 98:102].sum() < 20 and not cleaned[78:82, 98:102].any()  # a speck: dropped
    assert cleaned[hole].all()  # the hole is filled
    assert (cleaned[ring] == mask[ring]).all()
    np.testing.assert_array_equal(prob, plain.predict(image)[1])  # the probability is untouched


def test_cleanup_min_size_counts_pixels(infer_model_path):
    image = np.full((64, 64), 0.1, np.float32)
    image[10:14, 10:14] = 0.9  # a 4x4 square: 12 pixels pass the 3x3 mean (its corners do not)
    image[40:46, 40:46] = 0.9  # 6x6: 32 pixels
    image[20:34, 40:54] = 0.9  # a large object, so that the other two are small
    mask = Segmenter(infer_model_path, device="cpu").predict(image)[0]
    assert mask[10:14, 10:14].sum() == 12
    keep = Segmenter(infer_model_path, device="cpu", min_size=12).predict(image)[0]
    drop = Segmenter(infer_model_path, device="cpu", min_size=13).predict(image)[0]
    assert keep[11, 11] and not drop[11, 11] and drop[42, 42]


# -- the label-free default rule: objects touch the frame less and cover less --------------------
@pytest.mark.parametrize("rule", ["auto", "border", "minority"])
@pytest.mark.parametrize("objects", ["bright", "dark"])
def test_shape_rules_pick_the_objects_of_either_polarity(infer_model_path, infer_disk_image, rule, objects):
    image, truth = infer_disk_image(96, 80, seed=5)
    if objects == "dark":
        image = 1.0 - image  # dark disks on a bright background: the network's region 1 is the background
    mask, prob = Segmenter(infer_model_path, device="cpu", foreground=rule).predict(image)
    assert iou(mask, truth) > 0.9
    assert ((prob >= 0.5) == mask).all()  # the probability is that of the foreground


def test_auto_takes_the_stronger_share():
    """A large central object (covers more than half, never touches the frame) is the foreground;
    a thin frame-wide grid that covers little is too."""
    norm = np.zeros((40, 40), np.float32)
    norm[3:37, 3:37] = 1.0  # 72% of the image, no border pixel
    prob = np.where(norm > 0, 0.9, 0.1).astype(np.float32)
    assert apply_polarity(norm, prob, 0.5, "auto")[0][20, 20]
    assert not apply_polarity(norm, prob, 0.5, "minority")[0][20, 20]
    grid = np.zeros((40, 40), bool)
    grid[::8, :] = grid[:, ::8] = True  # 23% of the pixels, 56% of the border
    prob = np.where(grid, 0.9, 0.1).astype(np.float32)
    assert apply_polarity(grid.astype(np.float32), prob, 0.5, "auto")[0][8, 3]
    assert not apply_polarity(grid.astype(np.float32), prob, 0.5, "border")[0][8, 3]


@pytest.mark.parametrize("seed", range(5))
def test_region_sums_band_by_band_equal_whole_page(seed):
    from unsupseg.core.polarity import RegionSums

    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(4, 60)), int(rng.integers(1, 60))
    norm = rng.random((h, w), dtype=np.float32)
    region = rng.random((h, w)) < rng.random()
    whole = RegionSums()
    whole.add(norm, region)
    banded = RegionSums()
    cuts = sorted({0, h, *rng.integers(1, h, size=3).tolist()})
    for y0, y1 in zip(cuts, cuts[1:], strict=False):
        banded.add(norm[y0:y1], region[y0:y1], y0, h)
    assert (banded.n, banded.n_in, banded.border, banded.border_in) == (
        whole.n,
        whole.n_in,
        whole.border,
        whole.border_in,
    )
    frame = np.zeros((h, w), bool)
    frame[[0, -1], :] = frame[:, [0, -1]] = True
    assert (whole.border, whole.border_in) == (frame.sum(), (region & frame).sum())


@pytest.mark.parametrize("rule", ["auto", "border", "minority"])
def test_tiled_shape_rules_equal_whole_image(infer_model_path, infer_disk_image, rule):
    image, _ = infer_disk_image(300, 230, seed=8)
    image = 1.0 - image  # dark objects
    seg = Segmenter(infer_model_path, device="cpu", tile_size=64, tile_overlap=8, foreground=rule)
    want_mask, want_prob = _whole_image_blend(seg, image)
    mask, prob = seg.predict(image)
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_array_equal(prob, want_prob)


def test_region_sums_for_a_shares_rule_skip_the_intensities_and_say_so():
    from unsupseg.core.polarity import RegionSums

    rng = np.random.default_rng(1)
    norm, region = rng.random((20, 30), dtype=np.float32), rng.random((20, 30)) < 0.3
    full, lean = RegionSums(), RegionSums.for_rule("auto")
    full.add(norm, region)
    lean.add(norm, region)
    assert all(full.flip(rule) == lean.flip(rule) for rule in ("auto", "border", "minority", "model"))
    assert lean.sum_in == lean.total == 0.0 and full.total > 0
    assert RegionSums.for_rule("bright").intensity
    with pytest.raises(ValueError, match="for_rule"):
        lean.flip("bright")
