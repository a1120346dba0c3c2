"""bench/prose.py: how the Markdown prose files are read, and that every block the bench code asks
for exists (a typo in a block name would otherwise show only in a full bench run)."""

from __future__ import annotations

import re
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


def _text_modules() -> list[Path]:
    return sorted(p for p in (ROOT / "bench").rglob("*.py") if "\nTEXT = Prose(__file__)\n" in p.read_text())


@pytest.mark.parametrize("module", _text_modules(), ids=lambda p: p.stem)
def test_the_code_asks_for_every_block_and_only_those(module):
    blocks = parse_blocks(module.with_suffix(".md").read_text())
    calls = re.findall(r'TEXT\(\s*"([\w-]+)"(?: if .*? else "([\w-]+)")?', module.read_text())
    asked = {name for pair in calls for name in pair if name}
    assert asked, "no TEXT(...) call found"
    assert asked == set(blocks), f"{module.with_suffix('.md').name}: blocks asked for {sorted(asked)}"


def test_every_section_has_prose_with_an_intro():
    from bench.run import SECTIONS

    for name, module in SECTIONS.items():
        assert "intro" in parse_blocks(Path(module.__file__).with_suffix(".md").read_text()), name
