"""Regression gates for CI: ratios against a baseline measured in the same run, never absolute
times (the machines are shared and noisy).

``python -m bench.gates [--hotpaths FILE] [--scenarios FILE] [--loopback FILE]`` reads the JSON
that pytest-benchmark (``--benchmark-json``), ``framewire bench SCENARIO... --json`` and
``framewire bench --json`` wrote, prints one line per gate and exits 1 if any fails.

The limits sit above what this machine measures today with room for noise: the hot-path
ratios move by tens of percent from run to run, while the scenario ratios come from the
simulated link, which is deterministic for a seed, so those limits are tight. A change that
makes framewire better moves a number away from its limit; tighten the limit then.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Gate:
    what: str
    value: float | None
    limit: float
    higher_is_better: bool = False

    @property
    def passed(self) -> bool:
        if self.value is None:
            return False
        if self.higher_is_better:
            return self.value >= self.limit
        return self.value <= self.limit

    def line(self) -> str:
        mark = "ok  " if self.passed else "FAIL"
        op = ">=" if self.higher_is_better else "<="
        shown = "missing" if self.value is None else f"{self.value:.3f}"
        return f"{mark} {self.what}: {shown} (limit {op} {self.limit})"


HOTPATH_LIMITS = {
    # benchmark name -> (extra_info key, limit): the whole engine path per datagram against
    # the bare AEAD call it must make anyway; fragmenting/reassembling 1 MB against copying it.
    "test_bench_packet_seal": ("ratio_to_aead_seal", 8.0, False),
    "test_bench_packet_open": ("ratio_to_aead_open", 10.0, False),
    "test_bench_fragment_1mb": ("ratio_to_aead_seal_all", 8.0, False),
    "test_bench_reassemble_1mb": ("ratio_to_memcpy_1mb", 900.0, False),
    "test_bench_sim_speedup": ("simulated_per_wall_second", 5.0, True),
}
"""benchmark -> (extra_info key, limit, higher is better): about 2x today's values; the sim
speedup is a floor."""

SCENARIO_LIMITS: dict[tuple[str, str], tuple[float, float]] = {
    # (scenario, workload) -> (max framewire p50 / raw-UDP p50, min framewire delivered %)
    ("lan", "reliable"): (1.2, 100.0),
    ("lan", "unreliable"): (1.2, 100.0),
    ("lan", "latest"): (1.2, 99.0),
    ("lan", "video"): (1.3, 100.0),
    ("wifi-spikes", "reliable"): (1.15, 100.0),
    ("wifi-spikes", "unreliable"): (1.15, 100.0),
    ("wifi-spikes", "latest"): (1.15, 99.0),
    ("wifi-spikes", "video"): (1.2, 99.0),
    # Today's weak spots (issue #4 is about them): loss halves the congestion window, and the
    # reliable channel waits for repairs behind it. The gates keep them from getting worse.
    ("lossy-5", "reliable"): (10.0, 100.0),
    ("lossy-5", "unreliable"): (2.0, 93.0),
    ("lossy-5", "latest"): (1.9, 78.0),
    ("lossy-5", "video"): (9.5, 25.0),
    ("congested-5mbps", "reliable"): (1.7, 100.0),
    # Delivered shares vary between runs of the same code (2026-11-25: 99.83 and 100 on
    # congested-5mbps/unreliable, 81 on lossy-5/latest against 82 before): a few messages
    # of margin.
    ("congested-5mbps", "unreliable"): (1.7, 99.5),
    ("congested-5mbps", "latest"): (1.7, 98.0),
    ("congested-5mbps", "video"): (1.3, 90.0),
}

LOOPBACK_LIMITS = {
    "latency_ratio_p50": (6.0, False),
    "goodput_ratio": (0.15, True),
}
"""Loose: real sockets on a shared machine (issue #2's targets are reported, not gated). The
goodput ratio moves with the machine: commit 0bf6268 measured 0.44-0.67 in one session and
0.188 on 2026-11-25 (same code, `framewire bench --quick`), so the gate only catches a
collapse, not drift."""


def hotpath_gates(report: dict[str, Any]) -> list[Gate]:
    by_name = {b["name"]: b for b in report.get("benchmarks", [])}
    gates = []
    for name, (key, limit, higher) in HOTPATH_LIMITS.items():
        bench = by_name.get(name)
        value = None if bench is None else bench.get("extra_info", {}).get(key)
        gates.append(Gate(f"{name} {key}", value, limit, higher))
    return gates


def scenario_gates(report: dict[str, Any]) -> list[Gate]:
    """Every gated (scenario, workload) must be in the report, run on the simulated link."""
    results = {r["scenario"]: r for r in report.get("results", []) if r.get("driver") == "sim"}
    gates = []
    for (scenario, workload), (max_ratio, min_pct) in SCENARIO_LIMITS.items():
        result = results.get(scenario)
        rows = {(r["system"], r["workload"]): r for r in result["rows"]} if result else {}
        fw = rows.get(("framewire", workload))
        raw = rows.get(("raw-udp", workload))
        ratio = None
        pct = None
        if fw is not None and raw is not None:
            fw_p50 = fw["latency_ms"]["p50"]
            raw_p50 = raw["latency_ms"]["p50"]
            if fw_p50 is not None and raw_p50:
                ratio = fw_p50 / raw_p50
            pct = 100.0 * fw["delivered"] / fw["sent"] if fw["sent"] else None
        where = f"{scenario}/{workload}"
        gates.append(Gate(f"{where} p50 vs raw-udp", ratio, max_ratio))
        gates.append(Gate(f"{where} delivered %", pct, min_pct, higher_is_better=True))
    return gates


def gated_scenarios() -> list[str]:
    """The scenarios CI must run for :func:`scenario_gates`."""
    return list(dict.fromkeys(name for name, _ in SCENARIO_LIMITS))


def loopback_gates(report: dict[str, Any]) -> list[Gate]:
    return [
        Gate(f"loopback {key}", report.get(key), limit, higher)
        for key, (limit, higher) in LOOPBACK_LIMITS.items()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gates", description=__doc__)
    parser.add_argument("--hotpaths", type=Path, help="pytest-benchmark JSON")
    parser.add_argument("--scenarios", type=Path, help="framewire bench SCENARIO... --json")
    parser.add_argument("--loopback", type=Path, help="framewire bench --json")
    args = parser.parse_args(argv)
    gates: list[Gate] = []
    try:
        if args.hotpaths:
            gates += hotpath_gates(json.loads(args.hotpaths.read_text()))
        if args.scenarios:
            gates += scenario_gates(json.loads(args.scenarios.read_text()))
        if args.loopback:
            gates += loopback_gates(json.loads(args.loopback.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"gates: cannot read a report: {exc}\n")
        return 2
    if not gates:
        sys.stderr.write("gates: nothing to check (give at least one report)\n")
        return 2
    for gate in gates:
        print(gate.line())
    failed = sum(not g.passed for g in gates)
    print(f"gates: {len(gates) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
