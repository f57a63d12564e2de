"""Stream a video file (or the test pattern) to a receiver through the library API.

    python examples/stream_video.py [--file FILM.mp4] [--seconds 5] [--out shown.mkv]

Both ends run here, on loopback: the receiver listens, the sender connects, encodes the
pictures with H.264 at a bitrate that follows the link's delay-based rate control, and
sends them on the reliable channel with a deadline; the receiver decodes them, holds them in
a smooth jitter buffer until their playout time, asks for a keyframe when it lost one, and
writes what it shows to ``--out``. Between two machines, run the receiving half on one
(``transport.listen``) and the sending half on the other (``transport.connect``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

import transport
from stream import (
    DecodedPicture,
    EncoderConfig,
    FileSink,
    FileSource,
    H264Decoder,
    H264Encoder,
    SyntheticSource,
    VideoReceiver,
    VideoSender,
)
from stream.jitter import JitterBuffer
from stream.pipeline import KEYFRAME_REQUEST, KEYFRAME_REQUEST_DEADLINE_S, VIDEO_MAX_RTO_S
from transport import RELIABLE, SessionConfig


async def main(file: Path | None, seconds: float, out: Path) -> int:
    config = SessionConfig(congestion="gcc", max_rto_s=VIDEO_MAX_RTO_S)
    listener = await transport.listen(("127.0.0.1", 0), config)
    sender_session = await transport.connect(listener.local_addr, config)
    receiver_session = await listener.accept()

    # The sending side: a source, an encoder that follows the rate controller, a sender.
    source = FileSource(file, loop=True) if file else SyntheticSource(1280, 720, 30)
    encoder = H264Encoder(
        EncoderConfig(
            width=source.width,
            height=source.height,
            fps=1 / source.interval_s,
            bitrate_bps=8_000_000,  # the ceiling; the target comes from the session
            intra_refresh=True,
        )
    )
    sender = VideoSender(
        sender_session,
        source,
        encoder,
        channel=RELIABLE,
        frame_deadline_s=0.1,
        bitrate=lambda: sender_session.target_bitrate_bps,
    )

    async def keyframe_requests() -> None:
        async for message in sender_session:
            if message.data == KEYFRAME_REQUEST:
                sender.request_keyframe()

    # The receiving side: decoder, jitter buffer, sink; keyframe requests go back.
    sink = FileSink(out, 1 / source.interval_s)
    jitter: JitterBuffer[DecodedPicture] = JitterBuffer("smooth")
    receiver = VideoReceiver(
        receiver_session,
        H264Decoder(),
        sink,
        channel=RELIABLE,
        on_keyframe_needed=lambda: receiver_session.send(
            KEYFRAME_REQUEST, deadline_s=KEYFRAME_REQUEST_DEADLINE_S
        ),
        jitter=jitter,
    )

    control = asyncio.ensure_future(keyframe_requests())
    receiving = asyncio.ensure_future(receiver.run(seconds + 1.0))
    sent = await sender.run(seconds)
    await sender_session.close("done")
    received = await receiving
    control.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await control
    sink.close()
    await listener.close()

    print(
        f"sent {sent.frames_sent} frames ({sent.keyframes_sent} keyframes, encoder at "
        f"{sent.encoder_bitrate_bps / 1e6:.1f} Mbit/s); shown {sink.frames}, "
        f"late {received.late_frames}, playout delay p50 {received.playout_delay_ms['p50']} ms, "
        f"frame latency p50 {received.frame_latency_ms['p50']} ms; wrote {out}"
    )
    return 0 if sink.frames > 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, help="a video file (default: the test pattern)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("shown.mkv"))
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.file, args.seconds, args.out)))
