"""The markdown the benchmarks and generated docs write: tables, and marked blocks of a doc refilled in
place (`<!-- bench:NAME -->` … `<!-- /bench:NAME -->`), so that a page's prose stays hand-written."""

from __future__ import annotations

import re
from collections.abc import Sequence

BLOCK = r"<!-- bench:{name} -->\n(?:.*?\n)?<!-- /bench:{name} -->"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fill_blocks(text: str, sections: dict[str, str]) -> str:
    """`text` with each named block's body replaced. Raises ValueError naming a missing block."""
    for name, body in sections.items():
        block = re.search(BLOCK.format(name=re.escape(name)), text, re.S)
        if block is None:
            raise ValueError(f"no <!-- bench:{name} --> block to fill")
        filled = f"<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->"
        text = text[: block.start()] + filled + text[block.end() :]
    return text
