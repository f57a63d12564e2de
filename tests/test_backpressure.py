"""A program that stops reading slows its peer down; memory stays bounded; nothing is lost."""

from __future__ import annotations

import random

from transport import Message, SessionConfig
from transport.listener import Listener
from transport.session import Session

CLIENT = ("127.0.0.1", 2)
SERVER = ("127.0.0.1", 1)


def _pump(client: Session, listener: Listener, now: float) -> None:
    for _ in range(50):
        moved = False
        for data, _addr in client.datagrams_to_send(now):
            listener.receive_datagram(data, CLIENT, now)
            moved = True
        for data, _addr in listener.datagrams_to_send(now):
            client.receive_datagram(data, SERVER, now)
            moved = True
        if not moved:
            return


def _step(client: Session, listener: Listener, now: float) -> None:
    for engine in (client, listener):
        timer = engine.next_timer()
        if timer is not None and timer <= now:
            engine.handle_timer(now)
    _pump(client, listener, now)


def test_unread_messages_stay_bounded_and_arrive_once_read() -> None:
    config = SessionConfig(max_undelivered_bytes=100_000, max_message_bytes=50_000)
    rng = random.Random(9)
    listener = Listener(config, 0.0, rng.randbytes)
    client = Session.client(config, SERVER, 0.0, rng.randbytes)
    _pump(client, listener, 0.0)
    accepted = listener.next_event()
    assert accepted is not None
    server = accepted.session
    payloads = [rng.randbytes(rng.randrange(1, 20_000)) for _ in range(200)]
    for data in payloads:
        client.send(data, channel=0, now=0.0)
    now = 0.0
    peak = 0
    for _ in range(300):  # 3 s in which the program reads nothing
        now += 0.01
        _step(client, listener, now)
        peak = max(peak, server.stats().undelivered_bytes)
    # Bounded by the limit plus what was in flight when it was reached (one message).
    assert peak <= config.max_undelivered_bytes + config.max_message_bytes
    assert client.stats().send_queue_bytes > 0  # the sender is held back, not dropping
    got: list[bytes] = []
    for _ in range(3000):  # now the program reads everything, and the rest flows
        now += 0.01
        while (event := server.next_event()) is not None:
            if isinstance(event, Message):
                got.append(event.data)
        if len(got) == len(payloads):
            break
        _step(client, listener, now)
    assert got == payloads
