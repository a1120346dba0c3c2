"""bench/prose.py: how the Markdown prose files are read."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from bench.prose import Prose, parse_blocks  # noqa: E402


def test_blocks_join_wrapped_lines_and_keep_list_items():
    text = (
        "A note to the reader, not a block.\n\n"
        "## intro\n\nOne paragraph\nwrapped over\n  three lines.\n\nA second one.\n\n"
        "## header\n# Title\n\n- first item\n  continued\n- second item\n"
    )
    blocks = parse_blocks(text)
    assert blocks == {
        "intro": "One paragraph wrapped over three lines.\n\nA second one.",
        "header": "# Title\n\n- first item continued\n- second item",
    }


def test_placeholders_are_filled_and_a_missing_one_is_named(tmp_path):
    (tmp_path / "sec.md").write_text("## note\n\n${n} files at $$1 each, ${tail}\n")
    text = Prose(tmp_path / "sec.py")
    assert text("note", n="1,000", tail="") == "1,000 files at $1 each, "
    with pytest.raises(KeyError, match=r"sec.md, block 'note': no value passed for \$tail"):
        text("note", n=3)
    with pytest.raises(KeyError, match="no '## nope' block"):
        text("nope")
