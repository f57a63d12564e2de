"""Microbenchmarks of the hot paths (pytest-benchmark; short mode by default, see pyproject).

Each benchmark also records, in ``extra_info``, its ratio to a baseline measured in the same
run (a bare ChaCha20-Poly1305 seal or open of one datagram, a bare bytes copy), because
absolute times drift on shared machines. Run the full version with
``pytest tests/test_bench_hotpaths.py --benchmark-enable --benchmark-max-time=1``.
"""

from __future__ import annotations

import random
import timeit
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from transport import SessionConfig
from transport.listener import Listener
from transport.session import Session

pytestmark = pytest.mark.benchmark(group="hot paths")

CLIENT_ADDR = ("127.0.0.1", 2)
SERVER_ADDR = ("127.0.0.1", 1)


def _connected(config: SessionConfig) -> tuple[Session, Listener, Session]:
    rng = random.Random(3)
    listener = Listener(config, 0.0, rng.randbytes)
    client = Session.client(config, SERVER_ADDR, 0.0, rng.randbytes)
    for _ in range(4):
        for data, _addr in client.datagrams_to_send(0.0):
            listener.receive_datagram(data, CLIENT_ADDR, 0.0)
        for data, _addr in listener.datagrams_to_send(0.0):
            client.receive_datagram(data, SERVER_ADDR, 0.0)
    accepted = listener.next_event()
    assert accepted is not None
    return client, listener, accepted.session


def _per_call_us(fn: Callable[[], object], number: int = 2000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e6


def _ratio(benchmark: pytest.FixtureRequest, baseline: Callable[[], object], key: str) -> None:
    stats = benchmark.stats.stats  # type: ignore[attr-defined]
    base = _per_call_us(baseline)
    benchmark.extra_info[f"{key}_baseline_us"] = round(base, 3)  # type: ignore[attr-defined]
    benchmark.extra_info[f"ratio_to_{key}"] = round(stats.median * 1e6 / base, 2)  # type: ignore[attr-defined]


def test_bench_packet_seal(benchmark: pytest.FixtureRequest) -> None:
    """A 1200-byte unreliable message to a sealed datagram (the sender's whole path)."""
    config = SessionConfig(max_datagram_bytes=1472, initial_window_packets=10**6)
    client, _, _ = _connected(config)
    message = bytes(1200)

    def send_one() -> None:
        client.send(message, channel=1, now=0.0)
        client.datagrams_to_send(0.0)

    benchmark(send_one)  # type: ignore[operator]
    aead = ChaCha20Poly1305(bytes(32))
    _ratio(benchmark, lambda: aead.encrypt(bytes(12), message, bytes(17)), "aead_seal")


def test_bench_packet_open(benchmark: pytest.FixtureRequest) -> None:
    """A sealed datagram to a delivered Message (the receiver's whole path)."""
    config = SessionConfig(max_datagram_bytes=1472, initial_window_packets=10**6)
    client, listener, server = _connected(config)
    datagrams = []
    for _ in range(20000):
        client.send(bytes(1200), channel=1, now=0.0)
        datagrams.extend(d for d, _ in client.datagrams_to_send(0.0))
    feed = iter(datagrams)

    def receive_one() -> None:
        listener.receive_datagram(next(feed), CLIENT_ADDR, 0.0)
        server.next_event()

    benchmark.pedantic(receive_one, rounds=min(len(datagrams), 5000), iterations=1)  # type: ignore[attr-defined]
    assert server.stats().messages_delivered > 0
    aead = ChaCha20Poly1305(bytes(32))
    sealed = aead.encrypt(bytes(12), bytes(1200), bytes(17))
    _ratio(benchmark, lambda: aead.decrypt(bytes(12), sealed, bytes(17)), "aead_open")


def test_bench_fragment_1mb(benchmark: pytest.FixtureRequest) -> None:
    """A 1 MB reliable message cut into sealed 1200-byte datagrams."""
    config = SessionConfig(initial_window_packets=10**6)
    client, _, _ = _connected(config)
    message = bytes(1_000_000)

    def fragment() -> int:
        client.send(message, channel=0, now=0.0)
        return len(client.datagrams_to_send(0.0))

    count = benchmark(fragment)  # type: ignore[operator]
    assert count >= 1_000_000 // 1200
    aead = ChaCha20Poly1305(bytes(32))
    chunk = bytes(1167)
    _ratio(
        benchmark,
        lambda: [aead.encrypt(bytes(12), chunk, bytes(17)) for _ in range(count)],
        "aead_seal_all",
    )


def test_bench_reassemble_1mb(benchmark: pytest.FixtureRequest) -> None:
    """The datagrams of 1 MB reliable messages to whole messages on the receiving side."""
    config = SessionConfig(initial_window_packets=10**6)
    client, listener, server = _connected(config)
    batches = []
    for _ in range(6):
        client.send(bytes(1_000_000), channel=0, now=0.0)
        batches.append([d for d, _ in client.datagrams_to_send(0.0)])
    feed = iter(batches)

    def reassemble() -> None:
        for data in next(feed):
            listener.receive_datagram(data, CLIENT_ADDR, 0.0)
        while server.next_event() is not None:
            pass

    benchmark.pedantic(reassemble, rounds=len(batches), iterations=1)  # type: ignore[attr-defined]
    assert server.stats().messages_delivered == len(batches)
    data = bytes(1_000_000)
    _ratio(benchmark, lambda: bytearray(data), "memcpy_1mb")
