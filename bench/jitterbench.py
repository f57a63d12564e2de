"""Jitter-buffer modes compared on a link: ``smooth`` against the smallest ``fixed:MS`` that
keeps late frames at or below 1 %, and ``realtime``'s added delay.

A 720p30 video stream (``FPS`` frames a second at ``BITRATE_BPS``: P-frames of the mean size
+-25 % and a keyframe of five times that every 2 s, seeded) goes over the simulated link
(:mod:`bench.simlink`, fixed seed) on the unreliable channel with a 1 s deadline; the arrival
of every frame is recorded. The recording is then played through
:class:`stream.jitter.JitterBuffer` in each mode on a virtual clock, waking exactly when the
buffer asks (sans-I/O, so the replay is the buffer's whole behaviour). ``path_delay_s`` is
half the receiver's minimum RTT, as a receiver would set it.

Per mode: late frames (%), playout delay (sender hand-off to release) mean/p50/p95, added
delay (release minus arrival) p50, stalls. ``fixed`` is swept in 1 ms steps to find the
smallest value with late <= 1 %.

``python -m bench.jitterbench [--scenario NAME] [--seconds S] [--seed N] [--json]``
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.ratebench import cellular_traces, trace_start_s
from bench.scenarios import scenario
from bench.simlink import SimNetwork
from stream.jitter import FrameDropped, FrameReleased, JitterBuffer, JitterConfig, Stall
from transport.config import UNRELIABLE, SessionConfig
from transport.events import Message

FPS = 30
BITRATE_BPS = 2.5e6
GOP = 60
DEADLINE_S = 1.0
LATE_LIMIT_PCT = 1.0


@dataclass(frozen=True, slots=True)
class Arrival:
    index: int
    sent_s: float
    arrived_s: float


def record(
    name: str,
    seconds: float,
    seed: int,
    *,
    adaptive: bool = False,
    traces_dir: Path | None = None,
) -> tuple[list[Arrival], int, float]:
    """Frames sent over scenario ``name``: (arrivals in arrival order, frames sent, the
    receiver's min RTT / 2). ``adaptive``: the delay-based controller runs and the frames
    follow its target (85 % of it, +-25 %, as ``framewire send --bitrate auto`` with intra
    refresh: no keyframe bursts); else a fixed ``BITRATE_BPS`` with a keyframe every 2 s."""
    found = scenario(name, traces_dir)
    net = SimNetwork(
        seed=seed,
        config=SessionConfig(congestion="gcc") if adaptive else SessionConfig(),
        c2s=found.link.forward,
        s2c=found.link.reverse,
        start_s=trace_start_s(found.link),
        max_steps=50_000_000,
    )
    server = net.connect()
    rng = random.Random(seed)
    mean = BITRATE_BPS / 8 / FPS
    p_mean = (mean * GOP - 5 * mean) / (GOP - 1)
    sent: dict[int, tuple[int, float]] = {}  # message id -> (frame index, sent)
    t0 = net.now + 0.5
    count = int(seconds * FPS)
    for i in range(count):
        size = int(5 * mean) if i % GOP == 0 else int(p_mean * rng.uniform(0.75, 1.25))
        scale = rng.uniform(0.75, 1.25)

        def send(i: int = i, size: int = size, scale: float = scale) -> None:
            target = net.client.target_bitrate_bps
            if adaptive and target is not None:
                size = max(200, int(0.85 * target / 8 / FPS * scale))
            mid = net.client.send(
                bytes(size), channel=UNRELIABLE, deadline_s=DEADLINE_S, now=net.now
            )
            sent[mid] = (i, net.now)

        net.schedule(t0 + i / FPS, send)
    net.run(t0 + seconds + DEADLINE_S)
    arrivals = []
    for t, event in net.server_log:
        if isinstance(event, Message) and event.message_id in sent:
            index, at = sent[event.message_id]
            arrivals.append(Arrival(index, at, t))
    min_rtt_ms = server.stats(net.now).link.min_rtt_ms
    return arrivals, count, (min_rtt_ms or 0.0) / 2000


def replay(
    arrivals: list[Arrival],
    frames: int,
    mode: str,
    path_delay_s: float,
    config: JitterConfig | None = None,
) -> dict[str, Any]:
    """``arrivals`` through a buffer in ``mode`` on a virtual clock."""
    jb: JitterBuffer[None] = JitterBuffer(mode, path_delay_s=path_delay_s, config=config)
    released: list[FrameReleased[None]] = []
    stalls: list[Stall] = []
    dropped = 0
    pending = sorted(arrivals, key=lambda a: a.arrived_s)
    i, now = 0, 0.0
    while True:
        wake = jb.next_wakeup(now)
        nxt = pending[i].arrived_s if i < len(pending) else None
        if nxt is None and wake is None:
            break
        if wake is not None and (nxt is None or wake < nxt):
            now = max(now, wake)
        else:
            assert nxt is not None
            now = max(now, nxt)
            a = pending[i]
            i += 1
            jb.push(a.index, a.sent_s, now, None)
        for event in jb.poll(now):
            if isinstance(event, FrameReleased):
                released.append(event)
            elif isinstance(event, Stall):
                stalls.append(event)
            elif isinstance(event, FrameDropped):
                dropped += 1
    stats = jb.stats(now)
    late = stats.late_frames + (frames - len(released) - dropped)  # never arrived: late too
    playout_ms = sorted(1e3 * r.playout_delay_s for r in released)
    added_ms = sorted(1e3 * r.waited_s for r in released)
    return {
        "mode": mode,
        "frames": frames,
        "released": len(released),
        "late_frames": late,
        "late_pct": round(100 * late / max(1, frames), 3),
        "playout_delay_ms": {
            "mean": round(statistics.fmean(playout_ms), 3) if playout_ms else None,
            "p50": _q(playout_ms, 0.5),
            "p95": _q(playout_ms, 0.95),
        },
        "added_delay_ms_p50": _q(added_ms, 0.5),
        "stalls": len(stalls),
        "stall_ms": round(1e3 * sum(s.duration_s for s in stalls), 1),
    }


def _q(values: list[float], q: float) -> float | None:
    return round(values[min(len(values) - 1, int(q * len(values)))], 3) if values else None


def smallest_fixed(
    arrivals: list[Arrival], frames: int, path_delay_s: float, limit_ms: int = 2000
) -> dict[str, Any] | None:
    """The smallest ``fixed:MS`` (1 ms steps) with late frames <= LATE_LIMIT_PCT."""
    low, high = 0, limit_ms
    if replay(arrivals, frames, f"fixed:{high}", path_delay_s)["late_pct"] > LATE_LIMIT_PCT:
        return None
    while low < high:  # late share falls as MS grows
        mid = (low + high) // 2
        if replay(arrivals, frames, f"fixed:{mid}", path_delay_s)["late_pct"] <= LATE_LIMIT_PCT:
            high = mid
        else:
            low = mid + 1
    return replay(arrivals, frames, f"fixed:{high}", path_delay_s)


def compare(
    name: str,
    seconds: float,
    seed: int,
    config: JitterConfig | None = None,
    *,
    adaptive: bool = False,
    traces_dir: Path | None = None,
) -> dict[str, Any]:
    """smooth and realtime against the smallest fixed:MS with late <= 1 %, on one recording."""
    arrivals, frames, path = record(name, seconds, seed, adaptive=adaptive, traces_dir=traces_dir)
    smooth = replay(arrivals, frames, "smooth", path, config)
    realtime = replay(arrivals, frames, "realtime", path)
    fixed = smallest_fixed(arrivals, frames, path)
    ratio = None
    if fixed is not None and fixed["playout_delay_ms"]["mean"]:
        ratio = round(smooth["playout_delay_ms"]["mean"] / fixed["playout_delay_ms"]["mean"], 3)
    return {
        "scenario": name,
        "seconds": seconds,
        "seed": seed,
        "path_delay_ms": round(path * 1e3, 3),
        "smooth": smooth,
        "realtime": realtime,
        "smallest_fixed": fixed,
        "smooth_over_fixed": ratio,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.jitterbench", description=__doc__)
    parser.add_argument("--scenario", action="append", help="default: clean and wifi-spikes")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--max-rate-change",
        type=float,
        default=JitterConfig().max_rate_change,
        help="smooth: the most the playout may run slow or fast (0.05: 5 %%)",
    )
    parser.add_argument(
        "--cellular",
        action="store_true",
        help="every shared cellular trace instead, the source following the delay-based "
        "rate control",
    )
    parser.add_argument("--traces", type=Path, metavar="DIR", help="the shared traces folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    config = JitterConfig(max_rate_change=args.max_rate_change)
    if args.cellular:
        names = cellular_traces(args.traces)
        if not names:
            print("jitterbench: no shared cellular traces found", file=sys.stderr)
            return 1
    else:
        names = args.scenario or ["clean", "wifi-spikes"]
    results = []
    for i, name in enumerate(names, 1):
        print(f"jitterbench: {i}/{len(names)} {name}", file=sys.stderr, flush=True)
        results.append(
            compare(
                name,
                args.seconds,
                args.seed,
                config,
                adaptive=args.cellular,
                traces_dir=args.traces,
            )
        )
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print(
        "| scenario | smooth late | smooth playout mean ms | smallest fixed (late <= 1 %) | "
        "its mean ms | smooth / fixed | smooth stalls | realtime added p50 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        smooth, fixed, realtime = r["smooth"], r["smallest_fixed"] or {}, r["realtime"]
        print(
            f"| {r['scenario']} | {smooth['late_pct']} % | {smooth['playout_delay_ms']['mean']} | "
            f"{fixed.get('mode')} | {(fixed.get('playout_delay_ms') or {}).get('mean')} | "
            f"{r['smooth_over_fixed']} | {smooth['stalls']} | {realtime['added_delay_ms_p50']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
