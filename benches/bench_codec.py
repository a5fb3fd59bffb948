"""Codec benchmarks: the Rust core, the pure twin and the incumbents, side by side.

    /work/venv/bin/python -m pytest benches/bench_codec.py --benchmark-only
    /work/venv/bin/python benches/codec_report.py      # the same run, plus a Markdown table

Not part of the default test run (``testpaths = ["tests"]``, and ``bench_*.py`` does not
match pytest's ``test_*.py`` pattern): name this file to run it.

Each implementation is run once untimed, which checks its result and sizes the number of
rounds: about ``FERROSMTP_BENCH_BUDGET`` seconds (default 2) of timed rounds each, at
least ``FERROSMTP_BENCH_MIN_ROUNDS`` (default 3), so that a 3 ms Rust call gets dozens of
rounds and an 11 s aiosmtpd run gets three.
"""

from __future__ import annotations

import os
import time

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from codec_workloads import Impl, Workload, build_all

BUDGET = float(os.environ.get("FERROSMTP_BENCH_BUDGET", "2"))
MIN_ROUNDS = int(os.environ.get("FERROSMTP_BENCH_MIN_ROUNDS", "3"))
MAX_ROUNDS = 50

# Built at collection: about a second, and the parameter ids need the implementations.
WORKLOADS = build_all()
CASES = [
    pytest.param(wl, impl, n, id=f"{wl.key}-{i}-{impl.kind}")
    for n, (wl, i, impl) in enumerate(
        (wl, i, impl) for wl in WORKLOADS for i, impl in enumerate(wl.impls)
    )
]


@pytest.mark.parametrize(("workload", "impl", "order"), CASES)
def test_codec(benchmark: BenchmarkFixture, workload: Workload, impl: Impl, order: int) -> None:
    start = time.perf_counter()
    result = impl.run()
    first = time.perf_counter() - start
    assert impl.expect(result), f"{impl.name} did not do the workload's job"

    benchmark.group = workload.title
    benchmark.name = impl.name
    benchmark.extra_info.update(
        order=order,  # the report keeps this run order
        workload=workload.key,
        title=workload.title,
        impl=impl.name,
        kind=impl.kind,
        variant=impl.variant,
        units=workload.units,
        unit=workload.unit,
    )
    rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, int(BUDGET / max(first, 1e-6))))
    benchmark.pedantic(  # type: ignore[no-untyped-call]
        impl.run, rounds=rounds, iterations=1, warmup_rounds=0
    )
