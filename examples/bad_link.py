"""How does my traffic fare on a bad link? Simulated, then for real through the relay.

1. On the simulated link (virtual clock, deterministic): 60 Hz game state on the latest-only
   channel through a catalogue scenario, for a simulated minute in about a second.
2. On loopback through ``framewire impair``'s relay with the same link: the same traffic with
   real sockets, for a few seconds.

    python examples/bad_link.py --scenario wifi-spikes --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import time

import transport
from bench.relay import RelayProcess
from bench.scenarios import scenario
from bench.simlink import SimNetwork
from transport import LATEST

RATE_HZ = 60
STATE_BYTES = 300


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def simulated(name: str, seconds: float) -> None:
    link = scenario(name).link
    net = SimNetwork(seed=1, c2s=link.forward, s2c=link.reverse)
    net.connect()
    start = net.now
    net.send_many(
        "client",
        (bytes(STATE_BYTES) for _ in range(int(seconds * RATE_HZ))),
        channel=LATEST,
        interval_s=1 / RATE_HZ,
    )
    wall = time.perf_counter()
    net.run(start + seconds + 1.0)
    wall = time.perf_counter() - wall
    ms = [x * 1e3 for x in net.latencies("client", LATEST).values()]
    print(
        f"simulated {seconds:.0f} s in {wall:.2f} s: {len(ms)} of {int(seconds * RATE_HZ)} "
        f"states delivered, p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms"
    )


async def real(name: str, seconds: float) -> None:
    listener = await transport.listen(("127.0.0.1", 0))
    relay = RelayProcess(listener.local_addr, ("--scenario", name))
    try:
        client = await transport.connect(relay.addr)
        server = await listener.accept()
        ms: list[float] = []

        def on_state(message: transport.Message) -> None:
            ms.append((time.monotonic() - float(message.data.split(b" ")[0])) * 1e3)

        server.set_handler(on_state)
        for _ in range(int(seconds * RATE_HZ)):
            stamp = f"{time.monotonic()!r} ".encode()
            client.send(stamp.ljust(STATE_BYTES, b"."), channel=LATEST)
            await asyncio.sleep(1 / RATE_HZ)
        await asyncio.sleep(0.5)
        await client.close("done")
    finally:
        await listener.close()
        relay.stop()
    print(
        f"through the relay: {len(ms)} of {int(seconds * RATE_HZ)} states delivered, "
        f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="wifi-spikes", help="see framewire bench --list")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    simulated(args.scenario, 60.0)
    asyncio.run(real(args.scenario, args.seconds))


if __name__ == "__main__":
    main()
