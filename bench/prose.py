"""The words of docs/benchmarks.md, kept in Markdown beside the code that fills in the figures.

A module that writes prose has a Markdown file of the same name beside it
(bench/report.md, bench/sections/model.md, ...) and reads it with ``TEXT = Prose(__file__)``;
``TEXT("intro", threads=2)`` returns the block ``## intro`` with its placeholders filled.

The file format:

* ``## name`` starts a block, which runs to the next ``## `` heading; text before the first
  one is a note to the reader of the file and is not used.
* Lines of a paragraph are joined with single spaces (the page keeps one line per paragraph),
  except that a line starting with ``- `` starts a new line (a list item); paragraphs stay
  apart, separated by one blank line.
* ``$name`` or ``${name}`` is replaced by the value the code passes (``string.Template``;
  ``$$`` is a dollar sign). The code formats numbers before passing them; a placeholder the
  code does not fill is an error.
"""

from __future__ import annotations

from pathlib import Path
from string import Template


class Prose:
    """The ``## name`` blocks of the Markdown file beside ``module_file`` (read on first use)."""

    def __init__(self, module_file: str | Path):
        self.path = Path(module_file).with_suffix(".md")
        self._blocks: dict[str, str] | None = None

    def __call__(self, block: str, **values) -> str:
        if self._blocks is None:
            self._blocks = parse_blocks(self.path.read_text(encoding="utf-8"))
        if block not in self._blocks:
            raise KeyError(f"{self.path}: no '## {block}' block; add it or fix the name")
        try:
            return Template(self._blocks[block]).substitute(values)
        except KeyError as e:
            raise KeyError(f"{self.path}, block '{block}': no value passed for ${e.args[0]}") from None


def parse_blocks(text: str) -> dict[str, str]:
    """{name: text} of the ``## name`` blocks of a prose file, paragraphs joined as above."""
    blocks: dict[str, str] = {}
    name, lines = None, []
    for line in text.splitlines():
        if line.startswith("## "):
            if name is not None:
                blocks[name] = join_lines(lines)
            name, lines = line[3:].strip(), []
        elif name is not None:
            lines.append(line)
    if name is not None:
        blocks[name] = join_lines(lines)
    return blocks


def join_lines(lines: list[str]) -> str:
    """Paragraphs of wrapped lines -> one line each (list items keep their own line)."""
    paragraphs, current = [], []
    for raw in [*lines, ""]:
        line = raw.strip()
        if not line:
            if current:
                paragraphs.append("".join(current))
                current = []
        elif not current:
            current.append(line)
        else:
            current.append(("\n" if line.startswith("- ") else " ") + line)
    return "\n\n".join(paragraphs)
