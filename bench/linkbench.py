"""Link-estimate checks: is ``Session.stats().link`` right, and does its class react in time?

Every check runs two engines over the simulated link (:mod:`bench.simlink`, virtual clock,
fixed seed) and reads the client's own estimate of its outgoing path:

- **accuracy**: after 5 s on a stationary link, each estimate next to the configured truth
  (RTT, loss at 1/5/20 %, jitter, bandwidth under a 5 and a 20 Mbit/s limit);
- **reaction**: a stream at a steady rate, then one step (rate 50 -> 2 Mbit/s, loss 0 -> 10 %,
  the wifi-spikes stalls switching on); how long until the quality class changes;
- **stability**: long runs on stationary links, counting class changes per minute;
- **spikes**: the period the detector finds for periodic stalls, against the configured one.

The probe streams are the session's own traffic: unreliable 1000-byte messages at a fixed rate
(the probe), or a reliable bulk transfer that always has data waiting (what a bandwidth
estimate needs: a sender that offers more than the link carries). The checks measure the
estimators, not congestion control, so the probe session's window floor is raised to keep the
controller from throttling the probe below its rate on a lossy link (``PROBE_CONFIG``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from bench.impair import Impairment, LinkConfig, Spikes
from bench.scenarios import scenario
from bench.simlink import SimNetwork
from transport.config import UNRELIABLE, SessionConfig
from transport.events import LinkQualityChanged
from transport.stats import LinkStats

ONE_WAY_S = 0.020
PROBE_PPS = 400
PROBE_BYTES = 1000
PROBE_CONFIG = SessionConfig(min_window_packets=64, initial_window_packets=64)
SETTLE_S = 5.0
REACTION_LIMIT_S = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    """One comparison: what was configured, what the estimate said, and the tolerance."""

    group: str
    name: str
    field: str
    truth: float
    measured: float | None
    tolerance: str
    passed: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "name": self.name,
            "field": self.field,
            "truth": round(self.truth, 4),
            "measured": None if self.measured is None else round(self.measured, 4),
            "tolerance": self.tolerance,
            "passed": self.passed,
        }


# -- driving the simulated link -----------------------------------------------------------


def _network(c2s: LinkConfig, seed: int, config: SessionConfig = PROBE_CONFIG) -> SimNetwork:
    net = SimNetwork(seed=seed, config=config, c2s=c2s, s2c=LinkConfig(delay_s=ONE_WAY_S))
    net.connect()
    return net


def _probe(net: SimNetwork, seconds: float, pps: float = PROBE_PPS) -> None:
    """Unreliable probe messages at ``pps`` for ``seconds`` from now."""
    count = int(seconds * pps) + 1
    net.send_many(
        "client",
        (bytes(PROBE_BYTES) for _ in range(count)),
        channel=UNRELIABLE,
        interval_s=1 / pps,
    )


def _bulk(net: SimNetwork) -> None:
    """A reliable transfer that always has at least 1 MB waiting."""

    def top_up(network: SimNetwork) -> None:
        if network.client.is_established and network.client.send_queue_bytes < 1_000_000:
            network.send("client", bytes(1_000_000), channel=0)

    net.observers.append(top_up)
    top_up(net)


def _switch(net: SimNetwork, at: float, config: LinkConfig, seed: int) -> None:
    """From ``at``, the client-to-server direction follows ``config`` (a new model state)."""

    def action() -> None:
        link = net.links["c2s"]
        link.config = config
        link.impairment = Impairment(config, f"{seed}/c2s/step")

    net.schedule(at, action)


def _link(net: SimNetwork) -> LinkStats:
    return net.client.stats(net.now).link


# -- accuracy ---------------------------------------------------------------------------------


def _within(measured: float | None, truth: float, rel: float, floor: float = 0.0) -> bool:
    return measured is not None and abs(measured - truth) <= max(rel * truth, floor)


def accuracy(seed: int, seconds: float = SETTLE_S) -> list[Check]:
    """Each estimate after ``seconds`` on a stationary link, against the configured value."""
    checks: list[Check] = []
    true_rtt_ms = 2 * ONE_WAY_S * 1e3

    net = _network(LinkConfig(delay_s=ONE_WAY_S), seed)
    _probe(net, seconds)
    net.run_for(seconds)
    rtt = _link(net).rtt_ms
    ok = _within(rtt, true_rtt_ms, 0.10, 0.5)
    checks.append(
        Check(
            group="accuracy",
            name="clean 40 ms RTT",
            field="rtt_ms",
            truth=true_rtt_ms,
            measured=rtt,
            tolerance="10 % or 0.5 ms",
            passed=ok,
        )
    )

    for loss in (0.01, 0.05, 0.20):
        net = _network(LinkConfig(delay_s=ONE_WAY_S, loss=loss), seed)
        _probe(net, seconds, pps=2000)
        net.run_for(seconds)
        measured = _link(net).loss_pct
        checks.append(
            Check(
                group="accuracy",
                name=f"{loss:.0%} random loss",
                field="loss_pct",
                truth=100 * loss,
                measured=measured,
                tolerance="1 point",
                passed=abs(measured - 100 * loss) <= 1.0,
            )
        )

    for jitter_s in (0.002, 0.005, 0.010):
        net = _network(LinkConfig(delay_s=ONE_WAY_S, jitter_s=jitter_s), seed)
        _probe(net, seconds)
        net.run_for(seconds)
        jitter_ms = _link(net).jitter_ms
        checks.append(
            Check(
                group="accuracy",
                name=f"{jitter_s * 1e3:g} ms jitter (sd, normal)",
                field="jitter_ms",
                truth=jitter_s * 1e3,
                measured=jitter_ms,
                tolerance="20 %",
                passed=_within(jitter_ms, jitter_s * 1e3, 0.20),
            )
        )

    for rate_bps in (5e6, 20e6):
        net = _network(
            LinkConfig(delay_s=ONE_WAY_S, rate_bps=rate_bps, queue_packets=100),
            seed,
            SessionConfig(),
        )
        _bulk(net)
        net.run_for(seconds)
        bandwidth = _link(net).bandwidth_mbps
        checks.append(
            Check(
                group="accuracy",
                name=f"{rate_bps / 1e6:g} Mbit/s limit, bulk sender",
                field="bandwidth_mbps",
                truth=rate_bps / 1e6,
                measured=bandwidth,
                tolerance="20 %",
                passed=_within(bandwidth, rate_bps / 1e6, 0.20),
            )
        )
    return checks


# -- reaction ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    name: str
    before: LinkConfig
    after: LinkConfig
    onset: Callable[[float, SimNetwork], float] | None = None
    """When the change shows (default: the switch itself); spikes start after it."""


def _steps(switch_s: float) -> list[Step]:
    base = LinkConfig(delay_s=ONE_WAY_S)
    wifi = scenario("wifi-spikes").link.forward.spikes
    assert wifi is not None
    spikes = replace(wifi, offset_s=switch_s + 0.3)

    def first_spike(at: float, net: SimNetwork) -> float:
        onset = net.links["c2s"].impairment.spike_onset(0)
        assert onset is not None
        return onset

    return [
        Step(
            name="rate 50 -> 2 Mbit/s",
            before=replace(base, rate_bps=50e6, queue_packets=100),
            after=replace(base, rate_bps=2e6, queue_packets=100),
        ),
        Step(name="loss 0 -> 10 %", before=base, after=replace(base, loss=0.10)),
        Step(
            name="wifi-spikes switch on",
            before=base,
            after=replace(base, spikes=spikes),
            onset=first_spike,
        ),
    ]


def reaction(seed: int, warmup_s: float = 10.0) -> tuple[list[Check], list[dict[str, Any]]]:
    """Time from each step to the first class change after it (the probe runs throughout,
    with the default session settings)."""
    checks: list[Check] = []
    timelines: list[dict[str, Any]] = []
    for step in _steps(warmup_s):
        net = _network(step.before, seed, SessionConfig())
        t0 = net.now
        switch_at = t0 + warmup_s
        for s in _steps(switch_at):
            if s.name == step.name:
                step = s
        _probe(net, warmup_s + 3.0)
        _switch(net, switch_at, step.after, seed)
        timeline = _sample_timeline(net, t0 + warmup_s + 3.0)
        onset = step.onset(switch_at, net) if step.onset else switch_at
        before = _class_at(net, switch_at)
        changes = [
            (t, e) for t, e in net.client_log if isinstance(e, LinkQualityChanged) and t >= onset
        ]
        took = changes[0][0] - onset if changes else None
        after = changes[0][1].quality if changes else before
        checks.append(
            Check(
                group="reaction",
                name=f"{step.name}: {before} -> {after}",
                field="quality",
                truth=REACTION_LIMIT_S * 1e3,
                measured=None if took is None else took * 1e3,
                tolerance="<= 500 ms",
                passed=took is not None and took <= REACTION_LIMIT_S,
            )
        )
        timelines.append(
            {
                "step": step.name,
                "onset_s": onset - t0,
                "samples": [{**p, "t": p["t"] - t0} for p in timeline],
            }
        )
    return checks, timelines


def _class_at(net: SimNetwork, t: float) -> str:
    quality = "unknown"
    for at, event in net.client_log:
        if at > t:
            break
        if isinstance(event, LinkQualityChanged):
            quality = event.quality
    return quality


def _sample_timeline(net: SimNetwork, until: float, every_s: float = 0.05) -> list[dict[str, Any]]:
    """Run to ``until``, reading the estimate every ``every_s`` (for the plots)."""
    samples: list[dict[str, Any]] = []
    while net.now < until:
        net.run(min(until, net.now + every_s))
        link = _link(net)
        samples.append(
            {
                "t": net.now,
                "quality": link.quality,
                "rtt_ms": link.rtt_ms,
                "loss_pct": link.loss_pct,
                "jitter_ms": link.jitter_ms,
                "queue_delay_ms": link.queue_delay_ms,
            }
        )
    return samples


# -- stability and spikes ---------------------------------------------------------------------


def stability(seed: int, seconds: float) -> list[Check]:
    """Class changes per minute on stationary links, after a 10 s settling time."""
    links = {
        "clean 40 ms RTT": LinkConfig(delay_s=ONE_WAY_S),
        "1 % loss (the good/moderate edge)": LinkConfig(delay_s=ONE_WAY_S, loss=0.01),
        "5 % loss": LinkConfig(delay_s=ONE_WAY_S, loss=0.05),
        "2 ms jitter": LinkConfig(delay_s=ONE_WAY_S, jitter_s=0.002),
        "wifi-spikes": scenario("wifi-spikes").link.forward,
    }
    checks = []
    settle_s = 10.0
    for name, config in links.items():
        net = _network(config, seed, SessionConfig())
        t0 = net.now
        _probe(net, settle_s + seconds)
        net.run_for(settle_s + seconds)
        changes = sum(
            1 for t, e in net.client_log if isinstance(e, LinkQualityChanged) and t >= t0 + settle_s
        )
        per_minute = changes * 60.0 / seconds
        checks.append(
            Check(
                group="stability",
                name=f"{name}, {seconds:g} s ({_link(net).quality})",
                field="changes_per_min",
                truth=1.0,
                measured=per_minute,
                tolerance="<= 1 per minute",
                passed=per_minute <= 1.0,
            )
        )
    return checks


def spikes(seed: int, seconds: float = 30.0) -> list[Check]:
    """The period found for periodic stalls against the configured one."""
    checks = []
    for period_s, amplitude_s in ((1.0, 0.040), (0.5, 0.030), (2.0, 0.080)):
        config = LinkConfig(
            delay_s=ONE_WAY_S,
            spikes=Spikes(
                amplitude_s=amplitude_s,
                duration_s=amplitude_s,
                period_s=period_s,
                phase_jitter_s=0.1 * period_s,
            ),
        )
        net = _network(config, seed, SessionConfig())
        _probe(net, seconds)
        net.run_for(seconds)
        found = _link(net).spikes
        measured = None if found is None else found.period_ms
        checks.append(
            Check(
                group="spikes",
                name=f"{amplitude_s * 1e3:g} ms stalls every {period_s:g} s (+-10 % phase)",
                field="spikes.period_ms",
                truth=period_s * 1e3,
                measured=measured,
                tolerance="10 %",
                passed=_within(measured, period_s * 1e3, 0.10),
            )
        )
    return checks


def run(
    seed: int = 1, quick: bool = False, say: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
    """Every check; ``quick`` shortens the stability runs (60 s instead of 120 s)."""
    say("link: accuracy after 5 s on stationary links")
    checks = accuracy(seed)
    say("link: reaction to steps (rate, loss, spikes)")
    reaction_checks, timelines = reaction(seed)
    checks += reaction_checks
    stable_s = 60.0 if quick else 120.0
    say(f"link: class changes on stationary links over {stable_s:g} s")
    checks += stability(seed, stable_s)
    say("link: periodic spike detection")
    checks += spikes(seed)
    return {
        "seed": seed,
        "checks": [c.as_json() for c in checks],
        "passed": all(c.passed for c in checks),
        "timelines": timelines,
    }


def table(result: dict[str, Any]) -> list[str]:
    """The checks as a Markdown table."""
    lines = ["| check | field | truth | measured | tolerance | ok |", "|---|---|---|---|---|---|"]
    for c in result["checks"]:
        measured = "—" if c["measured"] is None else f"{c['measured']:.3g}"
        lines.append(
            f"| {c['group']}: {c['name']} | `{c['field']}` | {c['truth']:g} | {measured} "
            f"| {c['tolerance']} | {'yes' if c['passed'] else 'NO'} |"
        )
    return lines


def plot(result: dict[str, Any], path: Any) -> None:
    """The reaction runs over time: RTT, loss, jitter and the class, the step marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timelines = result["timelines"]
    fig, axes = plt.subplots(len(timelines), 1, figsize=(9, 2.6 * len(timelines)), squeeze=False)
    levels = {"unknown": 0, "minimal": 1, "moderate": 2, "good": 3}
    for ax, timeline in zip(axes[:, 0], timelines, strict=True):
        ts = [p["t"] for p in timeline["samples"]]
        ax.plot(ts, [p["rtt_ms"] or math.nan for p in timeline["samples"]], label="rtt ms")
        ax.plot(ts, [p["jitter_ms"] or math.nan for p in timeline["samples"]], label="jitter ms")
        ax.plot(ts, [p["loss_pct"] for p in timeline["samples"]], label="loss %")
        ax.axvline(timeline["onset_s"], color="k", linestyle=":", label="step")
        ax.set_title(timeline["step"])
        ax.set_xlabel("s")
        right = ax.twinx()
        right.step(
            ts,
            [levels[p["quality"]] for p in timeline["samples"]],
            color="tab:red",
            where="post",
            label="quality",
        )
        right.set_yticks(list(levels.values()), list(levels))
        ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
