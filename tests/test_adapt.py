"""Label-free adaptation (segtrain --data DIR): the local-fit energy, the split, the run folder."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from unsupseg.train.adapt import AdaptConfig, split_images
from unsupseg.train.checkpoint import load_checkpoint
from unsupseg.train.cli import main as segtrain
from unsupseg.train.local_loss import energy, gaussian_blur, local_fidelity
from unsupseg.train.loss import fidelity as global_fidelity
from unsupseg.train.loss import total_variation


@pytest.mark.parametrize("sigma", [1.5, 8.0])  # the convolution and the FFT branch
@pytest.mark.parametrize("shape", [(40, 56), (9, 70)])
def test_gaussian_blur_is_scipys_with_zero_padding(sigma, shape):
    from scipy import ndimage

    x = np.random.default_rng(0).random(shape).astype(np.float32)
    got = gaussian_blur(torch.from_numpy(x)[None, None], sigma)[0, 0].numpy()
    r = int(np.ceil(3 * sigma))
    # Ours cuts the window to the image (sigma 8 on 9 rows: 17 of 49 taps); with zero padding the
    # taps cut off never meet a pixel, so scipy's uncut window gives the same values.
    want = ndimage.gaussian_filter(x, sigma, mode="constant", truncate=r / sigma)
    np.testing.assert_allclose(got, want, atol=2e-6)


def _two_brightness_image(h=64, w=96):
    """A background rising from 0.1 (left) to 0.6 (right), a bright object (1.0) on the right and a
    dim one on the left, 0.25 above its surroundings but darker than the right half."""
    yy, xx = np.mgrid[:h, :w]
    image = 0.1 + 0.5 * xx / w
    bright = (yy - 32) ** 2 + (xx - 75) ** 2 < 100
    dim = (yy - 32) ** 2 + (xx - 20) ** 2 < 100
    image = np.where(bright, 1.0, np.where(dim, image + 0.25, image))
    return torch.from_numpy(image.astype(np.float32))[None, None], bright | dim, bright


def test_local_fit_keeps_dim_objects_the_global_fit_drops():
    """The point of the local fit: 'both objects' is cheaper than 'the bright one only', while one
    mean per region prefers splitting bright from the rest."""
    image, objects, bright = _two_brightness_image()
    u_objects = torch.from_numpy(objects.astype(np.float32))[None, None]
    u_bright = torch.from_numpy(bright.astype(np.float32))[None, None]
    assert local_fidelity(image, u_objects, 8.0) < local_fidelity(image, u_bright, 8.0)
    assert global_fidelity(image, u_bright) < global_fidelity(image, u_objects)
    want = global_fidelity(image, u_objects) + 0.05 * total_variation(u_objects)
    assert torch.allclose(energy(image, u_objects, 0.05, None), want)


def test_local_fidelity_gradients_are_finite_for_empty_regions():
    image = torch.rand(2, 1, 32, 32)
    u = torch.zeros(2, 1, 32, 32, requires_grad=True)  # region 1 empty everywhere
    local_fidelity(image, u, 8.0).sum().backward()
    assert torch.isfinite(u.grad).all()


@pytest.mark.parametrize("n, held", [(1, [0]), (4, [3]), (10, [4, 9]), (12, [4, 9])])
def test_every_fifth_image_is_held_aside(n, held):
    train, got = split_images(n, 5)
    assert got == held
    assert sorted(train + ([] if n == 1 else got)) == list(range(n))


def _folder(root, n=6, size=(72, 88)):
    """Images with bright disks of two brightnesses on a background with a gradient, and masks."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        m = np.zeros(size, bool)
        image = 0.1 + 0.2 * xx / w + rng.normal(0, 0.05, size)
        for level in (0.7, 0.35):
            cy, cx, r = rng.uniform(15, h - 15), rng.uniform(15, w - 15), rng.uniform(6, 12)
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            image, m = image + level * (disk & ~m), m | disk
        iio.imwrite(root / "images" / f"im{i}.png", (np.clip(image, 0, 1) * 255).astype(np.uint8))
        iio.imwrite(root / "masks" / f"im{i}.png", m.astype(np.uint8) * 255)
    return root / "images", root / "masks"


@pytest.mark.slow
def test_segtrain_data_dir_adapts_and_writes_a_run_folder(tmp_path, tiny_checkpoint):
    """No training option: the adapt preset (started here from a tiny model with --init-from)."""
    images, masks = _folder(tmp_path)
    out = tmp_path / "run"
    args = ["--data", images, "--masks", masks, "--out", out, "--init-from", tiny_checkpoint("unet", 4)]
    r = CliRunner().invoke(segtrain, [*map(str, args), "--threads", "1", "--seed", "3"])
    assert r.exit_code == 0, r.output
    assert "adapting" in r.output and "held aside" in r.output
    ckpt = load_checkpoint(out / "model.pt")
    card = ckpt["card"]
    assert card["normalization"]["log_k"] == AdaptConfig.norm_log
    assert ckpt["train_config"]["preset"] == "adapt"
    summary = json.loads((out / "metrics.json").read_text())
    orient = summary["adaptation"]["orientation"]
    assert card["polarity"] == ("model" if orient["fixed"] else "auto")
    assert orient["fixed"] == (orient["consistency"] >= AdaptConfig.orientation_consistency)
    # a range only: the 2-epoch width-4 start model misses the objects here (IoU ~0 as written); the
    # floor of a real adaptation is in tests/test_adapt_real.py
    assert 0 <= summary["final"]["iou_as_written"] <= 100
    cands = summary["adaptation"]["candidates"]
    assert [c["step"] for c in cands] == [0, 40, 80, 120, 160]
    assert all(0 <= c["agreement"] <= 1 for c in cands) and cands[0]["agreement"] == 1
    kept = [c for c in cands if c["step"] > 0 and c["agreement"] >= AdaptConfig.min_agreement]
    chosen = min(kept, key=lambda c: c["criterion"]) if kept else cands[0]  # the label-free choice
    assert summary["final"]["epoch"] == chosen["step"] == ckpt["epoch"]
    assert [c["chosen"] for c in cands] == [int(c is chosen) for c in cands]
    assert all(0 <= c["iou_as_written"] <= 100 for c in cands)  # --masks scores every candidate
    assert summary["final"]["test_iou"] == chosen["test_iou"]
    assert (out / "metrics.csv").read_text().count("\n") == len(cands) + 1
    assert (out / "plots" / "criterion.png").is_file() and (out / "plots" / "results.png").is_file()
    start = load_checkpoint(tiny_checkpoint("unet", 4))["state_dict"]
    changed = any(not torch.equal(start[k], v) for k, v in ckpt["state_dict"].items())
    assert changed == (chosen["step"] > 0)  # a trained snapshot, or the start model's weights


class _Switch:
    """Stands in for the network: load_state_dict selects which prepared masks come out."""

    def __init__(self):
        self.state = "start"

    def load_state_dict(self, state):
        self.state = state


def _choose(monkeypatch, masks_by_state, criteria):
    from unsupseg.train import adapt_run
    from unsupseg.train.adapt import Candidate, FolderImages

    model = _Switch()
    monkeypatch.setattr(adapt_run, "_masks_of", lambda m, *a: masks_by_state[m.state])
    images = FolderImages(raw=[], masks=[None, None], train=[0], held=[1])
    start = Candidate(0, 1.0, "start")
    cands = [Candidate(40 * (k + 1), c, f"s{k}") for k, c in enumerate(criteria)]
    best = adapt_run.choose(
        model, start, masks_by_state["start"], cands, images, AdaptConfig(data="."), "cpu", print
    )
    return best, cands


def test_the_collapse_guard_refuses_a_snapshot_that_loses_an_image(monkeypatch):
    """The lowest criterion loses when its mask of one image no longer agrees with the start's."""
    rng = np.random.default_rng(0)
    objects = [rng.random((32, 32)) > 0.7 for _ in range(2)]
    refined = [m.copy() for m in objects]
    refined[0][:4] = ~refined[0][:4]  # a small change: still agrees
    collapsed = [objects[0], np.zeros((32, 32), bool) | (np.arange(32)[:, None] < 16)]  # image 2 lost
    best, cands = _choose(monkeypatch, {"start": objects, "s0": collapsed, "s1": refined}, [0.1, 0.2])
    assert best is cands[1] and cands[0].agreement < AdaptConfig.min_agreement <= cands[1].agreement


def test_when_every_snapshot_collapses_the_start_model_is_kept(monkeypatch):
    objects = [np.eye(32, dtype=bool) | np.eye(32, k=1, dtype=bool)]
    half = [np.arange(32)[:, None] < np.full((32, 32), 16)]
    best, cands = _choose(monkeypatch, {"start": objects, "s0": half, "s1": half}, [0.1, 0.2])
    assert best.step == 0 and all(c.agreement < AdaptConfig.min_agreement for c in cands)


@pytest.mark.slow
def test_adapted_model_exports_and_seginfer_applies_its_normalisation(tmp_path, tiny_checkpoint):
    from unsupseg.export.export import export_onnx
    from unsupseg.infer import Segmenter
    from unsupseg.train.adapt_run import run_adaptation
    from unsupseg.train.checkpoint import load_model

    images, _ = _folder(tmp_path, n=3)
    cfg = AdaptConfig(str(images), str(tmp_path / "run"), start=str(tiny_checkpoint("unet", 4)), steps=8,
                      snapshot_every=4, threads=1)  # fmt: skip
    run_adaptation(cfg, log=lambda m: None, plots=False)
    export_onnx(tmp_path / "run" / "model.pt", tmp_path / "m.onnx", log=lambda m: None)
    seg = Segmenter(tmp_path / "m.onnx", device="cpu")
    assert seg.card.normalization.log_k == cfg.norm_log and seg.foreground in ("auto", "model")
    raw = iio.imread(images / "im0.png").astype(np.float32)
    model, card, _ = load_model(tmp_path / "run" / "model.pt")
    x = card.normalization(raw)
    with torch.no_grad():
        want = model(torch.from_numpy(x)[None, None])[0, 0].numpy()  # 72x88: no padding needed
    _, prob = Segmenter(tmp_path / "m.onnx", device="cpu", foreground="model").predict(raw)
    np.testing.assert_allclose(prob, want, atol=1e-4)


def test_preset_choice(tmp_path):
    images, _ = _folder(tmp_path, n=2)
    r = CliRunner().invoke(segtrain, ["--data", str(images), "--preset", "adapt", "--epochs", "3"])
    assert r.exit_code == 2 and "--epochs does not apply to --preset adapt" in r.output
    r = CliRunner().invoke(segtrain, ["--preset", "adapt", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "--preset adapt needs --data DIR" in r.output
    missing = CliRunner().invoke(
        segtrain,
        ["--data", str(images), "--out", str(tmp_path / "r"), "--init-from", str(images / "im0.png")],
    )
    assert missing.exit_code == 2 and "not a readable unsupseg checkpoint" in missing.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("arch", "context"), [("unet", False), ("unet", True), ("seed", False)])
def test_invert_output_makes_the_network_give_one_minus_p(arch, context):
    from unsupseg.train.model import ModelConfig, build_model
    from unsupseg.train.orient import invert_output

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, width=4, context=context)).eval()
    x = torch.rand(2, 1, 48, 40)
    with torch.no_grad():
        before = model(x)
        invert_output(model)
        after = model(x)
    torch.testing.assert_close(after, 1 - before, atol=1e-5, rtol=0)


def test_orientation_is_fixed_only_when_the_folder_agrees():
    from unsupseg.train.orient import orientation

    rng = np.random.default_rng(0)
    written = [rng.random((16, 16)) < 0.3 for _ in range(8)]
    same, flipped = [w.copy() for w in written], [~w for w in written]
    o = orientation(flipped, written, 0.75)  # region 0 is the object on every image
    assert o.fixed and o.inverted and o.agree == 0.0 and o.consistency == 1.0
    o = orientation(same[:6] + flipped[6:], written, 0.75)  # 6 of 8 agree
    assert o.fixed and not o.inverted and o.consistency == 0.75
    o = orientation(same[:5] + flipped[5:], written, 0.75)  # 5 of 8: mixed polarity, rule auto
    assert not o.fixed and not o.inverted


def _pages(n, size=(64, 64), seed=0):
    """Gray pages with a bright disk each (float32), as seginfer --adapt's sample gives them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: size[0], : size[1]]
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(20, size[0] - 20, 2)
        page = 0.2 + 0.6 * ((yy - cy) ** 2 + (xx - cx) ** 2 < 100) + rng.normal(0, 0.05, size)
        out.append(page.astype(np.float32))
    return out


def test_a_schedule_that_does_not_fit_the_budget_is_fitted_to_it(tiny_checkpoint):
    """cfg.steps far beyond the time budget: the steps that fit are announced after the first two,
    the learning rate decays to 0 over them, and the last snapshot is the fitted schedule's end (not
    a step the budget cut off at a high learning rate)."""
    from unsupseg.train.adapt import FIT_AFTER_STEPS, FolderImages, _lr, adapt
    from unsupseg.train.checkpoint import load_model

    model, _, _ = load_model(tiny_checkpoint("unet", 4))
    cfg = AdaptConfig(data="", out="", steps=100_000, snapshot_every=40, time_budget_s=2.0, threads=1)
    images = FolderImages.of(_pages(6), cfg.hold_every)
    logs: list[str] = []
    candidates = adapt(model, images, cfg, torch.device("cpu"), logs.append)
    fitted = [line for line in logs if "schedule is fitted" in line]
    assert len(fitted) == 1, logs
    steps = int(fitted[0].split()[0])
    assert FIT_AFTER_STEPS < steps < cfg.steps
    assert [c.step for c in candidates] == [steps // 2, steps]
    assert not any("budget" in line and "reached" in line for line in logs)
    assert _lr(cfg, steps - 1, steps) < 0.01 * cfg.lr < _lr(cfg, steps // 2, steps)


def test_a_schedule_that_fits_is_left_alone(tiny_checkpoint):
    from unsupseg.train.adapt import FolderImages, adapt
    from unsupseg.train.checkpoint import load_model

    model, _, _ = load_model(tiny_checkpoint("unet", 4))
    cfg = AdaptConfig(data="", out="", steps=6, snapshot_every=3, time_budget_s=600.0, threads=1)
    logs: list[str] = []
    images = FolderImages.of(_pages(6), cfg.hold_every)
    candidates = adapt(model, images, cfg, torch.device("cpu"), logs.append)
    assert [c.step for c in candidates] == [3, 6]
    assert not any("schedule is fitted" in line for line in logs)


def test_the_training_budget_leaves_the_deadline_time_for_the_choice(monkeypatch):
    """Training gets the deadline less what has run and what the rest takes at the measured pace:
    three criteria, five passes of masks, 3 s for writing; never over the configured budget, and
    below MIN_TRAINING_S (the caller then does not train) when the deadline is spent."""
    from unsupseg.train import adapt_run

    monkeypatch.setattr(adapt_run.time, "perf_counter", lambda: 110.0)
    cfg = AdaptConfig(data="", out="", deadline_s=40.0, time_budget_s=60.0)
    budget = adapt_run._training_budget
    assert budget(cfg, started=100.0, criterion_s=1.0, pass_s=2.0) == 40 - 10 - 3 - 10 - 3
    assert budget(cfg, started=70.0, criterion_s=1.0, pass_s=2.0) < adapt_run.MIN_TRAINING_S
    long = AdaptConfig(data="", out="", deadline_s=400.0, time_budget_s=60.0)
    assert budget(long, started=100.0, criterion_s=1.0, pass_s=2.0) == 60.0


def test_the_torch_free_side_skips_training_at_the_floor_the_trainer_uses():
    """infer/cli/adapt.py copies the trainer's floor rather than importing train/ (it must not load
    torch to decide whether to train): the two stay equal."""
    from unsupseg.infer.cli import adapt as cli_adapt
    from unsupseg.train import adapt_run

    assert cli_adapt.MIN_TRAINING_S == adapt_run.MIN_TRAINING_S


def test_with_a_page_cap_the_network_trains_on_pages_spread_over_the_sample(tiny_checkpoint):
    """network_pages: the network path (structure none) adapts on that many pages, spread over the
    sample, split again into trained on and held aside."""
    from unsupseg.train.adapt import FolderImages
    from unsupseg.train.adapt_run import adapt_images

    pages = _pages(20, seed=2)
    cfg = AdaptConfig(
        data="", out="", start=str(tiny_checkpoint("unet", 4)), structure="none", steps=2, snapshot_every=1,
        network_pages=6, threads=1,
    )  # fmt: skip
    logs: list[str] = []
    result = adapt_images(FolderImages.of(pages, cfg.hold_every), cfg, logs.append)
    assert any("adapting" in line and "6 image(s), 5 trained on, 1 held aside" in line for line in logs), logs
    assert [c["step"] for c in result.summary["adaptation"]["candidates"]] == [0, 1, 2]


def test_a_deadline_that_leaves_no_time_to_train_keeps_the_network_and_says_why(tiny_checkpoint):
    """structure none under a deadline already spent: no snapshot is trained, the start network is
    kept, and the record says why (seginfer.json's adaptation.network)."""
    from unsupseg.export.adapt import _record
    from unsupseg.train.adapt import FolderImages
    from unsupseg.train.adapt_run import adapt_images

    cfg = AdaptConfig(
        data="", out="", start=str(tiny_checkpoint("unet", 4)), structure="none", deadline_s=0.0, threads=1
    )
    logs: list[str] = []
    result = adapt_images(FolderImages.of(_pages(6), cfg.hold_every), cfg, logs.append)
    assert not result.trained and result.card.structure == "none"
    assert [c["step"] for c in result.summary["adaptation"]["candidates"]] == [0]
    assert not any(line.startswith("step ") for line in logs), logs
    record = _record(result.summary, 6, [], 1.0)
    assert record["network"].startswith("kept: the adaptation's deadline (0 s left when it began here)")
    assert record["steps"] == 0 and record["snapshots"] == []
