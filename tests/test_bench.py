"""The benchmark scripts: `python -m bench.run --quick` puts every section in the markdown and the JSON;
the README's picture is what bench/readme_picture.py makes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.realsets import DEFAULT_REAL

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.heavy
def test_quick_bench_writes_every_section(tmp_path):
    from unsupseg.core.data import generate, save_npz
    from unsupseg.train.config import make_config
    from unsupseg.train.loop import run_training

    xtr, ytr = generate(64, seed=21)
    xte, yte = generate(32, seed=22)
    save_npz(tmp_path / "d.npz", {"image_train": xtr, "mask_train": ytr, "image_test": xte, "mask_test": yte})
    cfg = make_config("default", data=str(tmp_path / "d.npz"), out=str(tmp_path / "run"), width=4, epochs=1)
    run_training(cfg, log=lambda m: None, progress=False, plots=False)
    ckpt = tmp_path / "run" / "model.pt"

    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "bench.run", "--quick", "--out", str(out), "--checkpoint", str(ckpt)]
    cmd += ["--sweep", str(ckpt)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    md = (out / "benchmarks.md").read_text()
    results = json.loads((out / "results.json").read_text())
    sections = (
        "model",
        "e2e",
        "processes",
        "classical",
        "sweep",
        "real",
        "adapt",
        "quality",
        "objects",
        "memory",
        "training",
        "stream",
        "quant",
        "report",
        "gpu",
    )
    assert set(results["sections"]) == set(sections)
    for title in (s["title"] for s in results["sections"].values()):
        assert title in md
    assert "python -m bench.run --quick" in md and "CPU:" in md and "onnxruntime" in md
    assert "not measured yet" in md
    model = results["sections"]["model"]
    assert all(row["ratio_ort_over_torch"] > 0 for row in model["rows"])
    assert 0 < results["sections"]["e2e"]["rows"][0]["fraction_kept"]
    procs = results["sections"]["processes"]
    assert procs["rows"][0]["wn"] > 0 and procs["rows"][0]["ceiling"] > 0
    assert procs["rows"][0]["loaded_ceiling"] > 0 and 0 < procs["median"]["kept_loaded"]
    assert [s["cores"] for s in procs["scaling"]] == [1, 2, 4, 8, 16, 32, 64]
    assert set(procs["startup"]["methods"]) == {"forkserver", "spawn"}
    assert results["sections"]["memory"]["runs"]
    stream = results["sections"]["stream"]
    assert len(stream["runs"]) == 3 and stream["rss_ratio_files"] > 0
    assert "keep" in results["sections"]["quant"]
    report = results["sections"]["report"]
    assert report["n_shown"] > 0 and report["html_bytes"] > 0 and 0 < report["build_share"]
    assert len(results["sections"]["sweep"]["rows"]) == 1
    # generated: no step fits, the default deadline (10 s on 8 images) and one with time to train;
    # the huge image: a step
    runs = results["sections"]["adapt"]["runs"]
    first, trained, last = (runs[k] for k in (list(runs)[0], list(runs)[1], list(runs)[-1]))
    assert first["structure"] == "none" and first["deadline_s"] == 10.0
    assert 0 < first["adapt_s"] < first["wall_s"]
    assert trained["structure"] == "none" and trained["deadline_s"] == 60.0 and trained["steps"] > 0
    assert last["structure"] == "objects" and not last["trained"] and last["maxrss_mb"] > 0
    real = results["sections"]["real"]["rows"]  # stardist's nuclei (installed by make), ../shared/realdata
    parts = {(r["set"], r["split"]) for r in real}
    assert {("stardist2d", "check"), ("stardist3d", "check")} <= parts
    if DEFAULT_REAL.is_dir():
        assert {("nuclei", "tune"), ("nuclei", "report"), ("em", "report"), ("horse", "report")} <= parts
    from bench.realsets import ADAPTED, NETWORK, PACKAGED

    for r in real:
        assert {"Otsu", "blur 1 + Li", PACKAGED, NETWORK, ADAPTED} <= set(r["scores"])
        assert all(0 <= v["iou"] <= 1 and 0 <= v["iou_any_polarity"] <= 1 for v in r["scores"].values())
        assert r["scores"][NETWORK]["structure"] == "none"
        assert r["adaptation"]["seconds"] > 0 and r["adaptation"]["structure"] in (
            "objects",
            "membranes",
            "photo",
            "none",
        )
        if r["set"] in ("nuclei", "stardist2d"):  # fluorescence nuclei: the objects step, nothing trained
            assert r["scores"][PACKAGED]["structure"] == "objects" == r["adaptation"]["structure"]


def test_bench_refuses_a_missing_checkpoint(tmp_path):
    cmd = [sys.executable, "-m", "bench.run", "--quick", "--out", str(tmp_path), "--checkpoint", "nope.pt"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "make train" in r.stderr
    assert not (tmp_path / "benchmarks.md").exists()


def test_bench_refuses_an_unknown_section(tmp_path):
    cmd = [sys.executable, "-m", "bench.run", "--sections", "model,speed", "--out", str(tmp_path)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "speed" in r.stderr


@pytest.mark.parametrize("mode", ["path", "steps"])
def test_icount_modes_do_the_work_they_count(tmp_path, mode):
    """bench.icount's measured parts (run natively here; valgrind counts them in bench.icount):
    the worker path writes every input's mask, the ceiling's steps write one mask per input."""
    from bench.common import write_pngs
    from bench.icount import _child
    from unsupseg.core.data import generate

    images, _ = generate(24, 128, 128, sigma=(0.2, 1.0), seed=4000, quantize=8, max_objects=3)
    write_pngs(tmp_path / "images", images)
    out = tmp_path / "out"
    out.mkdir()
    _child(mode, tmp_path / "images", 24, out)
    masks = sorted(p.name for p in out.iterdir() if p.is_file())
    steps = sorted(p.name for p in (out / "steps").iterdir())
    if mode == "path":
        assert masks == sorted(f"img_{i:05d}.png" for i in range(24)) and steps == []
    else:  # the setup's warm-up run wrote the first 16 through the worker path
        assert steps == sorted(f"{i}.png" for i in range(24))
        assert masks == sorted(f"img_{i:05d}.png" for i in range(16))


def test_the_readme_picture_is_what_its_script_makes():
    """docs/nuclei.png is bench/readme_picture.py's picture of stardist's nuclei with the packaged
    model: the README shows what seginfer gives (after a new packaged model, run the script)."""
    from PIL import Image

    from bench.readme_picture import OUT, picture
    from bench.realdata import stardist_image

    image, _ = stardist_image()
    made, _ = picture(image)
    shown = np.asarray(Image.open(OUT).convert("RGB"))
    assert shown.shape == made.shape
    differ = np.count_nonzero((shown != made).any(axis=2))
    assert differ == 0, f"{differ} pixels differ; run python -m bench.readme_picture"


def test_the_quality_sections_interval_is_narrow_when_the_order_is_clear_and_wide_when_not():
    from bench.sections.quality import _interval

    iou = np.linspace(0.4, 0.9, 30)
    assert _interval(iou + 0.01, iou) == [1.0, 1.0]  # the same order in every resample
    lo, hi = _interval(np.random.default_rng(1).random(6), np.array([0.58, 0.55, 0.58, 0.58, 0.58, 0.61]))
    assert lo < 0 < hi and hi - lo > 1  # six nearly tied values say little
    assert _interval(np.ones(5), iou[:5]) is None  # no resample has two different scores
