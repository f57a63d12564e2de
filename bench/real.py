"""The real driver of the scenario benchmarks: the workload through ``framewire impair``.

Everything runs on loopback. A relay process applies the scenario's link; framewire's client
sends to the relay, which forwards to framewire's listener (and the answers back). Then a fresh
relay with the same settings carries raw UDP: the same messages in datagrams of the same size,
no repair, a message delivered when its last datagram is; then ``framewire demo`` runs its
whole video pipeline through a third. Latency is measured on this machine's monotonic clock.
"""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import transport
from bench.errors import BenchError
from bench.relay import RelayProcess
from bench.scenarios import Scenario, scenario_args
from bench.suite import (
    DATAGRAM_BYTES,
    DRAIN_S,
    WARMUP_S,
    WORKLOADS,
    Plan,
    Send,
    _result,
    row,
    schedule,
    workload_series,
)
from transport.config import SessionConfig

HEADER = struct.Struct("!BIHH")  # workload, message number, fragment index, fragment count
STAMP = struct.Struct("!BI")  # framewire messages: workload, message number
WORKLOAD_CODES = {name: i for i, name in enumerate(WORKLOADS)}
CONNECT_TIMEOUT_S = 20.0


def run_real(
    scenario: Scenario, plan: Plan, say: Callable[[str], None] = lambda _line: None
) -> dict[str, Any]:
    """The scenario through the real relay: framewire, raw UDP, the demo's video pipeline."""
    sends = schedule(plan.duration_s)
    rows = asyncio.run(_framewire(scenario, plan, sends))
    say(f"{scenario.name}: framewire through the relay, {plan.duration_s:.0f} s")
    rows += asyncio.run(_raw(scenario, plan, sends))
    say(f"{scenario.name}: raw UDP through the relay")
    rows.append(_demo(scenario, plan))
    say(f"{scenario.name}: the demo's video pipeline through the relay")
    return _result(scenario, plan, "relay", rows)


def _demo(scenario: Scenario, plan: Plan) -> dict[str, Any]:
    """``framewire demo`` through the relay: frame latency from capture to the decoded picture
    (encode, transport, jitter, decode), per frame. A separate process tree: the command line
    is the one place that wires the video pipeline together."""
    cmd = [sys.executable, "-m", "framewire", "demo", "--seconds", f"{plan.duration_s:g}"]
    cmd += ["--json", "--quiet", "--frame-log", *scenario_args(scenario)]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=plan.duration_s + 60, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError("the demo through the relay did not finish in time") from exc
    if done.returncode != 0:
        raise BenchError(f"the demo through the relay failed: {done.stderr.strip()[-300:]}")
    result = json.loads(done.stdout)
    fps = float(result["fps"])
    by_index = {int(i): ms / 1e3 for i, ms in result["frame_log"]}
    frames = int(result["frames_sent"])
    send_s = [i / fps for i in range(frames)]
    latency = [by_index.get(i) for i in range(frames)]
    return row("framewire", "video-demo", send_s, latency)


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _framewire(scenario: Scenario, plan: Plan, sends: list[Send]) -> list[dict[str, Any]]:
    config = SessionConfig()
    listener = await transport.listen(("127.0.0.1", 0), config)
    relay = RelayProcess(listener.local_addr, scenario.relay_args, seed=plan.seed)
    arrived: dict[tuple[int, int], float] = {}
    try:
        client = await asyncio.wait_for(transport.connect(relay.addr, config), CONNECT_TIMEOUT_S)
        server = await asyncio.wait_for(listener.accept(), CONNECT_TIMEOUT_S)

        def on_message(message: transport.Message) -> None:
            code, number = STAMP.unpack_from(message.data)
            arrived[(code, number)] = time.monotonic()

        server.set_handler(on_message)
        start = time.monotonic() + WARMUP_S
        sent_at: dict[tuple[int, int], tuple[str, float]] = {}
        for number, s in enumerate(sends):
            await _sleep_until(start + s.at)
            code = WORKLOAD_CODES[s.workload]
            body = STAMP.pack(code, number) + bytes(max(0, s.size - STAMP.size))
            sent_at[(code, number)] = (s.workload, time.monotonic())
            client.send(body, channel=WORKLOADS[s.workload], deadline_s=s.deadline_s)
        await asyncio.sleep(DRAIN_S)
        late = dict(server.late_by_channel)
        await client.close("done")
    finally:
        await listener.close()
        relay.stop()
    return _rows("framewire", sends, sent_at, arrived, start, late)


def _rows(
    system: str,
    sends: list[Send],
    sent_at: dict[tuple[int, int], tuple[str, float]],
    arrived: dict[tuple[int, int], float],
    start: float,
    late_by_channel: dict[int, int],
) -> list[dict[str, Any]]:
    rows = []
    for workload in WORKLOADS:
        _, send_s, latency = workload_series(sent_at, arrived, workload, start)
        has_deadline = any(s.deadline_s is not None for s in sends if s.workload == workload)
        missing = sum(1 for x in latency if x is None)
        # Late reports are per channel; only the workloads with deadlines can be late.
        late = min(missing, late_by_channel.get(WORKLOADS[workload], 0)) if has_deadline else 0
        rows.append(row(system, workload, send_s, latency, late=late))
    return rows


async def _raw(scenario: Scenario, plan: Plan, sends: list[Send]) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    pieces: dict[tuple[int, int], set[int]] = {}
    arrived: dict[tuple[int, int], float] = {}

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            code, number, index, count = HEADER.unpack_from(data)
            got = pieces.setdefault((code, number), set())
            got.add(index)
            if len(got) == count:
                arrived[(code, number)] = time.monotonic()

    rx, _ = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
    relay = RelayProcess(rx.get_extra_info("sockname")[:2], scenario.relay_args, seed=plan.seed)
    tx, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=relay.addr)
    sent_at: dict[tuple[int, int], tuple[str, float]] = {}
    chunk = DATAGRAM_BYTES - HEADER.size
    try:
        start = time.monotonic() + WARMUP_S
        for number, s in enumerate(sends):
            await _sleep_until(start + s.at)
            code = WORKLOAD_CODES[s.workload]
            count = max(1, -(-s.size // chunk))
            sent_at[(code, number)] = (s.workload, time.monotonic())
            for index in range(count):
                size = min(chunk, s.size - index * chunk)
                tx.sendto(HEADER.pack(code, number, index, count) + bytes(max(0, size)))
        await asyncio.sleep(DRAIN_S)
    finally:
        tx.close()
        rx.close()
        relay.stop()
    # As on the simulated link: a message past its deadline is of no use to the receiver.
    deadlines = {WORKLOAD_CODES[s.workload]: s.deadline_s for s in sends}
    for key in list(arrived):
        deadline = deadlines.get(key[0])
        if deadline is not None and arrived[key] - sent_at[key][1] > deadline:
            del arrived[key]
    return _rows("raw-udp", sends, sent_at, arrived, start, {})
