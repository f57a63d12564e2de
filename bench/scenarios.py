"""The scenario catalogue: named, versioned links that tests, benchmarks and docs share.

A scenario is a :class:`~bench.impair.LinkPair` with a name, a version and one line saying
what it stands for. Change what a scenario does and its version goes up, so results carry
the version they were measured with and are never compared across a change silently.

Besides the built-in ones there is one scenario per recorded trace in the shared traces
folder (``trace/<file>``, e.g. ``trace/mahimahi/ATT-LTE-driving.down``): the trace shapes the
forward direction on top of a fixed propagation delay (the recordings carry none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError
from bench.impair import GilbertElliott, LinkConfig, LinkPair, Spikes
from bench.traces import (
    Trace,
    TraceEntry,
    TraceError,
    default_traces_dir,
    load_trace,
    shared_traces,
)

TRACE_PREFIX = "trace/"
TRACE_DELAY_S = 0.020
"""One-way propagation delay under a trace scenario: a typical cellular core path."""
TRACE_QUEUE_PACKETS = 100
"""Bottleneck queue under a rate or opportunity trace (Mahimahi's own default is unbounded;
a bounded one turns overload into loss, as real base stations do)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    version: int
    description: str
    link: LinkPair = field(default_factory=LinkPair)
    relay_args: tuple[str, ...] = ()
    """What makes ``framewire impair`` (and ``python -m bench.relay``) apply this link."""
    trace_file: Path | None = None
    """The file behind a ``--trace FILE`` scenario (not in the catalogue)."""

    def __post_init__(self) -> None:
        if not self.relay_args:
            object.__setattr__(self, "relay_args", ("--scenario", self.name))

    def line(self) -> str:
        """One line for ``framewire bench --list``."""
        return f"{self.name:<28} v{self.version}  {self.description}"


def _symmetric(config: LinkConfig) -> LinkPair:
    return LinkPair(forward=config, reverse=config)


BUILTIN: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(name="clean", version=1, description="no impairment at all (the floor)"),
        Scenario(
            name="lan",
            version=1,
            description="wired LAN: 1 ms one-way, 0.2 ms jitter (sd), in order",
            link=_symmetric(LinkConfig(delay_s=0.001, jitter_s=0.0002, jitter_keeps_order=True)),
        ),
        Scenario(
            name="wifi-spikes",
            version=1,
            description="Wi-Fi: 2 ms one-way, 0.5 ms jitter, 40 ms stalls about once a second",
            link=_symmetric(
                LinkConfig(
                    delay_s=0.002,
                    jitter_s=0.0005,
                    jitter_keeps_order=True,
                    spikes=Spikes(
                        amplitude_s=0.040, duration_s=0.040, period_s=1.0, phase_jitter_s=0.1
                    ),
                )
            ),
        ),
        Scenario(
            name="lossy-5",
            version=1,
            description="5% random loss each way, 10 ms one-way, 1 ms jitter",
            link=_symmetric(
                LinkConfig(delay_s=0.010, jitter_s=0.001, jitter_keeps_order=True, loss=0.05)
            ),
        ),
        Scenario(
            name="burst-loss",
            version=1,
            description="3% loss in bursts of 4 datagrams on average (Gilbert-Elliott), 10 ms",
            link=_symmetric(
                LinkConfig(
                    delay_s=0.010,
                    jitter_s=0.001,
                    jitter_keeps_order=True,
                    burst=GilbertElliott.from_loss(0.03, 4.0),
                )
            ),
        ),
        Scenario(
            name="congested-5mbps",
            version=1,
            description="5 Mbit/s bottleneck with a 50-packet queue (tail drop), 10 ms",
            link=LinkPair(
                forward=LinkConfig(delay_s=0.010, rate_bps=5e6, queue_packets=50),
                reverse=LinkConfig(delay_s=0.010),
            ),
        ),
    )
}


def trace_scenario(entry: TraceEntry) -> Scenario:
    """The scenario replaying one recorded trace in the forward direction."""
    description = f"{entry.format} trace: {entry.description}"
    return Scenario(name=TRACE_PREFIX + entry.name, version=1, description=description)


def _load(path: Path, format: str | None = None) -> Trace:
    try:
        return load_trace(path, format=format)
    except TraceError as exc:
        raise BenchError(str(exc)) from exc


def _trace_pair(trace: Trace, delay_s: float = TRACE_DELAY_S) -> LinkPair:
    """The trace shapes the forward direction; both add the propagation delay."""
    queue = None if trace.kind == "delay" else TRACE_QUEUE_PACKETS
    forward = LinkConfig(delay_s=delay_s, trace=trace, queue_packets=queue)
    return LinkPair(forward=forward, reverse=LinkConfig(delay_s=delay_s))


def catalogue(traces_dir: Path | None = None) -> list[Scenario]:
    """Every scenario: the built-in ones, then one per shared trace (when the folder is
    there; trace links load when a scenario is picked, see :func:`scenario`)."""
    scenarios = list(BUILTIN.values())
    folder = traces_dir if traces_dir is not None else default_traces_dir()
    if folder is not None and folder.is_dir():
        scenarios += [trace_scenario(entry) for entry in shared_traces(folder)]
    return scenarios


def scenario(name: str, traces_dir: Path | None = None) -> Scenario:
    """The scenario called ``name``, links loaded; BenchError saying what exists if none."""
    found = BUILTIN.get(name)
    if found is not None:
        return found
    if name.startswith(TRACE_PREFIX):
        folder = traces_dir if traces_dir is not None else default_traces_dir()
        if folder is None or not folder.is_dir():
            where = folder if folder is not None else "../shared/traces"
            raise BenchError(
                f"scenario {name!r} replays a shared trace, but the traces folder {where} "
                "is missing (pass --traces DIR)"
            )
        wanted = name[len(TRACE_PREFIX) :]
        for entry in shared_traces(folder):
            if entry.name == wanted:
                base = trace_scenario(entry)
                return Scenario(
                    name=base.name,
                    version=base.version,
                    description=base.description,
                    link=_trace_pair(_load(entry.path, entry.format)),
                    relay_args=("--scenario", base.name, "--traces", str(folder)),
                )
        raise BenchError(f"no trace {wanted!r} in {folder} (see framewire bench --list)")
    known = ", ".join(BUILTIN)
    raise BenchError(f"unknown scenario {name!r}: built-in ones are {known}, plus trace/...")


def scenario_args(found: Scenario) -> tuple[str, ...]:
    """Command-line options that name ``found`` again (``--scenario``/``--trace``)."""
    if found.trace_file is not None:
        return ("--trace", str(found.trace_file))
    return found.relay_args


def file_trace_scenario(path: Path, *, delay_s: float = TRACE_DELAY_S) -> Scenario:
    """A scenario for ``--trace FILE``: any file in one of the shared trace formats."""
    trace = _load(path)
    return Scenario(
        name=f"{TRACE_PREFIX}{path.name}",
        version=1,
        description=f"{trace.format} trace from {path}",
        link=_trace_pair(trace, delay_s),
        relay_args=("--fwd-trace", str(path), "--delay-ms", str(delay_s * 1e3)),
        trace_file=path,
    )
