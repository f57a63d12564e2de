"""Loss recovery within deadlines, measured (issue 4): NACK repair (ARQ), parity (FEC), both.

``python -m bench.recovery [--quick] [--json] [--out FILE] [--default-window]
[--congestion newreno|gcc] [--relay]``

Workloads, client to server on the unreliable channel, over the simulated link with a 20 ms
round trip (10 ms each way, the same loss both ways):

- ``video``: 30 frames/s at 2 Mbit/s, each frame with a 33 ms deadline: a 60 KB keyframe
  every 2 s and P-frames filling the rest of the rate (about 7.5 KB, +-25 %, seeded);
- ``keyframes``: a 150 KB frame every 0.5 s, 33 ms deadline;
- ``game``: 200-byte messages at 60 Hz, 100 ms deadline.

Links: 1 %, 5 % and 10 % random loss, and Gilbert-Elliott burst loss of 5 % in bursts of 3
datagrams on average. Modes: ``none`` (recovery off), ``arq`` (NACK only), ``fec`` (parity
only), ``both``. Per row: the share of messages delivered whole before their deadline
(``send()`` to delivery, on the simulated clock), the overhead (extra bytes on the wire, both
directions, against ``none`` on the same link and seed), repairs sent, NACK frames, parity
frames sent and pieces rebuilt from parity.

``--relay`` runs the same rows over real sockets on loopback, through an impairment relay
process (``python -m bench.relay``) that applies the same link; times are this machine's
monotonic clock, and the overhead counts the bytes both sessions sent.

Congestion control is taken out of the picture by default (``min_window_packets`` =
``initial_window_packets`` = 512): NewReno halves its window on every random loss, and a 60
KB keyframe then takes several round trips to leave, whatever recovery does. That is the
rate-control item of issue 4, not this one; ``--default-window`` runs with the defaults to
show it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import transport
from bench.impair import GilbertElliott, LinkConfig
from bench.relay import RelayProcess
from bench.simlink import SimNetwork
from transport.config import UNRELIABLE, SessionConfig
from transport.events import Message
from transport.stats import SessionStats

DELAY_S = 0.010
WARMUP_S = 0.5
DRAIN_S = 0.5
SEED = 4
WINDOW_PACKETS = 512

RELAY_OPTIONS: dict[str, tuple[str, ...]] = {
    "random 1%": ("--delay-ms", "10", "--loss-pct", "1"),
    "random 5%": ("--delay-ms", "10", "--loss-pct", "5"),
    "random 10%": ("--delay-ms", "10", "--loss-pct", "10"),
    "burst 5% x3": ("--delay-ms", "10", "--burst", "5/3"),
}
"""The relay's options for each link of LINKS (the same model, in a separate process)."""
CONNECT_TIMEOUT_S = 10.0

LINKS: dict[str, LinkConfig] = {
    "random 1%": LinkConfig(delay_s=DELAY_S, loss=0.01),
    "random 5%": LinkConfig(delay_s=DELAY_S, loss=0.05),
    "random 10%": LinkConfig(delay_s=DELAY_S, loss=0.10),
    "burst 5% x3": LinkConfig(delay_s=DELAY_S, burst=GilbertElliott.from_loss(0.05, 3.0)),
}

MODES: dict[str, SessionConfig] = {
    "none": SessionConfig(recovery=False),
    "arq": SessionConfig(fec=False),
    "fec": SessionConfig(nack=False),
    "both": SessionConfig(),
}


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    deadline_s: float
    sizes: Callable[[float, random.Random], list[tuple[float, int]]]
    """(send time from the start, size) of every message in ``duration_s``."""


def video(duration_s: float, rng: random.Random) -> list[tuple[float, int]]:
    """30 fps at 2 Mbit/s: a 60 KB keyframe every 60 frames, P-frames for the rest."""
    fps, rate_bps, keyframe, gop = 30, 2_000_000, 60_000, 60
    p_mean = (rate_bps / 8 * gop / fps - keyframe) / (gop - 1)
    out = []
    for i in range(int(duration_s * fps)):
        size = keyframe if i % gop == 0 else int(p_mean * rng.uniform(0.75, 1.25))
        out.append((i / fps, size))
    return out


def keyframes(duration_s: float, rng: random.Random) -> list[tuple[float, int]]:
    return [(i * 0.5, 150_000) for i in range(int(duration_s / 0.5))]


def game(duration_s: float, rng: random.Random) -> list[tuple[float, int]]:
    return [(i / 60, 200) for i in range(int(duration_s * 60))]


WORKLOADS = {
    "video": Workload("video", 0.033, video),
    "keyframes": Workload("keyframes", 0.033, keyframes),
    "game": Workload("game", 0.100, game),
}


def _config(mode: str, congestion: str, default_window: bool) -> SessionConfig:
    config = replace(MODES[mode], congestion=congestion)
    if not default_window:
        config = replace(
            config, initial_window_packets=WINDOW_PACKETS, min_window_packets=WINDOW_PACKETS
        )
    return config


def run(
    workload: Workload,
    link: LinkConfig,
    mode: str,
    duration_s: float,
    *,
    seed: int = SEED,
    default_window: bool = False,
    congestion: str = "newreno",
) -> dict[str, Any]:
    """One row: ``workload`` over ``link`` with recovery ``mode``."""
    config = _config(mode, congestion, default_window)
    net = SimNetwork(seed=seed, config=config, c2s=link, max_steps=50_000_000)
    server = net.connect(timeout_s=30.0)
    start = net.now + WARMUP_S
    sends = workload.sizes(duration_s, random.Random(seed))
    sent_at: dict[int, float] = {}

    def sender(size: int, index: int) -> Callable[[], None]:
        def action() -> None:
            mid = net.client.send(
                bytes(size), channel=UNRELIABLE, deadline_s=workload.deadline_s, now=net.now
            )
            sent_at[mid] = net.now

        return action

    for index, (at, size) in enumerate(sends):
        net.schedule(start + at, sender(size, index))
    net.run(start + duration_s + DRAIN_S)

    on_time = 0
    for t, event in net.server_log:
        if isinstance(event, Message) and event.channel == UNRELIABLE:
            sent = sent_at.get(event.message_id)
            if sent is not None and t - sent <= workload.deadline_s + 1e-9:
                on_time += 1
    c2s = net.links["c2s"]
    return _row(
        workload,
        mode,
        sends,
        on_time,
        c2s.bytes_sent + net.links["s2c"].bytes_sent,
        net.client.stats(),
        server.stats(),
        100.0 * c2s.datagrams_lost / max(1, c2s.datagrams_sent),
    )


def _row(
    workload: Workload,
    mode: str,
    sends: list[tuple[float, int]],
    on_time: int,
    wire_bytes: int,
    sent: SessionStats,
    received: SessionStats,
    loss_pct: float,
) -> dict[str, Any]:
    """One row of the table, from the sending and receiving sessions' counters."""
    return {
        "workload": workload.name,
        "mode": mode,
        "messages": len(sends),
        "on_time": on_time,
        "on_time_pct": round(100.0 * on_time / len(sends), 2),
        "wire_bytes": wire_bytes,
        "payload_bytes": sum(size for _, size in sends),
        "retransmissions": sent.retransmissions,
        "nack_repairs": sent.nack_repairs,
        "repairs_too_late": sent.repairs_too_late,
        "nacks_sent": received.nacks_sent,
        "fec_packets_sent": sent.fec_packets_sent,
        "fec_recovered": received.fec_recovered,
        "measured_loss_pct": round(loss_pct, 2),
    }


def run_relay(
    workload: Workload,
    link_name: str,
    mode: str,
    duration_s: float,
    *,
    seed: int = SEED,
    default_window: bool = False,
    congestion: str = "newreno",
) -> dict[str, Any]:
    """One row over real sockets through a relay process that applies ``link_name``."""
    return asyncio.run(
        _relay_row(
            workload,
            link_name,
            mode,
            duration_s,
            seed,
            _config(mode, congestion, default_window),
        )
    )


async def _relay_row(
    workload: Workload,
    link_name: str,
    mode: str,
    duration_s: float,
    seed: int,
    config: SessionConfig,
) -> dict[str, Any]:
    listener = await transport.listen(("127.0.0.1", 0), config)
    relay = RelayProcess(listener.local_addr, RELAY_OPTIONS[link_name], seed=seed)
    sends = workload.sizes(duration_s, random.Random(seed))
    sent_at: dict[int, float] = {}
    arrived: dict[int, float] = {}
    summary: dict[str, Any] | None = None
    try:
        client = await asyncio.wait_for(transport.connect(relay.addr, config), CONNECT_TIMEOUT_S)
        server = await asyncio.wait_for(listener.accept(), CONNECT_TIMEOUT_S)

        def on_message(message: Message) -> None:
            arrived.setdefault(message.message_id, time.monotonic())

        server.set_handler(on_message)
        start = time.monotonic() + WARMUP_S
        for at, size in sends:
            delay = start + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            mid = client.send(bytes(size), channel=UNRELIABLE, deadline_s=workload.deadline_s)
            sent_at[mid] = time.monotonic()
        await asyncio.sleep(DRAIN_S)
        sent, received = client.stats(), server.stats()
        await client.close("done")
    finally:
        await listener.close()
        summary = relay.stop()
    on_time = sum(
        1
        for mid, t in sent_at.items()
        if mid in arrived and arrived[mid] - t <= workload.deadline_s + 1e-9
    )
    forward = (summary or {}).get("forward", {})
    lost = forward.get("lost_random", 0) + forward.get("lost_burst", 0)
    return _row(
        workload,
        mode,
        sends,
        on_time,
        sent.bytes_sent + received.bytes_sent,
        sent,
        received,
        100.0 * lost / max(1, forward.get("datagrams_in", 0)),
    )


def run_all(
    duration_s: float,
    *,
    workloads: Sequence[str] = tuple(WORKLOADS),
    links: Sequence[str] = tuple(LINKS),
    default_window: bool = False,
    congestion: str = "newreno",
    relay: bool = False,
    say: Callable[[str], None] = lambda _: None,
) -> list[dict[str, Any]]:
    rows = []
    for name in workloads:
        for link_name in links:
            baseline: int | None = None
            for mode in MODES:
                row = (run_relay if relay else _run_named)(
                    WORKLOADS[name],
                    link_name,
                    mode,
                    duration_s,
                    default_window=default_window,
                    congestion=congestion,
                )
                row["link"] = link_name
                if mode == "none":
                    baseline = row["wire_bytes"]
                assert baseline is not None
                row["overhead_pct"] = round(100.0 * (row["wire_bytes"] / baseline - 1), 1)
                rows.append(row)
                say(_line(row))
    return rows


def _run_named(
    workload: Workload, link_name: str, mode: str, duration_s: float, **kw: Any
) -> dict[str, Any]:
    return run(workload, LINKS[link_name], mode, duration_s, **kw)


HEADER = (
    f"{'workload':<10} {'link':<12} {'mode':<5} {'on time':>8} {'overhead':>9} "
    f"{'repairs':>8} {'NACKs':>6} {'parity':>7} {'rebuilt':>8} {'too late':>9}"
)


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['workload']:<10} {row['link']:<12} {row['mode']:<5} "
        f"{row['on_time_pct']:>7.2f}% {row['overhead_pct']:>8.1f}% "
        f"{row['retransmissions']:>8} {row['nacks_sent']:>6} {row['fec_packets_sent']:>7} "
        f"{row['fec_recovered']:>8} {row['repairs_too_late']:>9}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 s per row instead of 30 s")
    parser.add_argument(
        "--json", action="store_true", help="print the rows as JSON on stdout (table: stderr)"
    )
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the JSON here")
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS))
    parser.add_argument("--link", action="append", choices=list(LINKS))
    parser.add_argument(
        "--default-window",
        action="store_true",
        help="keep the default congestion window (NewReno halving on random loss)",
    )
    parser.add_argument(
        "--congestion",
        choices=("newreno", "gcc"),
        default="newreno",
        help="the congestion controller (gcc: paced, a deadline hurries the pacer)",
    )
    parser.add_argument(
        "--relay",
        action="store_true",
        help="real sockets on loopback through an impairment relay process (real time)",
    )
    args = parser.parse_args(argv)
    duration_s = 10.0 if args.quick else 30.0
    table = sys.stderr if args.json else sys.stdout
    print(HEADER, file=table, flush=True)
    rows = run_all(
        duration_s,
        workloads=args.workload or tuple(WORKLOADS),
        links=args.link or tuple(LINKS),
        default_window=args.default_window,
        congestion=args.congestion,
        relay=args.relay,
        say=lambda line: print(line, file=table, flush=True),
    )
    result = {
        "duration_s": duration_s,
        "seed": SEED,
        "rtt_ms": 2 * DELAY_S * 1e3,
        "default_window": args.default_window,
        "congestion": args.congestion,
        "link_model": "relay" if args.relay else "simulated",
        "rows": rows,
    }
    text = json.dumps(result, indent=1) + "\n"
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    if args.json:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
