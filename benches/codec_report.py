"""Run every codec benchmark in one pytest-benchmark run and print a Markdown table.

    /work/venv/bin/python benches/codec_report.py [--quick] [--json PATH] [-k EXPR]

The timing is pytest-benchmark's (``bench_codec.py``, run in this process); this script
turns its JSON into one table: workload, implementation, median time, throughput at the
median and at the best round (the shared machine is noisy), and the speed-up over the pure
twin and over each incumbent (ratios of medians; > 1 is faster).
``--quick`` cuts the time budget per implementation, for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# (workload, target) lines printed under the table: the goals the Rust core is held to.
TARGETS = {
    "dot_stuff": "Rust >= 2000 MB/s and >= 10x smtplib",
    "data": "Rust >= 2000 MB/s and >= 3x the pure twin",
    "commands": "Rust >= 10x the pure twin",
    "replies": "(no target)",
}


def _rate(units: float, unit: str, seconds: float) -> str:
    per_second = units / seconds
    if unit == "MB":
        return f"{per_second / 1e6:,.0f} MB/s"
    return f"{per_second:,.0f} lines/s"


def _ratio(mine: float, other: float) -> str:
    return f"{other / mine:,.1f}x"


def table(benchmarks: list[dict[str, Any]]) -> str:
    """The Markdown table: one row per implementation, workloads in run order."""
    rows = [
        "| Workload | Implementation | Median | Throughput (median) | Throughput (best) "
        "| vs pure twin | vs incumbents |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    by_workload: dict[str, list[dict[str, Any]]] = {}
    for b in sorted(benchmarks, key=lambda b: b["extra_info"]["order"]):
        by_workload.setdefault(b["extra_info"]["workload"], []).append(b)
    for key, group in by_workload.items():
        pure = {
            b["extra_info"]["variant"]: b["stats"]["median"]
            for b in group
            if b["extra_info"]["kind"] == "pure"
        }
        incumbents = [
            (b["extra_info"]["impl"], b["stats"]["median"])
            for b in group
            if b["extra_info"]["kind"] == "incumbent"
        ]
        for b in group:
            info, median, best = b["extra_info"], b["stats"]["median"], b["stats"]["min"]
            peer = pure.get(info["variant"], pure.get(""))
            vs_pure = _ratio(median, peer) if peer else "n/a"
            if info["kind"] == "incumbent":
                vs_incumbents = ""
            else:
                vs_incumbents = ", ".join(
                    f"{_ratio(median, t)} {name.split(' ')[0]}" for name, t in incumbents
                )
            rows.append(
                f"| {info['title'] if b is group[0] else ''} | {info['impl']} "
                f"| {median * 1e3:,.1f} ms | {_rate(info['units'], info['unit'], median)} "
                f"| {_rate(info['units'], info['unit'], best)} | {vs_pure} | {vs_incumbents} |"
            )
        rows.append(f"| | *target: {TARGETS.get(key, '')}* | | | | | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short budget, for a smoke run")
    parser.add_argument("--json", type=Path, help="also keep pytest-benchmark's JSON here")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression to pick cases")
    parser.add_argument(
        "--from-json", type=Path, help="print the table of an earlier --json run, run nothing"
    )
    parser.add_argument(
        "--allow-busy", action="store_true", help="exit 0 even when the machine was busy"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        print(table(json.loads(args.from_json.read_text())["benchmarks"]))
        return 0

    if args.quick:
        os.environ.setdefault("FERROSMTP_BENCH_BUDGET", "0.2")
        os.environ.setdefault("FERROSMTP_BENCH_MIN_ROUNDS", "1")
    sys.path.insert(0, str(HERE))  # bench_codec imports codec_workloads

    import pytest  # after the environment is set: bench_codec reads it at import

    from quiet import QuietCheck

    quiet = QuietCheck()
    print(quiet.before(), file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        out = args.json or Path(tmp) / "codec.json"
        pytest_args = [
            str(HERE / "bench_codec.py"),
            "--benchmark-only",
            f"--benchmark-json={out}",
            "--benchmark-columns=min,median,max,rounds",
            "--benchmark-sort=name",
            "-p",
            "no:cacheprovider",
            "-q",
        ]
        if args.keyword:
            pytest_args += ["-k", args.keyword]
        code = pytest.main(pytest_args)
        if code != 0:
            print(f"pytest exited with {code}", file=sys.stderr)
            return int(code)
        data = json.loads(out.read_text())
    print(quiet.after(), file=sys.stderr)

    print()
    machine = data["machine_info"]
    print(f"Python {machine['python_version']}, {machine['cpu'].get('brand_raw', '?')}")
    print()
    print(table(data["benchmarks"]))
    print(f"\nMachine: {quiet.verdict()}")
    return 1 if quiet.busy and not args.allow_busy else 0


if __name__ == "__main__":
    sys.exit(main())
