"""H.264 encoder and decoder: stamps survive, keyframes come when asked, garbage is contained."""

from __future__ import annotations

import time

import numpy as np
import pytest

from stream import (
    EncodedFrame,
    EncoderConfig,
    FrameDecodeError,
    H264Decoder,
    H264Encoder,
    StreamUsageError,
    SyntheticSource,
    read_stamp,
)


def encoder_for(source: SyntheticSource, **overrides: object) -> H264Encoder:
    config = EncoderConfig(
        width=source.width,
        height=source.height,
        fps=source.fps,
        **overrides,  # type: ignore[arg-type]
    )
    return H264Encoder(config)


def encode_one(encoder: H264Encoder, yuv: np.ndarray) -> EncodedFrame:
    frames = encoder.encode(yuv, time.monotonic_ns())
    assert len(frames) == 1, "zerolatency must emit one frame per picture"
    return frames[0]


@pytest.mark.parametrize(
    ("width", "height", "bitrate_bps"),
    [(1280, 720, 4_000_000), (640, 360, 4_000_000), (640, 360, 150_000)],
)
def test_stamp_survives_encode_decode(width: int, height: int, bitrate_bps: int) -> None:
    source = SyntheticSource(width, height, 30)
    encoder = encoder_for(source, bitrate_bps=bitrate_bps)
    decoder = H264Decoder()
    stamps = [0, 1, 2, 3, 255, 256, 65_535, 0x1234_5678, 2**31, 2**32 - 1, 4, 5]
    for stamp in stamps:
        frame = encode_one(encoder, source.frame(stamp))
        (picture,) = decoder.decode(frame)
        assert picture.index == frame.index
        assert picture.capture_ns == frame.capture_ns
        assert (picture.width, picture.height) == (width, height)
        assert picture.luma.shape == (height, width)
        assert read_stamp(picture.luma) == stamp


def test_pictures_stay_valid_after_later_decodes() -> None:
    # luma is a view into the decoded frame's buffer: the decoder must not recycle a buffer
    # that a picture still refers to.
    source = SyntheticSource(320, 240, 30)
    encoder, decoder = encoder_for(source), H264Decoder()
    pictures = [p for i in range(8) for p in decoder.decode(encode_one(encoder, source.frame(i)))]
    assert [read_stamp(p.luma) for p in pictures] == list(range(8))


def test_decoded_picture_is_the_whole_frame() -> None:
    source = SyntheticSource(320, 240, 30)
    encoder, decoder = encoder_for(source), H264Decoder()
    (picture,) = decoder.decode(encode_one(encoder, source.frame(9)))
    yuv = picture.picture.to_ndarray(format="yuv420p")
    assert yuv.shape == (360, 320)
    assert np.array_equal(yuv[:240], picture.luma)


def test_first_frame_is_keyframe_then_p_frames() -> None:
    source = SyntheticSource(640, 360, 30)
    encoder = encoder_for(source)
    keyframes = [encode_one(encoder, source.frame(i)).keyframe for i in range(5)]
    assert keyframes == [True, False, False, False, False]


def test_request_keyframe_makes_next_frame_a_keyframe() -> None:
    source = SyntheticSource(640, 360, 30)
    encoder = encoder_for(source)
    frames = [encode_one(encoder, source.frame(i)) for i in range(3)]
    encoder.request_keyframe()
    frames += [encode_one(encoder, source.frame(i)) for i in range(3, 6)]
    assert [f.keyframe for f in frames] == [True, False, False, True, False, False]
    assert [f.index for f in frames] == list(range(6))


def test_periodic_keyframes() -> None:
    source = SyntheticSource(320, 240, 30)
    encoder = encoder_for(source, keyframe_interval_frames=4)
    keyframes = [encode_one(encoder, source.frame(i)).keyframe for i in range(9)]
    assert [i for i, key in enumerate(keyframes) if key] == [0, 4, 8]


def test_decoder_can_join_at_a_requested_keyframe() -> None:
    # Headers are repeated on every keyframe, so a receiver that missed the stream start
    # (and the first SPS/PPS) recovers at the next keyframe.
    source = SyntheticSource(640, 360, 30)
    encoder = encoder_for(source)
    for i in range(5):
        encode_one(encoder, source.frame(i))
    encoder.request_keyframe()
    late = [encode_one(encoder, source.frame(i)) for i in range(5, 8)]
    decoder = H264Decoder()
    stamps = [read_stamp(p.luma) for frame in late for p in decoder.decode(frame)]
    assert stamps == [5, 6, 7]


def test_flush_then_encode_is_a_usage_error() -> None:
    source = SyntheticSource(320, 240, 30)
    encoder = encoder_for(source)
    encode_one(encoder, source.frame(0))
    assert encoder.flush() == []
    assert encoder.flush() == []
    with pytest.raises(StreamUsageError):
        encoder.encode(source.frame(1), 0)


@pytest.mark.parametrize(
    "yuv",
    [
        np.zeros((240, 320), dtype=np.uint8),  # luma only
        np.zeros((240 * 3 // 2, 320), dtype=np.uint16),
        np.zeros((240 * 3 // 2, 322), dtype=np.uint8),
    ],
)
def test_encode_rejects_wrong_arrays(yuv: np.ndarray) -> None:
    encoder = H264Encoder(EncoderConfig(width=320, height=240, fps=30))
    with pytest.raises(StreamUsageError):
        encoder.encode(yuv, 0)


def _garbage_frames() -> list[EncodedFrame]:
    rng = np.random.default_rng(7)
    source = SyntheticSource(320, 240, 30)
    encoder = encoder_for(source)
    good = [encode_one(encoder, source.frame(i)) for i in range(4)]
    blobs = [
        b"\x00",
        b"\x00\x00\x00\x01",
        b"\x00\x00\x00\x01\x67" + bytes(40),  # an SPS NAL header with nonsense inside
        rng.bytes(3000),
        b"\x00\x00\x00\x01" + rng.bytes(5000),
        good[0].data[: len(good[0].data) // 2],  # truncated keyframe
        bytes(b ^ 0x5A for b in good[1].data),
    ]
    # Keyframe with its slice data overwritten by noise past the headers.
    damaged = bytearray(good[0].data)
    damaged[60:] = rng.bytes(len(damaged) - 60)
    blobs.append(bytes(damaged))
    frames = [
        EncodedFrame(index=100 + i, capture_ns=1, keyframe=False, width=320, height=240, data=b)
        for i, b in enumerate(blobs)
    ]
    return good[:1] + frames + good[1:]


def test_decoder_contains_garbage() -> None:
    decoder = H264Decoder()
    errors = decoded = 0
    for frame in _garbage_frames():
        try:
            decoded += len(decoder.decode(frame))
        except FrameDecodeError:
            errors += 1
    assert decoded >= 1  # at least the first clean keyframe
    assert errors >= 1
    # Whatever FFmpeg makes of it, the decoder stays usable for the next clean stream.
    source = SyntheticSource(320, 240, 30)
    encoder = encoder_for(source)
    pictures = decoder.decode(encode_one(encoder, source.frame(77)))
    assert [read_stamp(p.luma) for p in pictures] == [77]


@pytest.mark.parametrize(
    "overrides",
    [
        {"width": 641},
        {"height": 8194},
        {"width": 8},
        {"fps": 0},
        {"bitrate_bps": 0},
        {"keyframe_interval_frames": 0},
        {"vbv_buffer_s": 0},
        {"preset": "ludicrous"},
        {"tune": "zerolatency,nope"},
        {"threads": 0},
    ],
)
def test_encoder_config_validation(overrides: dict[str, object]) -> None:
    fields: dict[str, object] = {"width": 640, "height": 360, "fps": 30}
    fields.update(overrides)
    with pytest.raises(ValueError):
        EncoderConfig(**fields)  # type: ignore[arg-type]


def test_encoder_config_defaults() -> None:
    config = EncoderConfig(width=1280, height=720, fps=30)
    assert (config.preset, config.tune, config.bitrate_bps) == ("ultrafast", "zerolatency", 4e6)
    EncoderConfig(width=640, height=360, fps=30, tune="zerolatency,fastdecode")


def test_decoder_threads_validation() -> None:
    with pytest.raises(ValueError):
        H264Decoder(threads=0)


def _mbps(frames: list[EncodedFrame], fps: float) -> float:
    return sum(len(f.data) for f in frames) * 8 * fps / len(frames) / 1e6


def test_set_bitrate_moves_the_output_within_two_seconds() -> None:
    """The VBV sits on the codec context, so FFmpeg's libx264 wrapper accepts a new ABR
    target on an open encoder (with the VBV only in x264-params it refused every change)."""
    source = SyntheticSource(1280, 720, 30)
    encoder = encoder_for(source, bitrate_bps=4_000_000)
    before = [encode_one(encoder, source.frame(i)) for i in range(60)]
    assert encoder.set_bitrate(500_000) == 500_000
    [encode_one(encoder, source.frame(i)) for i in range(60, 120)]
    after = [encode_one(encoder, source.frame(i)) for i in range(120, 180)]
    assert _mbps(before[1:], 30) > 2.5
    assert _mbps(after, 30) < 0.8
    assert encoder.set_bitrate(1e9) == 4_000_000  # the VBV peak is the ceiling
    with pytest.raises(StreamUsageError):
        encoder.set_bitrate(float("nan"))


def test_reopen_moves_the_vbv_and_starts_with_a_keyframe() -> None:
    source = SyntheticSource(640, 360, 30)
    encoder = encoder_for(source, bitrate_bps=4_000_000, vbv_buffer_s=0.25)
    frames = [encode_one(encoder, source.frame(i)) for i in range(3)]
    encoder.reopen(400_000)
    frames += [encode_one(encoder, source.frame(i)) for i in range(3, 6)]
    assert [f.index for f in frames] == list(range(6))
    assert [f.keyframe for f in frames] == [True, False, False, True, False, False]
    assert encoder.config.bitrate_bps == 400_000 and encoder.bitrate_bps == 400_000
    # The keyframe is held to a quarter second of the new rate, about 12.5 KB (x264 may
    # overshoot a VBV a little on the first frame).
    assert len(frames[3].data) < 2 * 400_000 * 0.25 / 8


def test_intra_refresh_has_no_periodic_keyframe_bursts() -> None:
    source = SyntheticSource(640, 360, 30)
    encoder = encoder_for(source, intra_refresh=True, keyframe_interval_frames=30)
    frames = [encode_one(encoder, source.frame(i)) for i in range(90)]
    sizes = [len(f.data) for f in frames[1:]]
    assert max(sizes) < 4 * (sum(sizes) / len(sizes))  # no frame carries a whole picture
    decoder = H264Decoder()
    pictures = [p for f in frames for p in decoder.decode(f)]
    assert [read_stamp(p.luma) for p in pictures] == [p.index for p in pictures]


def test_capture_time_in_the_pixels_survives_encode_decode() -> None:
    """The test pattern draws the capture time too (pictures >= 512 px wide): read back from
    the decoded picture it matches to the stamp's 10 us unit, and unwraps across the 11.9 h
    wrap of its 32 bits."""
    from stream.stamp import TIME_UNIT_NS, TIME_WRAP_NS, read_time

    source = SyntheticSource(1280, 720, 30)
    encoder = encoder_for(source, bitrate_bps=1_000_000)
    decoder = H264Decoder()
    base = 5 * TIME_WRAP_NS - 7 * TIME_UNIT_NS  # the stamps wrap during these frames
    for i in range(10):
        capture = base + i * 33_333_333
        frames = encoder.encode(source.frame(i, capture), capture)
        (picture,) = [p for f in frames for p in decoder.decode(f)]
        assert read_stamp(picture.luma) == i
        got = read_time(picture.luma, near_ns=capture + 50_000_000)
        assert got is not None and abs(got - capture) < TIME_UNIT_NS
    narrow = SyntheticSource(320, 240, 30).frame(0, 123_456_789)
    assert read_time(narrow[:240], near_ns=0) is None  # no room: not drawn, not read
