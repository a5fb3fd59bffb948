"""Draw the benchmark charts of the documentation from their data files.

    python docs/benchmarks/charts.py            # writes docs/benchmarks/<name>.svg
    python docs/benchmarks/charts.py --check    # fails if a committed chart is stale

Each data/<name>.json holds the figures of one README table (or one bench run), the
command that produced them and the conditions; ``source`` names the table (a section
between ``--8<-- [start:NAME]`` and ``[end:NAME]`` markers), and ``--check`` fails when a
figure drawn is not in it, so a table rerun and a stale chart cannot live side by side.
The charts are plain SVG written by this script (horizontal bars, one group per workload,
each group scaled to its own largest value), so they need no plotting library and come
out byte-identical every time.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from html import escape
from pathlib import Path

HERE = Path(__file__).resolve().parent
WIDTH = 760
LABEL_WIDTH = 300
BAR_HEIGHT = 18
ROW = 24
COLORS = {"ferrosmtp": "#e4572e", "other": "#8a8f98"}


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def render(data: dict) -> str:
    rows: list[str] = []
    y = 34
    title = escape(data["title"])
    rows.append(f'<text x="0" y="18" font-size="15" font-weight="bold">{title}</text>')
    if data.get("note"):
        y += 4
        rows.append(f'<text x="0" y="{y}" font-size="12" fill="#555">{escape(data["note"])}</text>')
        y += 14
    bar_space = WIDTH - LABEL_WIDTH - 120  # room for the value after the longest bar
    for group in data["groups"]:
        unit = group.get("unit", data.get("unit", ""))
        y += 20
        rows.append(
            f'<text x="0" y="{y}" font-size="13" font-weight="bold">{escape(group["name"])}</text>'
        )
        y += 8
        largest = max(bar["value"] for bar in group["bars"]) or 1
        for bar in group["bars"]:
            length = max(1.0, bar["value"] / largest * bar_space)
            ours = bar["label"].startswith("ferrosmtp") or bar["label"].startswith("vs ")
            color = COLORS["ferrosmtp" if ours else "other"]
            label = escape(bar["label"])
            joiner = "" if unit == "x" else " "
            value = escape(f"{_number(bar['value'])}{joiner}{unit}".strip())
            rows.append(
                f'<text x="{LABEL_WIDTH - 8}" y="{y + 13}" font-size="12" '
                f'text-anchor="end">{label}</text>'
            )
            rows.append(
                f'<rect x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" height="{BAR_HEIGHT}" '
                f'fill="{color}"/>'
            )
            rows.append(
                f'<text x="{LABEL_WIDTH + length + 6:.1f}" y="{y + 13}" font-size="12">'
                f"{value}</text>"
            )
            y += ROW
    y += 8
    for line in (data["command"], data["conditions"]):
        rows.append(f'<text x="0" y="{y + 10}" font-size="11" fill="#555">{escape(line)}</text>')
        y += 15
    height = y + 8
    body = "\n  ".join(rows)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" '
        f'role="img" aria-label="{title}">\n'
        f'  <rect width="{WIDTH}" height="{height}" fill="white"/>\n  {body}\n</svg>\n'
    )


def section(path: Path, name: str) -> str:
    text = path.read_text("utf-8")
    match = re.search(rf"--8<-- \[start:{name}\](.*?)--8<-- \[end:{name}\]", text, re.S)
    if match is None:
        sys.exit(f"charts: no section {name!r} in {path}")
    return match.group(1)


def missing_figures(data: dict) -> list[str]:
    """The figures of ``data`` that its source tables do not show."""
    root = HERE.parent.parent
    text = " ".join(section(root / data["source"]["file"], s) for s in data["source"]["sections"])
    missing = []
    for group in data["groups"]:
        for bar in group["bars"]:
            value = bar["value"]
            forms = {f"{value:,}", f"{value}", f"{value:.1f}", f"{value:.2f}", f"{value:,.0f}"}
            shown = (re.search(rf"(?<![\d.,]){re.escape(f)}(?![\d,])", text) for f in forms)
            if not any(shown):
                missing.append(f"{group['name']} / {bar['label']}: {value}")
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a chart is stale")
    check = parser.parse_args().check
    stale = []
    for source in sorted((HERE / "data").glob("*.json")):
        data = json.loads(source.read_text())
        for figure in missing_figures(data):
            stale.append(f"{source.name} ({figure}: not in its table)")
        svg = render(data)
        target = HERE / f"{source.stem}.svg"
        if check:
            if not target.exists() or target.read_text() != svg:
                stale.append(target.name)
        elif not stale:
            target.write_text(svg)
            print(f"wrote {target.relative_to(HERE.parent.parent)}")
    if stale:
        sys.exit(
            "charts: stale: " + "; ".join(stale) + " (update data/*.json to the tables, "
            "then run python docs/benchmarks/charts.py)"
        )


if __name__ == "__main__":
    main()
