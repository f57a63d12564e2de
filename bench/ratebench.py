"""Rate-control checks: does the session's controller fill a bottleneck without queueing, and
follow a capacity drop? Does a source that follows its target beat a fixed 5 Mbit/s one on
recorded cellular links?

Every run is two engines over the simulated link (:mod:`bench.simlink`, fixed seed) with a
video-like source on the client: 30 frames a second, each ``rate / 30`` bytes, sent on the
reliable channel with a 1 s deadline (repaired while that can still help). The source follows
``Session.target_bitrate_bps`` (*adaptive*) or sends a fixed 5 Mbit/s (*fixed*). The link
itself is watched: every datagram's time through the client-to-server direction is recorded,
so the queueing delay is the model's, not an estimate.

- ``congested``: the ``congested-5mbps`` scenario; utilisation of the bottleneck and p95
  queueing delay after a 5 s warm-up.
- ``drop``: 10 Mbit/s, then 2 Mbit/s from t = 10 s; how long until the target is below
  2.2 Mbit/s.
- ``traces``: each shared cellular trace (mahimahi LTE, HSDPA Norway, 5G Ireland), adaptive
  and fixed; p95 frame latency and the share of frames delivered.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.impair import IPV4_UDP_OVERHEAD_BYTES, Impairment, LinkConfig, LinkPair
from bench.scenarios import scenario
from bench.simlink import SimNetwork
from bench.traces import default_traces_dir, shared_traces
from transport.config import RELIABLE, SessionConfig
from transport.events import Message

FPS = 30
FIXED_BPS = 5e6
FRAME_DEADLINE_S = 1.0
WARMUP_S = 5.0
CELLULAR_FOLDERS = ("mahimahi", "hsdpa_norway", "5g_ireland")


class _Watched:
    """An impairment that notes (entry time, time through the link) of every datagram."""

    def __init__(self, inner: Impairment) -> None:
        self.inner = inner
        self.samples: list[tuple[float, float, int]] = []  # (entry, delay, wire bytes)

    def deliveries(self, size: int, now: float) -> list[float]:
        out = self.inner.deliveries(size, now)
        if out:
            self.samples.append((now, min(out) - now, size + IPV4_UDP_OVERHEAD_BYTES))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _watch(net: SimNetwork) -> _Watched:
    link = net.links["c2s"]
    watched = _Watched(link.impairment)
    link.impairment = watched  # type: ignore[assignment]
    return watched


@dataclass(slots=True)
class _Source:
    """30 fps frames sized by the target (or a fixed rate), with their send times."""

    net: SimNetwork
    adaptive: bool
    fixed_bps: float = FIXED_BPS
    sent: dict[int, float] | None = None
    targets: list[tuple[float, float | None]] | None = None

    def start(self, seconds: float) -> None:
        self.sent = {}
        self.targets = []
        t0 = self.net.now
        for i in range(int(seconds * FPS)):
            self.net.schedule(t0 + i / FPS, self._frame)

    def rate_bps(self) -> float:
        target = self.net.client.target_bitrate_bps
        return target if self.adaptive and target is not None else self.fixed_bps

    def _frame(self) -> None:
        client = self.net.client
        if not client.is_established:
            return
        assert self.sent is not None and self.targets is not None
        rate = self.rate_bps()
        self.targets.append((self.net.now, client.target_bitrate_bps))
        size = max(200, int(rate / FPS / 8))
        try:
            mid = client.send(
                bytes(size), channel=RELIABLE, deadline_s=FRAME_DEADLINE_S, now=self.net.now
            )
        except Exception:
            return
        self.sent[mid] = self.net.now


def _network(link: LinkPair, seed: int, adaptive: bool) -> SimNetwork:
    """Adaptive runs use the delay-based controller (its target drives the source); fixed
    runs the window-based default, which neither paces nor publishes a target."""
    net = SimNetwork(
        seed=seed,
        config=SessionConfig(congestion="gcc" if adaptive else "newreno"),
        c2s=link.forward,
        s2c=link.reverse,
        start_s=trace_start_s(link),
        max_steps=50_000_000,  # 60 s of a fast 5G trace is a few million packets
    )
    net.connect()
    return net


def trace_start_s(link: LinkPair) -> float:
    """Where to start replaying a recorded rate schedule: its first second of 1 Mbit/s or more
    (phone logs start with the download not yet running, at a few kbit/s)."""
    trace = link.forward.trace
    if trace is None or trace.kind != "rate":
        return 0.0
    for t, value in zip(trace.times_s, trace.values, strict=True):
        if value >= 1e6:
            return t
    return 0.0


def _frame_latencies(net: SimNetwork, sent: dict[int, float]) -> list[float]:
    out = []
    for t, event in net.server_log:
        if isinstance(event, Message) and event.channel == RELIABLE and event.message_id in sent:
            out.append(t - sent[event.message_id])
    return out


def _p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stream(
    link: LinkPair,
    seconds: float,
    adaptive: bool,
    seed: int,
    switch: tuple[float, LinkConfig] | None = None,
) -> dict[str, Any]:
    """One run; returns frame latencies, link delays and target samples."""
    net = _network(link, seed, adaptive)
    watched = _watch(net)
    source = _Source(net, adaptive)
    t0 = net.now
    source.start(seconds)
    if switch is not None:
        at, config = switch

        def step() -> None:
            inner = Impairment(config, f"{seed}/c2s/step")
            watched.inner = inner

        net.schedule(t0 + at, step)
    net.run(t0 + seconds + FRAME_DEADLINE_S)
    assert source.sent is not None and source.targets is not None
    latencies = _frame_latencies(net, source.sent)
    return {
        "t0": t0,
        "net": net,
        "frames_sent": len(source.sent),
        "latencies": latencies,
        "link": watched.samples,
        "targets": [(t - t0, v) for t, v in source.targets],
    }


def congested(seed: int, seconds: float = 35.0) -> dict[str, Any]:
    """Utilisation and queueing delay on ``congested-5mbps`` with the adaptive source."""
    found = scenario("congested-5mbps")
    run = stream(found.link, seconds, True, seed)
    rate = found.link.forward.rate_bps
    assert rate is not None
    start = run["t0"] + WARMUP_S
    end = run["t0"] + seconds
    samples = [s for s in run["link"] if start <= s[0] < end]
    base = min(d for _, d, _ in run["link"])
    wire_bits = 8 * sum(size for _, _, size in samples)
    queue_ms = [1e3 * (d - base) for _, d, _ in samples]
    return {
        "check": "congested-5mbps",
        "utilisation": wire_bits / (rate * (end - start)),
        "queue_delay_ms_p50": _p(queue_ms, 0.50),
        "queue_delay_ms_p95": _p(queue_ms, 0.95),
        "frame_latency_ms_p95": _p([1e3 * x for x in run["latencies"]], 0.95),
        "frames_delivered_pct": 100 * len(run["latencies"]) / max(1, run["frames_sent"]),
        "target_mbps_mean": _mean_target(run["targets"], WARMUP_S, seconds),
        "timeline": _timeline(run, base),
    }


def _timeline(run: dict[str, Any], base_s: float) -> dict[str, list[Any]]:
    """Target (Mbit/s) per frame, and the link's queueing delay (ms) per datagram, thinned to
    one in five (for the plot)."""
    t0 = run["t0"]
    return {
        "target": [
            (round(t, 3), None if v is None else round(v / 1e6, 3)) for t, v in run["targets"]
        ],
        "queue_ms": [
            (round(entry - t0, 3), round(1e3 * (delay - base_s), 2))
            for entry, delay, _ in run["link"][::5]
        ],
    }


def _mean_target(
    targets: list[tuple[float, float | None]], start: float, end: float
) -> float | None:
    values = [v for t, v in targets if start <= t < end and v is not None]
    return statistics.fmean(values) / 1e6 if values else None


def drop(
    seed: int, before_bps: float = 10e6, after_bps: float = 2e6, at_s: float = 10.0
) -> dict[str, Any]:
    """Capacity ``before_bps`` then ``after_bps`` from ``at_s``: when the target falls below
    1.1 x ``after_bps``."""
    before = LinkConfig(delay_s=0.010, rate_bps=before_bps, queue_packets=50)
    link = LinkPair(forward=before, reverse=LinkConfig(delay_s=0.010))
    run = stream(link, at_s + 5.0, True, seed, switch=(at_s, replace(before, rate_bps=after_bps)))
    limit = 1.1 * after_bps
    below = [t for t, v in run["targets"] if t >= at_s and v is not None and v < limit]
    return {
        "check": f"capacity {before_bps / 1e6:g} -> {after_bps / 1e6:g} Mbit/s",
        "target_mbps_before": _mean_target(run["targets"], at_s - 3.0, at_s),
        "seconds_to_below": None if not below else below[0] - at_s,
        "limit_mbps": limit / 1e6,
        "at_s": at_s,
        "timeline": _timeline(run, min(d for _, d, _ in run["link"])),
    }


def cellular_traces(traces_dir: Path | None = None) -> list[str]:
    """Names of the shared cellular traces (scenario names ``trace/<file>``)."""
    folder = traces_dir if traces_dir is not None else default_traces_dir()
    if folder is None or not folder.is_dir():
        return []
    return [
        "trace/" + entry.name
        for entry in shared_traces(folder)
        if entry.name.split("/", 1)[0] in CELLULAR_FOLDERS
    ]


def trace_row(
    name: str, seed: int, seconds: float, traces_dir: Path | None = None
) -> dict[str, Any]:
    """Adaptive and fixed on one trace: p95 frame latency and frames delivered."""
    found = scenario(name, traces_dir)
    row: dict[str, Any] = {"trace": name.removeprefix("trace/")}
    for mode, adaptive in (("adaptive", True), ("fixed", False)):
        run = stream(found.link, seconds, adaptive, seed)
        latencies_ms = [1e3 * x for x in run["latencies"]]
        row[mode] = {
            "frame_latency_ms_p50": _p(latencies_ms, 0.50),
            "frame_latency_ms_p95": _p(latencies_ms, 0.95),
            "delivered_pct": 100 * len(latencies_ms) / max(1, run["frames_sent"]),
            "mbps_delivered": 8 * sum(s[2] for s in run["link"]) / seconds / 1e6,
        }
    return row


def run(
    seed: int = 1,
    quick: bool = False,
    traces_dir: Path | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    say("rate: congested-5mbps")
    result: dict[str, Any] = {"seed": seed, "congested": congested(seed)}
    say("rate: capacity drop 10 -> 2 Mbit/s")
    result["drop"] = drop(seed)
    names = cellular_traces(traces_dir)
    if quick:
        names = [n for n in names if n.startswith("trace/mahimahi/")]
    seconds = 20.0 if quick else 60.0
    rows = []
    for i, name in enumerate(names, 1):
        say(f"rate: trace {i}/{len(names)} {name}")
        rows.append(trace_row(name, seed, seconds, traces_dir))
    result["traces"] = rows
    result["trace_seconds"] = seconds
    result["checks"] = checks(result)
    result["passed"] = all(c["passed"] for c in result["checks"])
    return result


def checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with what was measured and whether it holds."""
    c, d = result["congested"], result["drop"]
    below = d["seconds_to_below"]
    return [
        {
            "name": "congested-5mbps utilisation",
            "measured": c["utilisation"],
            "target": ">= 0.80",
            "passed": c["utilisation"] >= 0.80,
        },
        {
            "name": "congested-5mbps queueing delay p95 (ms)",
            "measured": c["queue_delay_ms_p95"],
            "target": "<= 50",
            "passed": c["queue_delay_ms_p95"] is not None and c["queue_delay_ms_p95"] <= 50.0,
        },
        {
            "name": f"{d['check']}: seconds until target < {d['limit_mbps']:g} Mbit/s",
            "measured": below,
            "target": "<= 1.0",
            "passed": below is not None and below <= 1.0,
        },
    ]


def plot(result: dict[str, Any], path: Path) -> None:
    """Target and queueing delay over time, for the congested link and the capacity drop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = (
        ("congested-5mbps (5 Mbit/s, 50-packet queue)", result["congested"], None),
        (result["drop"]["check"], result["drop"], result["drop"]["at_s"]),
    )
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 5.6), squeeze=False)
    for ax, (title, run, at_s) in zip(axes[:, 0], runs, strict=True):
        timeline = run["timeline"]
        ts = [t for t, _ in timeline["target"]]
        ax.plot(ts, [math.nan if v is None else v for _, v in timeline["target"]], label="target")
        ax.set_ylabel("Mbit/s")
        ax.set_xlabel("s")
        if at_s is not None:
            ax.axvline(at_s, color="grey", linestyle=":", label="capacity drop")
        queue = ax.twinx()
        queue.plot(
            [t for t, _ in timeline["queue_ms"]],
            [q for _, q in timeline["queue_ms"]],
            color="tab:red",
            linewidth=0.6,
            alpha=0.6,
        )
        queue.set_ylabel("queueing delay ms", color="tab:red")
        ax.set_title(title, fontsize=9)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(result: dict[str, Any]) -> list[str]:
    c, d = result["congested"], result["drop"]
    lines = [
        f"congested-5mbps: utilisation {c['utilisation']:.1%}, queueing delay p50 "
        f"{_fmt(c['queue_delay_ms_p50'])} ms p95 {_fmt(c['queue_delay_ms_p95'])} ms, "
        f"frame latency p95 {_fmt(c['frame_latency_ms_p95'])} ms, target mean "
        f"{_fmt(c['target_mbps_mean'], 2)} Mbit/s",
        f"{d['check']}: target {_fmt(d['target_mbps_before'], 2)} Mbit/s before; below "
        f"{d['limit_mbps']:g} Mbit/s after {_fmt(d['seconds_to_below'], 3)} s",
        "",
        "| trace | adaptive p95 ms | fixed 5 Mbit/s p95 ms | adaptive delivered "
        "| fixed delivered |",
        "|---|---|---|---|---|",
    ]
    for row in result["traces"]:
        a, f = row["adaptive"], row["fixed"]
        lines.append(
            f"| {row['trace']} | {_fmt(a['frame_latency_ms_p95'])} | "
            f"{_fmt(f['frame_latency_ms_p95'])} | {a['delivered_pct']:.1f} % | "
            f"{f['delivered_pct']:.1f} % |"
        )
    return lines


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"
