"""The asyncio and poll adapters over real UDP sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

import transport
from transport import (
    LATEST,
    RELIABLE,
    UNRELIABLE,
    Closed,
    HandshakeTimeoutError,
    Message,
    SessionConfig,
    poll,
)

pytestmark = [pytest.mark.loopback, pytest.mark.timeout(60)]


async def _pair(
    config: SessionConfig | None = None, *, offload: bool = True
) -> tuple[transport.AsyncListener, transport.AsyncSession, transport.AsyncSession]:
    listener = await transport.listen(("127.0.0.1", 0), config, offload=offload)
    client = await transport.connect(listener.local_addr, config, offload=offload)
    server = await asyncio.wait_for(listener.accept(), 5)
    return listener, client, server


@pytest.mark.parametrize("offload", [True, False], ids=["gso-gro", "plain"])
def test_asyncio_reliable_messages_arrive_whole_and_in_order(offload: bool) -> None:
    async def main() -> None:
        listener, client, server = await _pair(offload=offload)
        payloads = [os.urandom(n) for n in (0, 1, 1100, 1200, 5000, 2_000_000, 3)]
        for data in payloads:
            client.send(data, channel=RELIABLE)
        got = []
        async with asyncio.timeout(20):
            async for message in server:
                got.append(message.data)
                if len(got) == len(payloads):
                    break
        assert got == payloads
        stats = client.stats()
        assert stats.packets_sent > 1700 and stats.srtt_ms > 0
        await client.close("bye")
        closed = await asyncio.wait_for(server.wait_closed(), 5)
        assert closed.by_peer and closed.reason == "bye"
        await listener.close()

    asyncio.run(main())


def test_asyncio_channels_and_handler_delivery() -> None:
    async def main() -> None:
        listener, client, server = await _pair()
        seen: list[Message] = []
        server.set_handler(seen.append)
        for i in range(50):
            client.send(b"u%d" % i, channel=UNRELIABLE)
            client.send(b"l%d" % i, channel=LATEST)
        client.send(b"end", channel=RELIABLE)
        async with asyncio.timeout(5):
            while not any(m.data == b"end" for m in seen):
                await asyncio.sleep(0.005)
        latest_ids = [m.message_id for m in seen if m.channel == LATEST]
        assert latest_ids == sorted(latest_ids) and latest_ids
        assert sum(m.channel == UNRELIABLE for m in seen) == 50  # loopback loses nothing
        # A reply flows back through the iterator API.
        server.send(b"reply", channel=RELIABLE)
        reply = await asyncio.wait_for(client.receive(), 5)
        assert reply.data == b"reply"
        await listener.close()
        closed = await asyncio.wait_for(client.wait_closed(), 5)
        assert closed.by_peer

    asyncio.run(main())


def test_asyncio_connect_to_silent_port_times_out() -> None:
    async def main() -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        config = SessionConfig(handshake_timeout_s=0.5, initial_retransmit_s=0.05)
        started = time.monotonic()
        with pytest.raises(HandshakeTimeoutError):
            await transport.connect(silent.getsockname(), config)
        assert time.monotonic() - started < 3
        silent.close()

    asyncio.run(main())


def test_asyncio_listener_survives_garbage() -> None:
    async def main() -> None:
        listener, client, server = await _pair()
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for size in (0, 1, 17, 33, 1200, 5000):
            junk.sendto(os.urandom(size), listener.local_addr)
        junk.sendto(b"\x40" + os.urandom(40), listener.local_addr)
        junk.close()
        client.send(b"still here", channel=RELIABLE)
        message = await asyncio.wait_for(server.receive(), 5)
        assert message.data == b"still here"
        assert listener.listener.counters.decode_failures >= 6
        await listener.close()

    asyncio.run(main())


def test_poll_adapter_exchanges_state() -> None:
    server = poll.listen(("127.0.0.1", 0))
    client = poll.connect(server.local_addr)
    end = time.monotonic() + 5
    while not client.is_established and time.monotonic() < end:
        client.service(timeout=0.001)
        server.service()
    assert client.is_established
    received: list[bytes] = []
    for tick in range(40):
        client.send(b"tick %d" % tick, channel=LATEST)
        client.send(b"event %d" % tick, channel=RELIABLE)
        for peer_event in server.service(timeout=0.002):
            if isinstance(peer_event.event, Message):
                received.append(peer_event.event.data)
        client.service()
    end = time.monotonic() + 2
    while sum(d.startswith(b"event") for d in received) < 40 and time.monotonic() < end:
        received += [pe.event.data for pe in server.service(0.005) if isinstance(pe.event, Message)]
        client.service()
    events = [d for d in received if d.startswith(b"event")]
    assert events == [b"event %d" % i for i in range(40)]
    client.close("done")
    closed: list[Closed] = []
    end = time.monotonic() + 2
    while not closed and time.monotonic() < end:
        closed += [e for e in client.service(0.005) if isinstance(e, Closed)]
        server.service()
    assert closed and not closed[0].by_peer
    server.close()
