"""Two asyncio peers on loopback exchange messages on all three channel kinds.

    python examples/async_messages.py [--count 100]

The listener echoes every message back on the channel it came from; the client checks that
the reliable ones came back complete and in order, and prints the session's stats.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import transport
from transport import LATEST, RELIABLE, UNRELIABLE


async def echo(listener: transport.AsyncListener) -> None:
    session = await listener.accept()
    async for message in session:
        session.send(message.data, channel=message.channel)


async def main(count: int) -> int:
    listener = await transport.listen(("127.0.0.1", 0))
    server = asyncio.create_task(echo(listener))
    session = await transport.connect(listener.local_addr)
    for i in range(count):
        session.send(f"reliable {i}".encode(), channel=RELIABLE)
        session.send(f"position {i}".encode(), channel=LATEST)
        session.send(f"ping {i}".encode(), channel=UNRELIABLE, deadline_s=0.1)
    session.send(b"x" * 200_000, channel=RELIABLE)  # fragmented and reassembled
    reliable: list[bytes] = []
    others = 0
    async with asyncio.timeout(10):
        async for message in session:
            if message.channel == RELIABLE:
                reliable.append(message.data)
                if len(reliable) == count + 1:
                    break
            else:
                others += 1
    expected = [f"reliable {i}".encode() for i in range(count)] + [b"x" * 200_000]
    stats = session.stats()
    await session.close("example done")
    server.cancel()
    await listener.close()
    ok = reliable == expected
    print(
        f"reliable: {len(reliable)}/{count + 1} in order={ok}; unreliable/latest echoed: {others}; "
        f"srtt {stats.srtt_ms:.2f} ms, packets sent {stats.packets_sent}, "
        f"lost {stats.packets_lost}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    sys.exit(asyncio.run(main(parser.parse_args().count)))
