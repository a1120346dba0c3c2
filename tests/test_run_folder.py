"""run_folder, the Python API of a folder run, and the output-writer extension point."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
from test_infer_cli import _make_folder, _mask_files, _run

from unsupseg.core.errors import OutputExistsError
from unsupseg.infer import LocalEngine, RunOptions, SegmenterConfig, run_folder
from unsupseg.infer.inputs import Item
from unsupseg.infer.items import run_items
from unsupseg.infer.writers import WRITERS, OutputWriter, Segmentation


def _options(model, **kw) -> RunOptions:
    return RunOptions(segmenter=SegmenterConfig(model=model, device="cpu", threads=1), **kw)


def test_run_folder_writes_what_seginfer_writes(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=5, masks=tmp_path / "gt")
    cli = tmp_path / "cli"
    assert (
        _run(
            ["--input", tmp_path / "in", "--output", cli, "--masks", tmp_path / "gt"], infer_model_path
        ).exit_code
        == 0
    )
    api = tmp_path / "api"
    result = run_folder(tmp_path / "in", api, _options(infer_model_path, masks=tmp_path / "gt"))
    assert result.n_failed == 0 and result.summary["n_written"] == 5
    assert result.files.summary == api / "summary.json" and result.files.report.is_file()
    assert _mask_files(api) == _mask_files(cli)
    for name in ("summary.json", "report.csv"):
        got = (api / name).read_text().replace(str(api), "OUT")
        assert got == (cli / name).read_text().replace(str(cli), "OUT"), name
    assert result.summary["mean"]["iou"] == json.loads((api / "summary.json").read_text())["mean"]["iou"]
    with pytest.raises(OutputExistsError, match="--skip-existing"):
        run_folder(tmp_path / "in", api, _options(infer_model_path))


def test_shards_name_colliding_stems_like_one_run(tmp_path, infer_model_path, infer_disk_image):
    """a.png and a.tif in different shards: each keeps its suffix, as in the single run."""
    _make_folder(tmp_path / "in", infer_disk_image, n=3)
    iio.imwrite(tmp_path / "in" / "img0.tif", (infer_disk_image(48, 56, seed=9)[0] * 255).astype(np.uint8))
    single = tmp_path / "single"
    run_folder(tmp_path / "in", single, _options(infer_model_path))
    sharded = tmp_path / "sharded"
    for i in (1, 2):
        run_folder(tmp_path / "in", sharded, _options(infer_model_path, shard=(i, 2)))
    assert sorted(_mask_files(single)) == ["img0_png.png", "img0_tif.png", "img1.png", "img2.png"]
    assert _mask_files(sharded) == _mask_files(single)


class _StatsWriter(OutputWriter):
    """A plug-in output for the test: the foreground fraction and image mean as NAME_stats.json."""

    name = "stats"
    needs_image = True

    def paths(self, item: Item, pages: int) -> list[str]:
        return [item.out_base + "_stats.json"]

    def candidates(self, item: Item) -> list[str]:
        return self.paths(item, 1)

    def write(self, item: Item, seg: Segmentation) -> None:
        stats = {"fraction": float(seg.mask.mean()), "image_mean": float(np.mean(seg.image))}
        with open(self.paths(item, seg.pages)[0], "w") as f:
            json.dump(stats, f)


def test_a_new_output_is_one_class_and_one_registration(
    tmp_path, infer_model_path, infer_disk_image, monkeypatch
):
    monkeypatch.setitem(WRITERS, "stats", _StatsWriter)
    _make_folder(tmp_path / "in", infer_disk_image, n=3)
    out = tmp_path / "out"
    run_folder(tmp_path / "in", out, _options(infer_model_path, outputs=("stats",)))
    image = iio.imread(tmp_path / "in" / "img1.png")
    stats = json.loads((out / "img1_stats.json").read_text())
    assert stats["image_mean"] == pytest.approx(image.mean())  # the writer got the pages as read
    assert stats["fraction"] == pytest.approx((iio.imread(out / "img1.png") > 0).mean())
    # the new output takes part in the overwrite check and in --skip-existing
    with pytest.raises(OutputExistsError, match="already exists"):
        run_folder(tmp_path / "in", out, _options(infer_model_path, outputs=("stats",)))
    (out / "img2_stats.json").unlink()
    result = run_folder(
        tmp_path / "in", out, _options(infer_model_path, outputs=("stats",), skip_existing=True)
    )
    assert (result.summary["n_written"], result.summary["n_skipped"]) == (1, 2)
    assert (out / "img2_stats.json").is_file()


def test_unknown_output_is_named(tmp_path, infer_model_path, infer_disk_image):
    _make_folder(tmp_path / "in", infer_disk_image, n=1)
    with pytest.raises(ValueError, match="unknown output"):
        run_folder(tmp_path / "in", tmp_path / "o", _options(infer_model_path, outputs=("nope",)))


def test_engine_reuses_a_given_segmenter(tmp_path, infer_model_path, infer_disk_image):
    """LocalEngine(segmenter=...) runs without open(): the Python user's own Segmenter."""
    from unsupseg.infer import Segmenter
    from unsupseg.infer.inputs import gather_inputs, plan_items
    from unsupseg.infer.items import ItemWork

    _make_folder(tmp_path / "in", infer_disk_image, n=2)
    options = _options(infer_model_path)
    engine = LocalEngine(segmenter=Segmenter(infer_model_path, device="cpu", threads=1))
    results = []
    items = plan_items(gather_inputs(tmp_path / "in"), tmp_path / "out")
    engine.run(items, ItemWork.from_options(options), results.append)
    assert sorted(r.src for r in results) == [i.src for i in items]
    assert all(r.error is None and r.case.status == "written" for r in results)


class _OneByOne:
    """The smallest engine (docs/architecture.md): no threads, every step of every input in this
    thread through ItemWork (``run_items``, what a worker process does with its chunks)."""

    name = "one-by-one"

    def open(self, config):
        self.seg = config.build()
        return self.seg

    def run(self, items, work, on_result):
        run_items(self.seg, work, items, on_result)


@pytest.mark.parametrize("engine", [LocalEngine, _OneByOne])
def test_every_engine_stops_on_an_output_fault(
    tmp_path, infer_model_path, infer_disk_image, monkeypatch, engine
):
    """The fatal-or-not decision is ItemWork's and run_folder's: any engine stops the same way."""
    import errno
    import os

    import unsupseg.infer.writers.mask as mask_writer
    from unsupseg.infer.errors import RunStopped

    _make_folder(tmp_path / "in", infer_disk_image, n=6)
    real, written = mask_writer.write_mask, []

    def full_after_two(path, mask):
        if len(written) >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, mask)
        written.append(path)

    monkeypatch.setattr(mask_writer, "write_mask", full_after_two)
    out = tmp_path / "out"
    with pytest.raises(RunStopped) as stop:
        run_folder(tmp_path / "in", out, _options(infer_model_path), engine=engine())
    e = stop.value
    assert (e.n_images, e.n_written, e.summary) == (6, 2, str(out / "summary.json"))
    assert "No space left on device (the output's file system is full)" in e.reason
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_written"] == 2 and summary["stopped"] == e.reason
    assert sorted(_mask_files(out)) == sorted(os.path.basename(p) for p in written)
    assert [p.name for p in out.glob(".*")] == [".seginfer.lock"]  # only the stopped run's record
    assert json.loads((out / ".seginfer.lock").read_text())["pid"] == os.getpid()
