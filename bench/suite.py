"""End-to-end scenario benchmarks: framewire next to raw UDP through the same impaired link.

Per scenario, one workload mix runs from the client to the server:

- ``reliable``, ``unreliable``, ``latest``: a game's traffic, 200-byte messages at 60 Hz on a
  channel of each kind, all at once on one session;
- ``video``: real H.264 frames (the synthetic test pattern encoded once with libx264, the
  demo's settings) at 30 frames/s on the reliable channel with the demo's 100 ms deadline.

Message latency is ``send()`` to delivery; a message that never arrives (or arrives after
its deadline and is reported late) is counted, not averaged in. The floor is raw UDP through
the same link: the same messages cut into datagrams of the same size, no repair, a message
delivered when its last datagram is.

Two drivers: the simulated link (default; virtual clock, deterministic for a seed, a minute
of traffic in seconds) and, with ``real=True``, the real relay on loopback (wall clock,
separate process), see :mod:`bench.real`.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bench.errors import BenchError
from bench.impair import Impairment, LinkPair
from bench.scenarios import Scenario
from bench.simlink import SimNetwork
from transport.config import LATEST, RELIABLE, UNRELIABLE, SessionConfig
from transport.events import Message, MessageLate

GAME_MESSAGE_BYTES = 200
GAME_RATE_HZ = 60.0
VIDEO_FPS = 30.0
VIDEO_SIZE = (1280, 720)
VIDEO_BITRATE_BPS = 4_000_000
VIDEO_CHANNEL = RELIABLE
VIDEO_DEADLINE_S = 0.1
"""The demo's video settings (``framewire demo``): reliable channel, 100 ms frame deadline."""
DATAGRAM_BYTES = SessionConfig().max_datagram_bytes
WARMUP_S = 0.5
"""Traffic starts this long after the session is up (the handshake is not measured)."""
DRAIN_S = 3.0
"""How long the run continues after the last send, for stragglers and repairs."""

K = TypeVar("K", bound=Hashable)

WORKLOADS: dict[str, int] = {
    "reliable": RELIABLE,
    "unreliable": UNRELIABLE,
    "latest": LATEST,
    "video": VIDEO_CHANNEL,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    duration_s: float
    seed: int = 1

    @classmethod
    def quick(cls, seed: int = 1) -> Plan:
        return cls(duration_s=10.0, seed=seed)

    @classmethod
    def full(cls, seed: int = 1) -> Plan:
        return cls(duration_s=60.0, seed=seed)


@dataclass(frozen=True, slots=True)
class Send:
    """One message of the workload: when, on which workload, how big, with what deadline."""

    at: float
    workload: str
    size: int
    deadline_s: float | None


def schedule(duration_s: float) -> list[Send]:
    """The workload mix, in send order, times from 0."""
    sends: list[Send] = []
    ticks = int(duration_s * GAME_RATE_HZ)
    for i in range(ticks):
        t = i / GAME_RATE_HZ
        for workload in ("reliable", "unreliable", "latest"):
            sends.append(Send(t, workload, GAME_MESSAGE_BYTES, None))
    sizes = video_frame_sizes()
    for i in range(int(duration_s * VIDEO_FPS)):
        sends.append(Send(i / VIDEO_FPS, "video", sizes[i % len(sizes)], VIDEO_DEADLINE_S))
    sends.sort(key=lambda s: s.at)
    return sends


@functools.cache
def video_frame_sizes(frames: int = 120) -> tuple[int, ...]:
    """Sizes of real encoded frames: the test pattern through libx264 with the demo's
    settings (keyframe every 60 frames), encoded once per process."""
    from stream.codec import EncoderConfig, H264Encoder
    from stream.source import SyntheticSource

    width, height = VIDEO_SIZE
    source = SyntheticSource(width, height, VIDEO_FPS)
    encoder = H264Encoder(
        EncoderConfig(width=width, height=height, fps=VIDEO_FPS, bitrate_bps=VIDEO_BITRATE_BPS)
    )
    sizes: list[int] = []
    for i in range(frames):
        sizes += [len(f.data) for f in encoder.encode(source.frame(i), i)]
    sizes += [len(f.data) for f in encoder.flush()]
    if not sizes:
        raise BenchError("the encoder produced no frames")
    return tuple(sizes)


# -- rows -----------------------------------------------------------------------------------------


def row(
    system: str,
    workload: str,
    send_s: Sequence[float],
    latency_s: Sequence[float | None],
    late: int = 0,
) -> dict[str, Any]:
    """One result row (the schema :mod:`bench.report` reads). ``late`` of the undelivered
    were reported late by the receiver; the rest count as lost."""
    delivered = [x * 1e3 for x in latency_s if x is not None]
    missing = len(latency_s) - len(delivered)
    ordered = sorted(delivered)

    def q(p: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))], 3)

    return {
        "system": system,
        "workload": workload,
        "sent": len(latency_s),
        "delivered": len(delivered),
        "lost": missing - late,
        "late": late,
        "latency_ms": {
            "p50": q(0.5),
            "p90": q(0.9),
            "p99": q(0.99),
            "mean": round(statistics.fmean(ordered), 3) if ordered else None,
            "max": round(ordered[-1], 3) if ordered else None,
        },
        "series": {
            "send_s": [round(t, 6) for t in send_s],
            "latency_ms": [round(x * 1e3, 3) if x is not None else None for x in latency_s],
        },
    }


# -- the simulated driver -------------------------------------------------------------------------


def run_sim(scenario: Scenario, plan: Plan, say: Callable[[str], None]) -> dict[str, Any]:
    """The workload through the scenario's link on the simulated link, framewire and raw."""
    sends = schedule(plan.duration_s)
    rows, start = _framewire_sim(scenario.link, sends, plan)
    rows += _raw_sim(scenario.link, sends, plan.seed, start)
    say(f"{scenario.name}: simulated {plan.duration_s:.0f} s")
    return _result(scenario, plan, "sim", rows)


def _result(
    scenario: Scenario, plan: Plan, driver: str, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "scenario": scenario.name,
        "version": scenario.version,
        "description": scenario.description,
        "driver": driver,
        "seed": plan.seed,
        "duration_s": plan.duration_s,
        "rows": rows,
    }


def _framewire_sim(
    link: LinkPair, sends: list[Send], plan: Plan
) -> tuple[list[dict[str, Any]], float]:
    """framewire's rows, and the simulated time the workload started."""
    net = SimNetwork(seed=plan.seed, c2s=link.forward, s2c=link.reverse, max_steps=50_000_000)
    net.connect(timeout_s=30.0)
    start = net.now + WARMUP_S
    mids: dict[tuple[int, int], tuple[str, float]] = {}  # (channel, id) -> workload, sent at

    def sender(s: Send) -> Callable[[], None]:
        def action() -> None:
            if net.client.is_established:
                channel = WORKLOADS[s.workload]
                mid = net.send("client", bytes(s.size), channel=channel, deadline_s=s.deadline_s)
                mids[(channel, mid)] = (s.workload, net.now)

        return action

    for s in sends:
        net.schedule(start + s.at, sender(s))
    net.run(start + plan.duration_s + DRAIN_S)
    delivered: dict[tuple[int, int], float] = {}
    late: set[tuple[int, int]] = set()
    for t, event in net.server_log:
        if isinstance(event, Message):
            delivered[(event.channel, event.message_id)] = t
        elif isinstance(event, MessageLate):
            late.add((event.channel, event.message_id))
    rows = []
    for workload in WORKLOADS:
        keys, send_s, latency = workload_series(mids, delivered, workload, start)
        n_late = sum(1 for k in keys if k not in delivered and k in late)
        rows.append(row("framewire", workload, send_s, latency, late=n_late))
    return rows, start


def workload_series(
    sent: Mapping[K, tuple[str, float]], arrived: Mapping[K, float], workload: str, start: float
) -> tuple[list[K], list[float], list[float | None]]:
    """One workload's messages in send order: their keys, send times from ``start``, and
    latencies (None: never arrived). ``sent`` maps a message key to (workload, send time),
    ``arrived`` a key to its arrival time, on the same clock."""
    keys = sorted((k for k, (w, _) in sent.items() if w == workload), key=lambda k: sent[k][1])
    send_s = [sent[k][1] - start for k in keys]
    latency = [arrived[k] - sent[k][1] if k in arrived else None for k in keys]
    return keys, send_s, latency


def _raw_sim(link: LinkPair, sends: list[Send], seed: int, start: float) -> list[dict[str, Any]]:
    """Raw UDP: each message's datagrams through the forward model; no repair. The same
    seed and clock as framewire's run, so both meet the same spikes and outages."""
    forward = Impairment(link.forward, f"{seed}/c2s")  # as SimNetwork seeds its c2s link
    by_workload: dict[str, tuple[list[float], list[float | None]]] = {
        w: ([], []) for w in WORKLOADS
    }
    for s in sends:
        at = start + s.at
        arrival = _raw_message(forward, s.size, at)
        send_s, latency = by_workload[s.workload]
        send_s.append(s.at)
        if arrival is not None and s.deadline_s is not None and arrival - at > s.deadline_s:
            arrival = None  # past its deadline: the receiver would not use it either
        latency.append(arrival - at if arrival is not None else None)
    return [row("raw-udp", w, *by_workload[w]) for w in WORKLOADS]


def _raw_message(link: Impairment, size: int, at: float) -> float | None:
    """When the last datagram of a ``size``-byte message sent at ``at`` arrives, or None."""
    last = at
    for offset in range(0, max(size, 1), DATAGRAM_BYTES):
        times = link.deliveries(min(DATAGRAM_BYTES, size - offset), at)
        if not times:
            return None
        last = max(last, min(times))
    return last


def without_series(result: dict[str, Any]) -> dict[str, Any]:
    """The result without its per-message series (for printing; the files keep them)."""
    rows = [{k: v for k, v in r.items() if k != "series"} for r in result["rows"]]
    return {**result, "rows": rows}


ANCHORS = ("aiortc", "srt")
SRT_LATENCY_MS = 120
"""SRT's own default receive latency (``SRTO_LATENCY``): what a user gets out of the box."""


def run(
    scenarios: Sequence[Scenario],
    plan: Plan,
    *,
    real: bool = False,
    compare: Sequence[str] = (),
    auto: bool = False,
    say: Callable[[str], None] = lambda _line: None,
) -> list[dict[str, Any]]:
    """Every scenario through the chosen driver; one result per scenario.

    The anchors run through the real relay whatever the driver (they cannot run on the
    simulated link): those in ``compare`` are installed when missing; with ``auto``, the
    others run when they happen to be installed. A note says what ran where, or why not.
    """
    results = []
    for scenario in scenarios:
        if real:
            from bench.real import run_real

            result = run_real(scenario, plan, say)
        else:
            result = run_sim(scenario, plan, say)
        notes = [
            _anchor_rows(system, scenario, plan, result, compare, say)
            for system in ANCHORS
            if auto or system in compare
        ]
        if any(notes):
            result["notes"] = [n for n in notes if n]
        results.append(result)
    return results


def _anchor_rows(
    system: str,
    scenario: Scenario,
    plan: Plan,
    result: dict[str, Any],
    compare: Sequence[str],
    say: Callable[[str], None],
) -> str | None:
    """Add ``system``'s rows to ``result``; a note when it did not run (or ran elsewhere)."""
    from bench import anchors

    try:
        anchors.ensure_installed(system, install=system in compare, say=say)
    except anchors.AnchorUnavailable as exc:
        return None if system not in compare else f"{system}: {exc}"
    say(f"{scenario.name}: {system} through the relay")
    try:
        if system == "aiortc":
            rows = anchors.run_aiortc(
                scenario.relay_args, seed=plan.seed, duration_s=plan.duration_s, say=say
            )
        else:
            rows = anchors.run_srt(
                scenario.relay_args,
                seed=plan.seed,
                duration_s=plan.duration_s,
                latency_ms=SRT_LATENCY_MS,
                say=say,
            )
    except anchors.AnchorUnavailable as exc:
        say(f"{system}: {exc}")
        return f"{system}: did not run: {exc}"
    for r in rows:
        r["driver"] = "relay"
    result["rows"] += rows
    settings = f", receive latency {SRT_LATENCY_MS} ms (its default)" if system == "srt" else ""
    if result["driver"] == "sim":
        return (
            f"{system} rows ran through the real relay on loopback (same link, same seed){settings}"
        )
    return f"{system}{settings}" if settings else None
