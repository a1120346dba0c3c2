"""The demo's sample-folder writer."""

from click.testing import CliRunner

from unsupseg.core.imageio import read_image, read_mask
from unsupseg.train.sample import main as sample


def test_sample_folder_has_matching_images_and_masks(tmp_path):
    out = tmp_path / "s"
    r = CliRunner().invoke(sample, [str(out), "--n", "8"])
    assert r.exit_code == 0, r.output
    images = sorted((out / "images").iterdir())
    masks = sorted((out / "masks").iterdir())
    assert len(images) == len(masks) == 8
    suffixes = {p.suffix for p in images}
    assert suffixes == {".png", ".tif"}
    for im, mk in zip(images, masks, strict=True):
        assert im.stem == mk.stem
        assert read_image(im).shape == read_mask(mk).shape
    r = CliRunner().invoke(sample, [str(out), "--n", "8"])
    assert r.exit_code == 2 and "pass --overwrite" in r.output
