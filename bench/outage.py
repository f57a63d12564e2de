"""How fast the picture is right again after the link goes away for a while.

``python -m bench.outage [--outage-ms 500] [--at-s 3] [--seconds 8] [--jitter MODE] [--json]``

Real sockets on loopback: ``framewire send``'s pipeline (720p30 test pattern, H.264, frames on
the reliable channel with a 100 ms deadline, keyframe requests on the control channel) to
``framewire receive``'s (decode, jitter buffer, sink), through an impairment relay process
with 10 ms each way that drops everything, both ways, for ``outage_ms`` from ``at_s`` after
the first datagram. The sink reads the frame number stamped into every picture's pixels.

Reported: ``recovery_ms``, from the link's return to the first picture shown that was
captured after it and is intact (its pixel stamp matches its frame number); ``garbage``,
pictures shown whose stamp does not match (a broken reference chain would show here);
keyframe requests; and the largest gap between pictures shown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import transport
from bench.relay import RelayProcess
from stream import (
    DecodedPicture,
    EncoderConfig,
    H264Decoder,
    H264Encoder,
    SyntheticSource,
    VideoReceiver,
    VideoSender,
    read_stamp,
)
from stream.jitter import JitterBuffer
from stream.pipeline import KEYFRAME_REQUEST, KEYFRAME_REQUEST_DEADLINE_S, VIDEO_MAX_RTO_S
from transport.config import RELIABLE, SessionConfig

VIDEO = RELIABLE
CONTROL = RELIABLE
DELAY_MS = 10


MIN_PSNR_DB = 30.0
"""A shown picture is intact when its luma is this close to the source's (an intact 720p
picture of the test pattern at 4 Mbit/s measures well above 35 dB; one decoded from a broken
reference chain smears and falls far below)."""


class _Shown:
    """A sink noting when each picture is shown and whether it is the source's picture: its
    pixel stamp matches its frame number and its luma matches the source's (PSNR)."""

    def __init__(self, source: SyntheticSource) -> None:
        self._source = source
        self.pictures: list[tuple[float, int, int, bool]] = []  # (shown, index, capture, ok)

    def consume(self, picture: DecodedPicture) -> None:
        shown = time.monotonic()
        luma = picture.luma
        original = self._source.frame(picture.index, picture.capture_ns)[: luma.shape[0]]
        error = float(np.mean((luma.astype(np.float32) - original) ** 2))
        psnr = 99.0 if error == 0 else 10 * math.log10(255**2 / error)
        ok = read_stamp(luma) == picture.index and psnr >= MIN_PSNR_DB
        self.pictures.append((shown, picture.index, picture.capture_ns, ok))


async def measure(
    outage_ms: float = 500.0, at_s: float = 3.0, seconds: float = 8.0, jitter: str = "smooth"
) -> dict[str, Any]:
    config = SessionConfig(max_rto_s=VIDEO_MAX_RTO_S)  # as framewire send
    listener = await transport.listen(("127.0.0.1", 0), config)
    blackout = f"{at_s:g}/{at_s + outage_ms / 1000:g}"
    relay = RelayProcess(listener.local_addr, ("--delay-ms", str(DELAY_MS), "--blackout", blackout))
    source = SyntheticSource(1280, 720, 30)
    sink = _Shown(source)
    try:
        origin = time.monotonic()  # the relay's clock starts with our first datagram
        client = await transport.connect(relay.addr, config)
        server = await listener.accept()
        encoder = H264Encoder(EncoderConfig(width=1280, height=720, fps=30))
        sender = VideoSender(client, source, encoder, channel=VIDEO, frame_deadline_s=0.1)
        requests = {"n": 0}

        def ask() -> None:
            requests["n"] += 1
            with contextlib.suppress(transport.TransportError):
                server.send(
                    KEYFRAME_REQUEST, channel=CONTROL, deadline_s=KEYFRAME_REQUEST_DEADLINE_S
                )

        receiver = VideoReceiver(
            server,
            H264Decoder(),
            sink,
            channel=VIDEO,
            on_keyframe_needed=ask,
            jitter=JitterBuffer(jitter),
        )

        async def control() -> None:
            async for message in client:
                if message.data == KEYFRAME_REQUEST:
                    sender.request_keyframe()

        tasks = [asyncio.ensure_future(control()), asyncio.ensure_future(receiver.run(seconds))]
        with contextlib.suppress(transport.TransportError):
            await sender.run(seconds)
        await asyncio.sleep(0.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stats = receiver.stats()
        with contextlib.suppress(transport.TransportError):
            await client.close("done")
    finally:
        await listener.close()
        summary = relay.stop()
    back = origin + at_s + outage_ms / 1000
    back_ns = int(back * 1e9)
    fresh = [t for t, _, capture, ok in sink.pictures if ok and capture >= back_ns]
    shown = [t for t, _, _, _ in sink.pictures]
    gaps = [b - a for a, b in itertools.pairwise(shown)]
    forward = (summary or {}).get("forward", {})
    return {
        "outage_ms": outage_ms,
        "at_s": at_s,
        "jitter": jitter,
        "recovery_ms": round((fresh[0] - back) * 1000, 1) if fresh else None,
        "pictures_shown": len(sink.pictures),
        "garbage": sum(1 for *_, ok in sink.pictures if not ok),
        "largest_gap_ms": round(max(gaps) * 1000, 1) if gaps else None,
        "keyframe_requests": requests["n"],
        "frames_decoded": stats.frames_decoded,
        "relay_dropped_in_blackout": forward.get("lost_blackout"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outage", description=__doc__)
    parser.add_argument("--outage-ms", type=float, default=500.0)
    parser.add_argument("--at-s", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--jitter", default="smooth")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.outage_ms, args.at_s, args.seconds, args.jitter))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(
            f"outage {result['outage_ms']:g} ms: picture right again {result['recovery_ms']} ms "
            f"after the link returned; garbage pictures {result['garbage']}, "
            f"largest gap {result['largest_gap_ms']} ms, "
            f"keyframe requests {result['keyframe_requests']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
