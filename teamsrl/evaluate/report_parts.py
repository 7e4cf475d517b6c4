"""What every section of the run report is made of: `Section`, tolerant readers of the
stages' JSON/JSONL outputs, and cell formatting (`teamsrl.evaluate.report` assembles the page)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teamsrl.layout import ARMS

STANDALONE = "fine-tuned"  # the column of a run evaluated with the standalone defaults


@dataclass
class Section:
    """One part of the page: a title, text lines, and the figure (or why there is none)."""

    title: str
    lines: list[str] = field(default_factory=list)
    figure: Path | None = None
    caption: str = ""
    draws: bool = True  # False: a table-only section, not counted in "N of M figures drawn"


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON-object lines of a file and how many lines were not readable JSON objects."""
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from disk (ValueError when it is not one)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def arm_folders(root: Path, marker: str) -> dict[str, Path]:
    """{arm: root/arm} when the pipeline's per-arm folders exist (every arm, found or not),
    else {"fine-tuned": root} when `root/marker` is there (standalone defaults), else {}."""
    if any((root / arm).is_dir() for arm in ARMS):
        return {arm: root / arm for arm in ARMS}
    return {STANDALONE: root} if (root / marker).is_file() else {}


def rel(run_dir: Path, path: Path) -> str:
    return str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path)


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "–" if v is None else str(v)


def md_cell(v: Any) -> str:
    """A value as one Markdown table cell: `fmt`, then `|` escaped, HTML's `&<>` as entities
    (a rewrite's `<b>` stays text) and line breaks as `<br>`."""
    text = fmt(v).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")


def md_table(header: list[str], rows: list[list[Any]], align: str = "") -> list[str]:
    """The lines of a Markdown table; `align` holds one character per column, `r` for a
    right-aligned one (default: all left)."""
    rule = ["---:" if align[i:i + 1] == "r" else "---" for i in range(len(header))]
    return [f"| {' | '.join(md_cell(h) for h in header)} |", f"| {' | '.join(rule)} |",
            *(f"| {' | '.join(md_cell(v) for v in row)} |" for row in rows)]
