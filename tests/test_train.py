"""segtrain end to end, resume, interruption and bad input."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from unsupseg.train.checkpoint import load_checkpoint
from unsupseg.train.cli import main as segtrain
from unsupseg.train.metrics import batch_iou_any_polarity

TINY = ["--width", "4", "--epochs", "3", "--no-plots", "-q", "--threads", "1"]


@pytest.fixture
def small_npz(tmp_path):
    from unsupseg.core.data import generate, save_npz

    xtr, ytr = generate(96, seed=11)
    xte, yte = generate(32, seed=12)
    p = tmp_path / "small.npz"
    save_npz(p, {"image_train": xtr, "mask_train": ytr, "image_test": xte, "mask_test": yte})
    return p


def test_torch_iou_matches_core_metric():
    from unsupseg.core import iou_any_polarity

    rng = np.random.default_rng(0)
    u = rng.random((5, 1, 9, 7)).astype(np.float32)
    m = rng.random((5, 1, 9, 7)) > 0.6
    m[0] = False  # an empty mask
    got = batch_iou_any_polarity(torch.from_numpy(u), torch.from_numpy(m)).numpy()
    want = [iou_any_polarity(u[i, 0] >= 0.5, m[i, 0]) for i in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.slow
def test_segtrain_end_to_end_writes_the_run_folder(tmp_path, small_npz):
    out = tmp_path / "run"
    r = CliRunner().invoke(
        segtrain,
        [
            "--data",
            str(small_npz),
            "--out",
            str(out),
            "--width",
            "4",
            "--epochs",
            "4",
            "-q",
            "--threads",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "final train IoU:" in r.output and "final test IoU:" in r.output
    for name in ("model.pt", "best.pt", "last.pt", "metrics.csv", "metrics.json", "report.html"):
        assert (out / name).is_file(), name
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("<svg") == 8 and page.count("data:image/png;base64,") == 2 * 10 * 5
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert len(plots) == 10 and "results_test.png" in plots and "iou_train.png" in plots
    summary = json.loads((out / "metrics.json").read_text())
    assert 0 <= summary["final"]["train_iou"] <= 100 and 0 <= summary["final"]["test_iou"] <= 100
    assert f'data-key="test_iou">{summary["final"]["test_iou"]:.4f}<' in page
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5  # header + 4 epochs
    header = rows[0].split(",")
    first, last = (dict(zip(header, map(float, r.split(",")), strict=False)) for r in (rows[1], rows[-1]))
    assert last["train_loss_mean"] < first["train_loss_mean"]  # the loss went down
    ckpt = load_checkpoint(out / "model.pt")  # weights_only=True inside
    assert ckpt["model_config"]["width"] == 4
    assert ckpt["card"]["normalization"]["method"] == "percentile"
    assert ckpt["card"]["test_iou"] == pytest.approx(summary["final"]["test_iou"])


@pytest.mark.slow
def test_interrupt_saves_state_and_resume_finishes(tmp_path, small_npz, monkeypatch):
    import unsupseg.train.loop as loop

    real = loop.train_epoch
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    out = tmp_path / "run"
    monkeypatch.setattr(loop, "train_epoch", flaky)
    r = CliRunner().invoke(segtrain, ["--data", str(small_npz), "--out", str(out), *TINY])
    assert r.exit_code == 130, r.output
    assert "segtrain --out" in r.output and "--resume" in r.output
    assert (out / "last.pt").is_file() and not (out / "model.pt").exists()
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    monkeypatch.setattr(loop, "train_epoch", real)
    r = CliRunner().invoke(segtrain, ["--out", str(out), "--resume", "-q", "--no-plots"])
    assert r.exit_code == 0, r.output
    assert len((out / "metrics.csv").read_text().splitlines()) == 4  # epochs 1..3
    assert load_checkpoint(out / "model.pt")["epoch"] == 3
    # a finished one-cycle schedule cannot be stretched; the message gives the way forward
    r = CliRunner().invoke(segtrain, ["--out", str(out), "--resume", "--epochs", "5", "-q"])
    assert r.exit_code == 2 and "one-cycle" in r.output and "--init-from" in r.output
    assert load_checkpoint(out / "model.pt")["epoch"] == 3


@pytest.mark.slow
def test_folder_training_with_masks(tmp_path):
    import imageio.v3 as iio

    from unsupseg.core.data import generate

    x, m = generate(6, 48, 72, seed=5, quantize=8)
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    for i in range(6):
        iio.imwrite(tmp_path / "img" / f"{i}.png", x[i])
        iio.imwrite(tmp_path / "gt" / f"{i}.png", m[i].astype(np.uint8) * 255)
    out = tmp_path / "run"
    r = CliRunner().invoke(
        segtrain,
        [
            "--data",
            str(tmp_path / "img"),
            "--masks",
            str(tmp_path / "gt"),
            "--out",
            str(out),
            "--crop",
            "32",
            "--samples-per-epoch",
            "64",
            *TINY,
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads((out / "metrics.json").read_text())["final"]["test_iou"] > 0


def _run(args):
    return CliRunner().invoke(segtrain, args)


def test_missing_data_path(tmp_path):
    r = _run(["--data", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "r")])
    assert r.exit_code == 2
    assert "nope.npz: no such file or folder" in r.output


def test_npz_without_keys(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, images=np.zeros((2, 8, 8)))
    r = _run(["--data", str(p), "--out", str(tmp_path / "r")])
    assert r.exit_code == 2
    assert "bad.npz: missing key(s) image_train, mask_train, image_test, mask_test" in r.output
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    r = _run(["--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r")])
    assert r.exit_code == 2
    assert "empty: no images found" in r.output
    assert not (tmp_path / "r").exists()


def test_folder_of_unreadable_images(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.png").write_bytes(b"not a png")
    (tmp_path / "d" / "b.tif").write_bytes(b"")
    r = _run(["--data", str(tmp_path / "d"), "--out", str(tmp_path / "r")])
    assert r.exit_code == 2
    assert "a.png: cannot decode image" in r.output and "b.tif: file is empty" in r.output
    assert "none of the 2 image files gave a usable image" in r.output


def test_existing_run_folder_is_refused(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "model.pt").write_bytes(b"keep me")
    r = _run(["--out", str(out), *TINY])
    assert r.exit_code == 2
    assert "run folder exists and is not empty; pass --overwrite" in r.output
    assert (out / "model.pt").read_bytes() == b"keep me"


def test_resume_without_state(tmp_path):
    r = _run(["--out", str(tmp_path / "r"), "--resume"])
    assert r.exit_code == 2 and "nothing to resume" in r.output


def test_help_has_an_example():
    r = _run(["--help"])
    assert r.exit_code == 0 and "Example:" in r.output and "--preset" in r.output


@pytest.mark.parametrize("kind", ["default", "seed"])
def test_augmentation_moves_image_and_mask_together(kind):
    from unsupseg.train.augment import apply_augment, build_augment

    torch.manual_seed(0)
    t = build_augment(kind)
    base = torch.zeros(1, 16, 16)
    base[:, 2:7, 3:12] = 1.0  # an asymmetric rectangle
    changed = 0
    for _ in range(20):
        inp, img, msk = apply_augment(t, base.clone(), base.clone(), base.bool())
        assert msk.dtype == torch.bool
        assert torch.equal(img, inp)
        assert torch.equal(img > 0.5, msk)
        changed += int(not torch.equal(msk, base.bool()))
    assert changed > 0


def test_noisier_input_is_noisier_but_same_scale():
    from unsupseg.core import Normalization
    from unsupseg.core.data import generate
    from unsupseg.train.folder import noisier_input

    np.random.seed(0)
    x, _ = generate(1, 64, 64, sigma=(0.1, 0.1), seed=1)
    norm = Normalization()
    clean = norm(x[0])
    assert np.array_equal(noisier_input(x[0], norm, 0.0), clean)
    noisy = [noisier_input(x[0], norm, 0.7) for _ in range(10)]
    assert all(n.shape == clean.shape and 0 <= n.min() and n.max() <= 1 for n in noisy)
    assert np.mean([np.abs(n - clean).mean() for n in noisy]) > 0.02


def test_bad_normalisation_is_a_usage_error_and_touches_nothing(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "model.pt").write_bytes(b"keep me")
    r = _run(["--out", str(out), "--overwrite", "--norm-percentiles", "99", "1", *TINY])
    assert r.exit_code == 2 and "need 0 <= low < high <= 100" in r.output
    assert (out / "model.pt").read_bytes() == b"keep me"


@pytest.mark.slow
def test_init_from_starts_at_the_given_weights(tmp_path, small_npz):
    first = tmp_path / "a"
    r = _run(["--data", str(small_npz), "--out", str(first), *TINY])
    assert r.exit_code == 0, r.output
    second = tmp_path / "b"
    # a different --width is overridden by the checkpoint's network
    r = _run(
        [
            "--data",
            str(small_npz),
            "--out",
            str(second),
            "--init-from",
            str(first / "model.pt"),
            "--width",
            "8",
            "--epochs",
            "1",
            "--lr",
            "1e-9",
            "--no-plots",
            "-q",
            "--threads",
            "1",
        ]
    )
    assert r.exit_code == 0, r.output
    a, b = load_checkpoint(first / "model.pt"), load_checkpoint(second / "model.pt")
    assert b["model_config"]["width"] == 4
    # with a vanishing learning rate the conv weights barely move from the source
    for k, v in a["state_dict"].items():
        if k.endswith("weight") and v.ndim == 4:
            torch.testing.assert_close(b["state_dict"][k], v, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_folder_training_does_not_depend_on_reader_processes(tmp_path):
    """Each sample is fixed by its number and the seed: 0 or 2 DataLoader workers, or a
    cache too small to hold anything, give the same weights."""
    from PIL import Image

    from unsupseg.core.data import generate
    from unsupseg.train.config import make_config
    from unsupseg.train.loop import run_training

    x, _ = generate(10, 40, 48, seed=3, quantize=8)
    (tmp_path / "img").mkdir()
    for i in range(10):
        Image.fromarray(x[i]).save(tmp_path / "img" / f"{i}.png")
    states = []
    for workers, cache_mb in ((0, 1024), (2, 1024), (0, 0)):
        cfg = make_config(
            data=str(tmp_path / "img"),
            out=str(tmp_path / f"run{workers}_{cache_mb}"),
            epochs=2,
            width=4,
            batch_size=8,
            crop=32,
            samples_per_epoch=48,
            device="cpu",
            threads=1,
            workers=workers,
            cache_mb=cache_mb,
        )
        result = run_training(cfg, progress=False, plots=False, log=lambda m: None)
        states.append(result.model.state_dict())
    for other in states[1:]:
        assert all(torch.equal(states[0][k], other[k]) for k in states[0])
