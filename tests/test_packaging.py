"""The wheel carries every subpackage: pyproject's explicit package list matches the source tree."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in config["package-dir"].items():  # e.g. unsupseg.infer -> infer/
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(".".join([name, *init.parent.relative_to(ROOT / folder).parts]))
    missing = sorted(found - set(config["packages"]))
    assert "unsupseg.infer.writers" in found
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"
