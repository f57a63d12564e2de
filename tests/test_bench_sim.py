"""The simulated link's speed (pytest-benchmark, short mode by default): simulated seconds of
the benchmark workload (game messages on three channels plus 30 fps H.264-sized video) per
second of real time. Issue #3 asks for a minute of traffic in well under a minute."""

from __future__ import annotations

import time

import pytest

from bench.scenarios import scenario
from bench.suite import Plan, run_sim, video_frame_sizes

pytestmark = pytest.mark.benchmark(group="simulated link")

SIMULATED_S = 10.0


def test_bench_sim_speedup(benchmark: pytest.FixtureRequest) -> None:
    video_frame_sizes()  # the one-off encode is not the simulator's time
    link = scenario("wifi-spikes")
    walls: list[float] = []

    def one_run() -> dict[str, object]:
        start = time.perf_counter()
        result = run_sim(link, Plan(duration_s=SIMULATED_S), lambda _line: None)
        walls.append(time.perf_counter() - start)
        return result

    result = benchmark.pedantic(one_run, rounds=1, iterations=1)  # type: ignore[attr-defined]
    speedup = SIMULATED_S / min(walls)
    benchmark.extra_info["simulated_per_wall_second"] = round(speedup, 1)  # type: ignore[attr-defined]
    rows = {(r["system"], r["workload"]): r for r in result["rows"]}
    assert rows[("framewire", "video")]["sent"] == int(SIMULATED_S * 30)
    assert speedup > 1.0  # behaviour: faster than real time; the CI gate asks for more
