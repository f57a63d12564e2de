"""Loopback benchmarks: framewire against raw UDP, same event loop, separate processes.

Latency: a 1200-byte message every millisecond; the sender stamps ``time.monotonic_ns()``
into it right before ``send`` (framewire) or ``sendto`` (raw); the receiver reads the clock
when the message is delivered (``async for`` on the session; ``datagram_received`` for raw).
CLOCK_MONOTONIC is one clock for all processes of a machine, so no offset is needed.

Goodput: 1 MB messages on framewire's reliable channel against a blocking ``sendto`` loop of
1200-byte datagrams; both count only bytes the receiving process got.

Each measurement runs a receiver and a sender as child processes (``python -m bench.loopback
worker ...``) that print one JSON line each; the parent interleaves repetitions of the two
variants so machine noise hits both alike, and reports medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

import transport
from bench.errors import BenchError
from bench.loops import install_loop
from transport.config import RELIABLE, UNRELIABLE, SessionConfig

STAMP = struct.Struct("!QQ")  # sequence, monotonic_ns at send
FLOOR_HEADER = struct.Struct("!B8sQ")  # the AEAD floor's header: framewire's DATA header
END = 0xFFFF_FFFF_FFFF_FFFF
MESSAGE_BYTES = 1200
BULK_MESSAGE_BYTES = 1_000_000
RAW_DATAGRAM_BYTES = 1200
WORKER_TIMEOUT_S = 60.0
PATH_MTU_BYTES = 1472
"""Datagram size for the latency run: Ethernet's UDP payload, so a 1200-byte message travels
in one datagram as it does through the raw socket (at the 1200-byte default it takes two)."""
LATENCY_CONFIG = SessionConfig(max_datagram_bytes=PATH_MTU_BYTES)


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchPlan:
    """How much to measure. ``quick`` is the CI size (about 15 s in all)."""

    latency_messages: int
    latency_reps: int
    goodput_bytes: int
    goodput_reps: int
    loop: str

    @classmethod
    def quick(cls, loop: str) -> BenchPlan:
        return cls(
            latency_messages=1500,
            latency_reps=2,
            goodput_bytes=150_000_000,
            goodput_reps=3,
            loop=loop,
        )

    @classmethod
    def full(cls, loop: str) -> BenchPlan:
        return cls(
            latency_messages=5000,
            latency_reps=5,
            goodput_bytes=1_000_000_000,
            goodput_reps=3,
            loop=loop,
        )


def _quantile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        raise BenchError("no samples")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# -- workers (child processes) ------------------------------------------------------------------


async def _udp_latency_receiver(
    ready: Callable[[int], None], count: int, unseal: Callable[[bytes], bytes] | None = None
) -> dict[str, Any]:
    """Raw UDP (``unseal`` None) or raw UDP plus an AEAD open per datagram (the floor)."""
    loop = asyncio.get_running_loop()
    samples: list[int] = []
    done = loop.create_future()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
            if unseal is not None:
                data = unseal(data)
            now = time.monotonic_ns()
            seq, sent = STAMP.unpack_from(data)
            if seq == END:
                if not done.done():
                    done.set_result(None)
                return
            samples.append(now - sent)

    udp, _ = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
    ready(udp.get_extra_info("sockname")[1])
    try:
        await asyncio.wait_for(done, WORKER_TIMEOUT_S)
    finally:
        udp.close()
    return {"latency_ns": samples, "expected": count}


async def _udp_latency_sender(
    port: int, count: int, seal: Callable[[int, bytes], bytes] | None = None
) -> dict[str, Any]:
    """Raw UDP (``seal`` None) or raw UDP plus an AEAD seal per datagram (the floor)."""
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", port)
    )
    pad = bytes(MESSAGE_BYTES - STAMP.size)
    start = time.monotonic()
    for seq in range(count):
        await _sleep_until(start + seq * 0.001)
        data = STAMP.pack(seq, time.monotonic_ns()) + pad
        udp.sendto(data if seal is None else seal(seq, data))
    for seq in range(count, count + 5):  # the end marker; repeated, UDP may drop one
        await asyncio.sleep(0.01)
        data = STAMP.pack(END, 0) + pad
        udp.sendto(data if seal is None else seal(seq, data))
    udp.close()
    return {"sent": count}


async def _fw_latency_receiver(
    ready: Callable[[int], None], count: int, *, iterate: bool = False
) -> dict[str, Any]:
    listener = await transport.listen(("127.0.0.1", 0), LATENCY_CONFIG)
    ready(listener.local_addr[1])
    samples: list[int] = []
    session = await asyncio.wait_for(listener.accept(), WORKER_TIMEOUT_S)
    done = asyncio.get_running_loop().create_future()

    def on_message(message: transport.Message) -> None:
        now = time.monotonic_ns()
        seq, sent = STAMP.unpack_from(message.data)
        if seq == END:
            if not done.done():
                done.set_result(None)
            return
        samples.append(now - sent)

    async def collect() -> None:
        async for message in session:
            on_message(message)
            if done.done():
                return

    if iterate:
        await asyncio.wait_for(collect(), WORKER_TIMEOUT_S)
    else:
        session.set_handler(on_message)
        await asyncio.wait_for(done, WORKER_TIMEOUT_S)
    stats = session.stats()
    await listener.close()
    return {"latency_ns": samples, "expected": count, "srtt_ms": stats.srtt_ms}


async def _fw_iter_latency_receiver(ready: Callable[[int], None], count: int) -> dict[str, Any]:
    return await _fw_latency_receiver(ready, count, iterate=True)


def _floor_aead() -> tuple[Callable[[int, bytes], bytes], Callable[[bytes], bytes]]:
    """Seal and open as framewire's DATA packets do (ChaCha20-Poly1305, packet-number nonce,
    the 17-byte header as associated data), and nothing else."""
    aead = ChaCha20Poly1305(bytes(32))
    cid = bytes(8)

    def seal(pn: int, plain: bytes) -> bytes:
        header = FLOOR_HEADER.pack(0x40, cid, pn)
        return header + aead.encrypt(pn.to_bytes(12, "big"), plain, header)

    def unseal(data: bytes) -> bytes:
        _, _, pn = FLOOR_HEADER.unpack_from(data)
        size = FLOOR_HEADER.size
        return aead.decrypt(pn.to_bytes(12, "big"), data[size:], data[:size])

    return seal, unseal


async def _raw_latency_receiver(ready: Callable[[int], None], count: int) -> dict[str, Any]:
    return await _udp_latency_receiver(ready, count)


async def _raw_latency_sender(port: int, count: int) -> dict[str, Any]:
    return await _udp_latency_sender(port, count)


async def _aead_latency_receiver(ready: Callable[[int], None], count: int) -> dict[str, Any]:
    return await _udp_latency_receiver(ready, count, _floor_aead()[1])


async def _aead_latency_sender(port: int, count: int) -> dict[str, Any]:
    return await _udp_latency_sender(port, count, _floor_aead()[0])


async def _fw_latency_sender(port: int, count: int) -> dict[str, Any]:
    session = await transport.connect(("127.0.0.1", port), LATENCY_CONFIG)
    pad = bytes(MESSAGE_BYTES - STAMP.size)
    start = time.monotonic()
    for seq in range(count):
        await _sleep_until(start + seq * 0.001)
        session.send(STAMP.pack(seq, time.monotonic_ns()) + pad, channel=UNRELIABLE)
    session.send(STAMP.pack(END, 0) + pad, channel=RELIABLE)
    await session.close("done")
    return {"sent": count, "packets_sent": session.stats().packets_sent}


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _raw_goodput_receiver(ready: Callable[[int], None], total: int) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 4 * 1024 * 1024)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    ready(sock.getsockname()[1])
    buf = bytearray(65536)
    view = memoryview(buf)
    received = 0
    start_ns = 0
    last_ns = 0
    sock.settimeout(WORKER_TIMEOUT_S)
    while True:
        n = sock.recv_into(view)
        if n < STAMP.size:
            continue
        seq, stamp = STAMP.unpack_from(buf)
        if seq == END:
            break
        if not start_ns:
            start_ns = stamp  # the sender's clock at its first send: same clock as ours
        received += n
        last_ns = time.monotonic_ns()
        if received >= total:
            break
    sock.close()
    return {"bytes": received, "start_ns": start_ns, "last_ns": last_ns}


def _raw_goodput_sender(port: int, total: int) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    payload = bytearray(RAW_DATAGRAM_BYTES)
    sent = 0
    first = True
    send = sock.send
    try:
        while sent < total:
            if first:
                STAMP.pack_into(payload, 0, 0, time.monotonic_ns())
                first = False
                send(payload)
                STAMP.pack_into(payload, 0, 1, 0)
            else:
                send(payload)
            sent += RAW_DATAGRAM_BYTES
    except ConnectionRefusedError:
        return {"sent": sent}  # the receiver has everything it wanted and has gone
    # The receiver stops at the end marker or once it has everything; some datagrams are
    # dropped under a blast like this, so the marker is what usually ends it.
    end = STAMP.pack(END, 0) + bytes(RAW_DATAGRAM_BYTES - STAMP.size)
    try:
        for _ in range(20):
            time.sleep(0.005)
            send(end)
    except ConnectionRefusedError:
        pass
    sock.close()
    return {"sent": sent}


async def _fw_goodput_receiver(ready: Callable[[int], None], total: int) -> dict[str, Any]:
    listener = await transport.listen(("127.0.0.1", 0))
    ready(listener.local_addr[1])
    session = await asyncio.wait_for(listener.accept(), WORKER_TIMEOUT_S)
    received = 0
    start_ns = 0
    last_ns = 0

    async def collect() -> None:
        nonlocal received, start_ns, last_ns
        async for message in session:
            if not start_ns:
                start_ns = STAMP.unpack_from(message.data)[1]
            received += len(message.data)
            last_ns = time.monotonic_ns()
            if received >= total:
                return

    await asyncio.wait_for(collect(), WORKER_TIMEOUT_S)
    stats = session.stats()
    await listener.close()
    return {
        "bytes": received,
        "start_ns": start_ns,
        "last_ns": last_ns,
        "decode_failures": stats.decode_failures,
    }


async def _fw_goodput_sender(port: int, total: int) -> dict[str, Any]:
    session = await transport.connect(("127.0.0.1", port))
    body = bytearray(BULK_MESSAGE_BYTES)
    sent = 0
    first = True
    while sent < total:
        if first:
            STAMP.pack_into(body, 0, 0, time.monotonic_ns())
            first = False
        session.send(bytes(body), channel=RELIABLE)
        sent += BULK_MESSAGE_BYTES
        await session.drain(below_bytes=4 * BULK_MESSAGE_BYTES)
    await session.close("done")
    stats = session.stats()
    return {
        "sent": sent,
        "retransmissions": stats.retransmissions,
        "packets_lost": stats.packets_lost,
        "srtt_ms": stats.srtt_ms,
    }


_WORKERS: dict[tuple[str, str, str], Callable[..., Any]] = {
    ("latency", "raw", "receive"): _raw_latency_receiver,
    ("latency", "raw", "send"): _raw_latency_sender,
    ("latency", "framewire", "receive"): _fw_latency_receiver,
    ("latency", "framewire", "send"): _fw_latency_sender,
    ("latency", "framewire-iter", "receive"): _fw_iter_latency_receiver,
    ("latency", "framewire-iter", "send"): _fw_latency_sender,
    ("latency", "aead", "receive"): _aead_latency_receiver,
    ("latency", "aead", "send"): _aead_latency_sender,
    ("goodput", "raw", "receive"): _raw_goodput_receiver,
    ("goodput", "raw", "send"): _raw_goodput_sender,
    ("goodput", "framewire", "receive"): _fw_goodput_receiver,
    ("goodput", "framewire", "send"): _fw_goodput_sender,
}


def worker_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loopback worker")
    parser.add_argument("test", choices=["latency", "goodput"])
    parser.add_argument("variant", choices=["raw", "aead", "framewire", "framewire-iter"])
    parser.add_argument("role", choices=["receive", "send"])
    parser.add_argument("--amount", type=int, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", default="uvloop")
    args = parser.parse_args(argv)
    install_loop(args.loop)
    fn = _WORKERS[(args.test, args.variant, args.role)]

    def ready(port: int) -> None:
        print(json.dumps({"ready": port}), flush=True)

    extra: tuple[Any, ...] = (ready,) if args.role == "receive" else (args.port,)
    result = fn(*extra, args.amount)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    print(json.dumps({"result": result}), flush=True)
    return 0


# -- the parent ---------------------------------------------------------------------------------


def _spawn(test: str, variant: str, role: str, amount: int, loop: str, port: int = 0) -> Any:
    cmd = [sys.executable, "-m", "bench.loopback", "worker", test, variant, role]
    cmd += ["--amount", str(amount), "--loop", loop, "--port", str(port)]
    env = dict(os.environ, PYTHONHASHSEED="0")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _read_json_line(proc: Any, key: str, timeout_s: float) -> Any:
    end = time.monotonic() + timeout_s
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            proc.kill()
            raise BenchError(f"worker gave no {key!r} within {timeout_s:.0f} s")
        readable, _, _ = select.select([proc.stdout], [], [], remaining)
        if not readable:
            continue
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read().strip().splitlines()
            raise BenchError(f"worker exited: {err[-1] if err else 'no output'}")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if key in obj:
            return obj[key]


def run_pair(test: str, variant: str, amount: int, loop: str) -> tuple[Any, Any]:
    """Run one receiver and one sender; return both results."""
    receiver = _spawn(test, variant, "receive", amount, loop)
    try:
        port = _read_json_line(receiver, "ready", WORKER_TIMEOUT_S)
        sender = _spawn(test, variant, "send", amount, loop, port)
        try:
            sent = _read_json_line(sender, "result", WORKER_TIMEOUT_S)
            received = _read_json_line(receiver, "result", WORKER_TIMEOUT_S)
        finally:
            sender.kill()
            sender.wait()
    finally:
        receiver.kill()
        receiver.wait()
    return sent, received


def measure(plan: BenchPlan, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the plan; return the report (field names as in the README)."""
    say = progress or (lambda _line: None)
    variants = ("raw", "aead", "framewire", "framewire-iter")
    latency: dict[str, list[int]] = {v: [] for v in variants}
    rep_p50: dict[str, list[float]] = {v: [] for v in variants}
    for rep in range(plan.latency_reps):
        for variant in variants:
            _, got = run_pair("latency", variant, plan.latency_messages, plan.loop)
            samples = got["latency_ns"]
            if len(samples) < 0.9 * plan.latency_messages:
                raise BenchError(f"{variant}: only {len(samples)} latency samples arrived")
            latency[variant].extend(samples)
            rep_p50[variant].append(_quantile(samples, 0.5) / 1000)
            say(
                f"latency rep {rep + 1}/{plan.latency_reps} {variant:14s} "
                f"p50 {rep_p50[variant][-1]:.1f} us  ({len(samples)} msgs)"
            )
    goodput: dict[str, list[float]] = {"raw": [], "framewire": []}
    for rep in range(plan.goodput_reps):
        for variant in ("raw", "framewire"):
            _, got = run_pair("goodput", variant, plan.goodput_bytes, plan.loop)
            seconds = (got["last_ns"] - got["start_ns"]) / 1e9
            if seconds <= 0 or got["bytes"] <= 0:
                raise BenchError(f"{variant}: goodput run received nothing")
            goodput[variant].append(got["bytes"] * 8 / seconds / 1e6)
            say(
                f"goodput rep {rep + 1}/{plan.goodput_reps} {variant:9s} "
                f"{goodput[variant][-1]:.0f} Mbit/s ({got['bytes'] / 1e6:.0f} MB)"
            )

    def summary_us(variant: str) -> dict[str, float]:
        return {
            "p50": round(_quantile(latency[variant], 0.5) / 1000, 1),
            "p99": round(_quantile(latency[variant], 0.99) / 1000, 1),
        }

    fw = summary_us("framewire")
    raw = summary_us("raw")
    floor = summary_us("aead")
    fw_goodput = statistics.median(goodput["framewire"])
    raw_goodput = statistics.median(goodput["raw"])
    return {
        "loop": plan.loop,
        "message_bytes": MESSAGE_BYTES,
        "latency_max_datagram_bytes": PATH_MTU_BYTES,
        "message_latency_us": fw,
        "raw_latency_us": raw,
        "latency_ratio_p50": round(fw["p50"] / raw["p50"], 3),
        "iterator_latency_us": summary_us("framewire-iter"),
        "aead_floor_latency_us": floor,
        "aead_floor_ratio_p50": round(floor["p50"] / raw["p50"], 3),
        "latency_rep_p50_us": {k: [round(v, 1) for v in vs] for k, vs in rep_p50.items()},
        "goodput_mbps": round(fw_goodput, 1),
        "raw_goodput_mbps": round(raw_goodput, 1),
        # Each framewire run is paired with the raw run just before it (same machine state);
        # the ratio is the median of those pairs, which shared-machine noise moves least.
        "goodput_ratio": round(
            statistics.median(
                f / r for f, r in zip(goodput["framewire"], goodput["raw"], strict=True)
            ),
            3,
        ),
        "goodput_ratio_of_medians": round(fw_goodput / raw_goodput, 3),
        "goodput_rep_mbps": {k: [round(v, 1) for v in vs] for k, vs in goodput.items()},
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit("usage: python -m bench.loopback worker ... (use `framewire bench`)")
