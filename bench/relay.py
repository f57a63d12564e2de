"""The real UDP relay (``framewire impair``): the impairment model between two real peers.

The second driver of :mod:`bench.impair` (the simulated link is the first). It listens on
one address; each peer that sends to it gets an upstream socket of its own towards the
target (as a NAT would), and the target's answers go back the same way. Every datagram
passes through the model of its direction (``forward``: towards the target; ``reverse``:
back), and is sent when the model says it comes out.

A plain ``select`` loop, on purpose: its timeout has microsecond resolution, where event-loop
timers round to the millisecond (libuv) and would add up to a millisecond of error to every
delayed datagram. It works on any OS, which netem does not.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from bench.errors import BenchError
from bench.impair import (
    JITTER_SHAPES,
    GilbertElliott,
    Impairment,
    LinkConfig,
    LinkPair,
    Spikes,
)
from bench.scenarios import TRACE_QUEUE_PACKETS
from bench.scenarios import scenario as find_scenario
from bench.traces import TraceError, load_trace
from transport.udp import parse_host_port

Address = tuple[str, int]
READ_BYTES = 65_535
READS_PER_WAKEUP = 64
MAX_PEERS = 64
MAX_IN_FLIGHT = 200_000
"""Datagrams held for later delivery across both directions; beyond it they are dropped
(and counted), so an unbounded queue setting cannot exhaust memory."""
STATS_INTERVAL_S = 1.0
SPAWN_TIMEOUT_S = 20.0


@dataclass(slots=True)
class _Direction:
    name: str
    impairment: Impairment
    received: int = 0
    sent: int = 0
    bytes_sent: int = 0
    overflow: int = 0
    send_errors: int = 0


class Relay:
    """Relays datagrams between peers on ``listen`` and the target ``to`` through ``link``."""

    def __init__(self, listen: Address, to: Address, link: LinkPair, seed: int | str = 1) -> None:
        self.to = to
        forward, reverse = link.impairments(seed)
        self.forward = _Direction("forward", forward)
        self.reverse = _Direction("reverse", reverse)
        family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(listen)
        self.sock.setblocking(False)
        self._upstream: dict[Address, socket.socket] = {}  # peer -> its socket to the target
        self._peer_of: dict[socket.socket, Address] = {}
        self._pending: list[tuple[float, int, socket.socket, Address | None, bytes]] = []
        self._seq = 0
        self.peers_refused = 0
        self.started = time.monotonic()
        self._origin: float | None = None  # the model's time 0: the first datagram's arrival
        self._line_at = self.started
        self._line_bytes = {"forward": 0, "reverse": 0}

    @property
    def local_addr(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def run(
        self,
        *,
        until: Callable[[], bool] = lambda: False,
        duration_s: float | None = None,
        progress: Callable[[Relay], None] | None = None,
        wake: socket.socket | None = None,
    ) -> None:
        """Relay until ``until()`` is true or ``duration_s`` has passed. Bytes arriving on
        ``wake`` (a signal's wakeup socket) end the wait early, so ``until`` is asked again."""
        end = math.inf if duration_s is None else time.monotonic() + duration_s
        next_stats = time.monotonic() + STATS_INTERVAL_S
        while not until():
            now = time.monotonic()
            if now >= end:
                return
            wake_at = min(end, next_stats if progress else math.inf)
            if self._pending:
                wake_at = min(wake_at, self._pending[0][0])
            timeout = None if wake_at == math.inf else max(0.0, wake_at - now)
            sockets = [self.sock, *self._peer_of, *([wake] if wake is not None else [])]
            readable, _, _ = select.select(sockets, [], [], timeout)
            for sock in readable:
                if sock is wake:
                    with contextlib.suppress(BlockingIOError):
                        wake.recv(4096)
                else:
                    self._read(sock)
            self._send_due(time.monotonic())
            if progress is not None and time.monotonic() >= next_stats:
                next_stats += STATS_INTERVAL_S
                progress(self)

    def close(self) -> None:
        for sock in (self.sock, *self._peer_of):
            sock.close()

    def summary(self) -> dict[str, Any]:
        def one(d: _Direction) -> dict[str, Any]:
            return {
                "received": d.received,
                "sent": d.sent,
                "bytes_sent": d.bytes_sent,
                "held_overflow": d.overflow,
                "send_errors": d.send_errors,
                **d.impairment.counters.as_dict(),
            }

        return {
            "listen": list(self.local_addr),
            "to": list(self.to),
            "seconds": round(time.monotonic() - self.started, 3),
            "peers": len(self._upstream),
            "peers_refused": self.peers_refused,
            "held": len(self._pending),
            "forward": one(self.forward),
            "reverse": one(self.reverse),
        }

    def stats_line(self) -> str:
        """Totals per direction, and the delivered rate since the previous line."""
        now = time.monotonic()
        elapsed = max(1e-9, now - self._line_at)
        parts = []
        for d in (self.forward, self.reverse):
            mbps = (d.bytes_sent - self._line_bytes[d.name]) * 8 / elapsed / 1e6
            self._line_bytes[d.name] = d.bytes_sent
            parts.append(
                f"{d.name[:3]} {d.received} in {d.sent} out "
                f"{d.impairment.counters.dropped} dropped {mbps:.2f} Mbit/s"
            )
        self._line_at = now
        return " | ".join(parts) + f" | held {len(self._pending)} peers {len(self._upstream)}"

    # -- the work -----------------------------------------------------------------------------

    def _read(self, sock: socket.socket) -> None:
        for _ in range(READS_PER_WAKEUP):
            try:
                data, addr = sock.recvfrom(READ_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # ICMP errors from an earlier send surface here: UDP carries on
            now = time.monotonic()
            if sock is self.sock:
                peer = (addr[0], addr[1])
                out = self._upstream.get(peer)
                if out is None:
                    out = self._open_upstream(peer)
                    if out is None:
                        continue
                self._relay(self.forward, data, now, out, None)
            else:
                self._relay(self.reverse, data, now, self.sock, self._peer_of[sock])

    def _open_upstream(self, peer: Address) -> socket.socket | None:
        if len(self._upstream) >= MAX_PEERS:
            self.peers_refused += 1
            return None
        family = socket.AF_INET6 if ":" in self.to[0] else socket.AF_INET
        out = socket.socket(family, socket.SOCK_DGRAM)
        out.setblocking(False)
        out.connect(self.to)
        self._upstream[peer] = out
        self._peer_of[out] = peer
        return out

    def _relay(
        self,
        direction: _Direction,
        data: bytes,
        now: float,
        sock: socket.socket,
        addr: Address | None,
    ) -> None:
        direction.received += 1
        if self._origin is None:
            self._origin = now
        # The model's clock starts with the first datagram, as the simulated link's does, so
        # spikes and traces line up with the traffic the same way in both drivers.
        origin = self._origin
        for at in direction.impairment.deliveries(len(data), now - origin):
            at += origin
            if at <= now:
                self._send(direction, sock, addr, data)
            elif len(self._pending) >= MAX_IN_FLIGHT:
                direction.overflow += 1
            else:
                self._seq += 1
                heapq.heappush(self._pending, (at, self._seq, sock, addr, data))

    def _send_due(self, now: float) -> None:
        pending = self._pending
        while pending and pending[0][0] <= now:
            _, _, sock, addr, data = heapq.heappop(pending)
            direction = self.reverse if addr is not None else self.forward
            self._send(direction, sock, addr, data)

    def _send(
        self, direction: _Direction, sock: socket.socket, addr: Address | None, data: bytes
    ) -> None:
        try:
            if addr is None:
                sock.send(data)
            else:
                sock.sendto(data, addr)
        except OSError:
            direction.send_errors += 1  # a full buffer or a peer gone: the datagram is lost
            return
        direction.sent += 1
        direction.bytes_sent += len(data)


# -- the command line (also `framewire impair`) -------------------------------------------------

_LINK_OPTIONS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("delay-ms", {"type": float, "metavar": "MS", "help": "fixed one-way delay"}),
    ("jitter-ms", {"type": float, "metavar": "MS", "help": "jitter standard deviation"}),
    ("jitter-shape", {"choices": JITTER_SHAPES, "help": "jitter distribution (normal)"}),
    (
        "jitter-order",
        {"choices": ("free", "keep"), "help": "free: jitter may reorder (as netem); keep: never"},
    ),
    ("loss-pct", {"type": float, "metavar": "PCT", "help": "random loss"}),
    (
        "burst",
        {
            "metavar": "PCT/LEN",
            "help": "bursty loss (Gilbert-Elliott): PCT mean loss in bursts "
            "of LEN datagrams on average, e.g. 3/4",
        },
    ),
    ("reorder-pct", {"type": float, "metavar": "PCT", "help": "datagrams held back"}),
    ("reorder-ms", {"type": float, "metavar": "MS", "help": "how long they are held (5)"}),
    ("dup-pct", {"type": float, "metavar": "PCT", "help": "datagrams delivered twice"}),
    ("rate-mbps", {"type": float, "metavar": "MBPS", "help": "bottleneck rate"}),
    ("queue-packets", {"type": int, "metavar": "N", "help": "bottleneck queue (tail drop)"}),
    (
        "spike",
        {
            "metavar": "AMP_MS/DUR_MS/PERIOD_MS[/JITTER_MS]",
            "help": "periodic latency spikes, "
            "e.g. 40/40/1000/100 (a 40 ms stall about once a second)",
        },
    ),
    ("trace", {"metavar": "FILE", "help": "replay a recorded trace (any shared-trace format)"}),
    (
        "blackout",
        {
            "metavar": "START_S/END_S",
            "action": "append",
            "help": "drop everything between these times (seconds after the first datagram; "
            "repeatable), e.g. 5/5.5",
        },
    ),
)


def add_link_arguments(parser: argparse.ArgumentParser) -> None:
    """The impairment options. Each applies to both directions; ``--fwd-X``/``--rev-X``
    set one direction only (forward: towards --to; reverse: the answers)."""
    group = parser.add_argument_group(
        "impairments (each applies both ways; --fwd-OPTION / --rev-OPTION for one direction)"
    )
    for name, spec in _LINK_OPTIONS:
        group.add_argument(f"--{name}", **spec)
        for prefix in ("fwd", "rev"):
            hidden = {k: v for k, v in spec.items() if k != "help"}
            group.add_argument(f"--{prefix}-{name}", help=argparse.SUPPRESS, **hidden)
    parser.add_argument("--scenario", metavar="NAME", help="start from a catalogue scenario")
    parser.add_argument("--traces", metavar="DIR", help="the shared traces folder")
    parser.add_argument("--seed", type=int, default=1, help="the model's seed (1)")


def link_from_args(args: argparse.Namespace) -> LinkPair:
    """The link the options describe. Raises BenchError on a bad value."""
    base = LinkPair()
    if args.scenario:
        traces = Path(args.traces) if args.traces else None
        base = find_scenario(args.scenario, traces).link
    try:
        forward = _apply(base.forward, args, "fwd")
        reverse = _apply(base.reverse, args, "rev")
    except ValueError as exc:
        raise BenchError(str(exc)) from exc
    return LinkPair(forward=forward, reverse=reverse)


def _apply(config: LinkConfig, args: argparse.Namespace, prefix: str) -> LinkConfig:
    def value(name: str) -> Any:
        key = name.replace("-", "_")
        own = getattr(args, f"{prefix}_{key}")
        return own if own is not None else getattr(args, key)

    changes: dict[str, Any] = {}
    for name, field_name, scale in (
        ("delay-ms", "delay_s", 1e-3),
        ("jitter-ms", "jitter_s", 1e-3),
        ("loss-pct", "loss", 1e-2),
        ("reorder-pct", "reorder", 1e-2),
        ("reorder-ms", "reorder_delay_s", 1e-3),
        ("dup-pct", "duplicate", 1e-2),
        ("rate-mbps", "rate_bps", 1e6),
    ):
        if (v := value(name)) is not None:
            changes[field_name] = v * scale
    if (v := value("jitter-shape")) is not None:
        changes["jitter_shape"] = v
    if (v := value("jitter-order")) is not None:
        changes["jitter_keeps_order"] = v == "keep"
    if (v := value("queue-packets")) is not None:
        changes["queue_packets"] = v
    if (v := value("burst")) is not None:
        pct, length = _numbers(v, "--burst", 2, 2)
        changes["burst"] = GilbertElliott.from_loss(pct / 100, length)
    if (v := value("spike")) is not None:
        parts = _numbers(v, "--spike", 3, 4)
        changes["spikes"] = Spikes(
            amplitude_s=parts[0] / 1e3,
            duration_s=parts[1] / 1e3,
            period_s=parts[2] / 1e3,
            phase_jitter_s=(parts[3] if len(parts) > 3 else 0.0) / 1e3,
        )
    if (v := value("blackout")) is not None:
        for text in v:
            start, end = _numbers(text, "--blackout", 2, 2)
            if end < start:
                raise BenchError(f"--blackout {text}: the end comes before the start")
            changes["blackouts"] = (*changes.get("blackouts", config.blackouts), (start, end))
    if (v := value("trace")) is not None:
        try:
            trace = load_trace(v)
        except TraceError as exc:
            raise BenchError(str(exc)) from exc
        changes["trace"] = trace
        if trace.kind != "delay" and changes.get("queue_packets", config.queue_packets) is None:
            # A trace without a queue bound would grow without end; as the trace scenarios.
            changes["queue_packets"] = TRACE_QUEUE_PACKETS
    return replace(config, **changes)


def _numbers(text: str, option: str, least: int, most: int) -> list[float]:
    try:
        parts = [float(p) for p in text.split("/")]
    except ValueError:
        parts = []
    if not least <= len(parts) <= most or any(p < 0 for p in parts):
        raise BenchError(f"{option}: expected {least} to {most} numbers separated by '/'")
    return parts


def parse_address(text: str, option: str) -> Address:
    try:
        return parse_host_port(text)
    except ValueError as exc:
        raise BenchError(f"{option}: {exc}") from exc


def add_relay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", required=True, metavar="HOST:PORT", help="where peers send")
    parser.add_argument("--to", required=True, metavar="HOST:PORT", help="the other peer")
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the live counter line on stderr (default: when stderr is a terminal)",
    )
    add_link_arguments(parser)


def run_relay(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the relay the options describe until SIGINT/SIGTERM or --duration; print the JSON
    summary. Raises BenchError on bad options."""
    listen = parse_address(args.listen, "--listen")
    to = parse_address(args.to, "--to")
    link = link_from_args(args)
    try:
        relay = Relay(listen, to, link, seed=args.seed)
    except ValueError as exc:
        raise BenchError(str(exc)) from exc
    except OSError as exc:
        raise BenchError(f"cannot listen on {args.listen}: {exc.strerror or exc}") from exc
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True  # the wakeup socket gets select() out of its wait; run() then returns

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    host, port = relay.local_addr
    err.write(f"impair: listening on {host}:{port}, relaying to {to[0]}:{to[1]}\n")
    err.flush()
    show = args.progress if args.progress is not None else err.isatty()

    def progress(r: Relay) -> None:
        err.write(f"\r{r.stats_line()}\033[K")
        err.flush()

    wake, waker = socket.socketpair()
    wake.setblocking(False)
    waker.setblocking(False)
    previous_fd = signal.set_wakeup_fd(waker.fileno())
    try:
        relay.run(
            until=lambda: stop,
            duration_s=args.duration,
            progress=progress if show else None,
            wake=wake,
        )
    finally:
        signal.set_wakeup_fd(previous_fd)
        wake.close()
        waker.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        summary = relay.summary()
        relay.close()
    if show:
        err.write("\n")
    out.write(json.dumps(summary, indent=2) + "\n")
    out.flush()
    return 0


def spawn(
    listen: Address, to: Address, options: Sequence[str] = (), *, seed: int = 1
) -> tuple[Any, Address]:
    """Start a relay process (``python -m bench.relay``); return it and where it listens.

    For harnesses: the caller stops it with ``terminate()`` and reads the JSON summary from
    its stdout."""
    cmd = [sys.executable, "-m", "bench.relay", "--listen", f"{listen[0]}:{listen[1]}"]
    cmd += ["--to", f"{to[0]}:{to[1]}", "--seed", str(seed), "--no-progress", *options]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], SPAWN_TIMEOUT_S)
    line = proc.stderr.readline() if ready else ""
    if not ready:
        proc.kill()
        raise BenchError(f"relay did not start within {SPAWN_TIMEOUT_S:g} s")
    if not line.startswith("impair: listening on "):
        rest = proc.stderr.read()
        proc.kill()
        raise BenchError(f"relay did not start: {(line + rest).strip().splitlines()[-1:]}")
    where = line.split("listening on ", 1)[1].split(",", 1)[0]
    return proc, parse_address(where, "relay")


class RelayProcess:
    """A relay process started with :func:`spawn`; :meth:`stop` ends it and returns its JSON
    summary. For harnesses and the demo: one place that knows how a relay is stopped."""

    def __init__(
        self,
        to: Address,
        options: Sequence[str] = (),
        *,
        seed: int = 1,
        listen: Address = ("127.0.0.1", 0),
    ) -> None:
        self.proc, self.addr = spawn(listen, to, options, seed=seed)

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any] | None:
        """SIGTERM, then the JSON summary; None if it gave none. Never raises: it runs in
        ``finally`` blocks, where an error would hide the one that is propagating."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return None
        try:
            summary = json.loads(out)
        except (json.JSONDecodeError, TypeError):
            return None
        return summary if isinstance(summary, dict) else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    add_relay_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_relay(args)
    except BenchError as exc:
        sys.stderr.write(f"impair: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
