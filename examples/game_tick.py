"""A fixed-tick game loop on the poll adapter: no threads, no event loop.

    python examples/game_tick.py [--ticks 120] [--hz 60]

A "server" and a "client" run in one loop for clarity (in a game they are two programs).
Every tick the client sends its input on the latest-only channel; the server steps a tiny
simulation and sends the world state back on the latest-only channel, and a score event on
the reliable channel every second. Both call ``service()`` once per tick.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time

from transport import LATEST, RELIABLE, Closed, Message, poll

STATE = struct.Struct("!Iff")  # tick, x, y
INPUT = struct.Struct("!Iff")  # tick, dx, dy


def run(ticks: int, hz: int) -> int:
    server = poll.listen(("127.0.0.1", 0))
    client = poll.connect(server.local_addr)
    handshake_end = time.monotonic() + 5.0
    while not client.is_established:  # both ends live in this loop, so service both
        if time.monotonic() > handshake_end:
            print("handshake did not finish", file=sys.stderr)
            return 1
        client.service(timeout=0.001)
        server.service()
    x = y = 0.0
    states_seen = 0
    newest_state = -1
    scores: list[bytes] = []
    interval = 1.0 / hz
    start = time.monotonic()
    for tick in range(ticks):
        # Client: read the world, send input.
        for event in client.service():
            if isinstance(event, Message) and event.channel == LATEST:
                seen_tick, _, _ = STATE.unpack(event.data)
                assert seen_tick > newest_state, "latest-only never goes backwards"
                newest_state = seen_tick
                states_seen += 1
            elif isinstance(event, Message) and event.channel == RELIABLE:
                scores.append(event.data)
        client.send(INPUT.pack(tick, 1.0, 0.5), channel=LATEST)
        # Server: apply inputs, step, broadcast.
        for peer_event in server.service():
            event = peer_event.event
            if isinstance(event, Message) and event.channel == LATEST:
                _, dx, dy = INPUT.unpack(event.data)
                x, y = x + dx * interval, y + dy * interval
        for peer in server.peers:
            peer.send(STATE.pack(tick, x, y), channel=LATEST)
            if tick % hz == 0:
                peer.send(f"score at tick {tick}".encode(), channel=RELIABLE)
        # Sleep to the next tick boundary (absolute, so lateness does not accumulate).
        delay = start + (tick + 1) * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    stats = client.stats()
    client.close("game over")
    deadline = time.monotonic() + 2.0
    closed = False
    while not closed and time.monotonic() < deadline:
        closed = any(isinstance(e, Closed) for e in client.service(timeout=0.01))
        server.service()
    server.close()
    print(
        f"{ticks} ticks at {hz} Hz: states received {states_seen}, newest tick {newest_state}, "
        f"score events {len(scores)}, position ({x:.2f}, {y:.2f}), srtt {stats.srtt_ms:.2f} ms"
    )
    return 0 if states_seen >= ticks // 2 and scores and closed else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=120)
    parser.add_argument("--hz", type=int, default=60)
    args = parser.parse_args()
    sys.exit(run(args.ticks, args.hz))
