"""The comparison anchors: pure parts always, the real runs (through the relay) when installed."""

from __future__ import annotations

import importlib
import math
import shutil
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import anchors
from bench.anchors import (
    CHUNK_HEADER,
    CHUNK_MAGIC,
    WARMUP_FRAME,
    AnchorTiming,
    AnchorUnavailable,
    FrameAssembly,
    MessageWorkload,
    VideoWorkload,
    build_row,
    candidate_addresses,
    check_relay_carried,
    decode_chunk,
    decode_message,
    encode_message,
    ensure_installed,
    latency_summary,
    percentile,
    relay_line,
    route_candidates,
    run_aiortc,
    run_srt,
    srt_caller_uri,
    srt_listener_uri,
    strip_candidates,
    udp_input_uri,
    udp_output_uri,
)
from bench.errors import BenchError
from bench.report import validate_result

MS = 1_000_000  # nanoseconds


def _result(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "scenario": "anchors-test",
        "version": 1,
        "description": "",
        "driver": "relay",
        "seed": 1,
        "duration_s": 1.0,
        "rows": rows,
    }


# -- rows ---------------------------------------------------------------------------------------


def test_row_from_a_timeline_counts_and_series() -> None:
    start = 5_000_000_000
    send_ns = [start + i * 16 * MS for i in range(5)]
    latency_ns: list[int | None] = [2 * MS, None, 4 * MS, 3 * MS, None]
    row = build_row("aiortc", "unreliable", send_ns, latency_ns)
    assert (row["sent"], row["delivered"], row["lost"], row["late"]) == (5, 3, 2, 0)
    assert row["series"]["send_s"] == [0.0, 0.016, 0.032, 0.048, 0.064]
    assert row["series"]["latency_ms"] == [2.0, None, 4.0, 3.0, None]
    assert row["latency_ms"] == {"p50": 3.0, "p90": 3.8, "p99": 3.98, "mean": 3.0, "max": 4.0}
    validate_result(_result([row]))


def test_row_with_nothing_delivered_has_a_null_summary() -> None:
    row = build_row("srt", "video", [0, 33 * MS], [None, None])
    assert (row["delivered"], row["lost"]) == (0, 2)
    assert row["latency_ms"] == dict.fromkeys(("p50", "p90", "p99", "mean", "max"))
    assert row["series"]["latency_ms"] == [None, None]
    validate_result(_result([row]))


def test_row_with_nothing_sent_is_empty_but_valid() -> None:
    row = build_row("srt", "video", [], [])
    assert (row["sent"], row["delivered"], row["series"]["send_s"]) == (0, 0, [])
    validate_result(_result([row]))


def test_row_rejects_timelines_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="2 send times but 1 latencies"):
        build_row("srt", "video", [0, 1], [None])


@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=200))
def test_percentiles_match_numpys_linear_method(values: list[float]) -> None:
    ordered = sorted(values)
    for q in (0.0, 0.5, 0.9, 0.99, 1.0):
        assert math.isclose(
            percentile(ordered, q), float(np.percentile(ordered, q * 100)), abs_tol=1e-9
        )


def test_summary_of_one_value_is_that_value() -> None:
    assert latency_summary([7.25]) == dict.fromkeys(("p50", "p90", "p99", "mean", "max"), 7.25)


@given(st.lists(st.tuples(st.integers(0, 10**6), st.none() | st.integers(0, 10**9)), max_size=300))
def test_any_timeline_makes_a_row_the_report_accepts(
    timeline: list[tuple[int, int | None]],
) -> None:
    send_ns, latency_ns = [], []
    at = 0
    for gap, latency in timeline:  # send times only move forward, as a sender's clock does
        at += gap
        send_ns.append(at)
        latency_ns.append(latency)
    row = build_row("aiortc", "reliable", send_ns, latency_ns)
    validate_result(_result([row]))
    assert row["delivered"] == sum(v is not None for v in row["series"]["latency_ms"])
    assert row["delivered"] + row["lost"] + row["late"] == row["sent"] == len(timeline)


# -- codecs and frame assembly ------------------------------------------------------------------


def test_message_stamp_round_trips_and_keeps_its_size() -> None:
    buffer = bytearray(200)
    data = encode_message(buffer, 41, 123_456_789_012)
    assert len(data) == 200
    assert decode_message(data) == (41, 123_456_789_012)


def test_chunk_header_round_trips() -> None:
    data = bytearray(1316)
    CHUNK_HEADER.pack_into(data, 0, CHUNK_MAGIC, 7, 12, 13, 99)
    assert decode_chunk(bytes(data)) == (7, 12, 13, 99)


@pytest.mark.parametrize(
    "data",
    [b"", b"FWam", b"XXXX" + bytes(20), "text, not bytes"],
    ids=["empty", "truncated", "wrong-magic", "str"],
)
def test_message_decoder_refuses_garbage(data: bytes | str) -> None:
    assert decode_message(data) is None


def test_chunk_decoder_refuses_garbage_and_impossible_indexes() -> None:
    assert decode_chunk(b"") is None
    assert decode_chunk(CHUNK_MAGIC) is None
    assert decode_chunk(CHUNK_HEADER.pack(b"nope", 0, 0, 1, 0)) is None
    assert decode_chunk(CHUNK_HEADER.pack(CHUNK_MAGIC, 0, 3, 3, 0)) is None  # index >= count


@given(st.binary(max_size=64))
def test_decoders_return_none_or_a_stamp_for_any_bytes(data: bytes) -> None:
    assert decode_message(data) is None or len(decode_message(data) or ()) == 2
    chunk = decode_chunk(data)
    assert chunk is None or chunk[1] < chunk[2]


def test_frame_latency_runs_from_first_send_to_completing_arrival() -> None:
    frames = FrameAssembly(3)
    # Frame 0: chunks arrive out of order; the last arrival completes it.
    frames.add(0, 1, 3, 101 * MS, 140 * MS)
    frames.add(0, 0, 3, 100 * MS, 130 * MS)
    frames.add(0, 2, 3, 102 * MS, 150 * MS)
    # Frame 1: one chunk never arrives.
    frames.add(1, 0, 2, 200 * MS, 230 * MS)
    # Frame 2: a duplicate does not complete a frame twice.
    frames.add(2, 0, 2, 300 * MS, 320 * MS)
    frames.add(2, 0, 2, 300 * MS, 321 * MS)
    frames.add(2, 1, 2, 301 * MS, 325 * MS)
    assert frames.complete == 2
    assert frames.latency_ns() == [50 * MS, None, 25 * MS]


def test_frame_assembly_ignores_warmup_unknown_and_inconsistent_chunks() -> None:
    frames = FrameAssembly(1)
    frames.add(WARMUP_FRAME, 0, 1, 0, 1)
    frames.add(5, 0, 1, 0, 1)
    frames.add(0, 0, 2, 10, 20)
    frames.add(0, 1, 3, 11, 21)  # disagrees on the chunk count
    frames.add(0, 1, 2, 30, 29)  # arrives before it was sent: not a real stamp
    assert (frames.complete, frames.latency_ns()) == (0, [None])
    frames.add(0, 1, 2, 11, 40)
    assert (frames.complete, frames.latency_ns()) == (1, [30])


# -- SDP and URIs -------------------------------------------------------------------------------

ANSWER = "\r\n".join(
    [
        "v=0",
        "o=- 3942000000 3942000000 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=application 50288 DTLS/SCTP 5000",
        "c=IN IP4 127.0.0.1",
        "a=mid:0",
        "a=sctpmap:5000 webrtc-datachannel 65535",
        "a=candidate:7f1c3a0e 1 udp 2130706431 127.0.0.1 50288 typ host",
        "a=end-of-candidates",
        "a=ice-ufrag:Ab3x",
        "a=ice-pwd:0123456789abcdefghijkl",
        "a=setup:active",
        "",
    ]
)


def test_candidates_are_read_stripped_and_routed() -> None:
    assert candidate_addresses(ANSWER) == [("127.0.0.1", 50288)]
    stripped = strip_candidates(ANSWER)
    assert "a=candidate" not in stripped and "a=end-of-candidates" not in stripped
    assert "a=ice-ufrag:Ab3x\r\n" in stripped and stripped.endswith("\r\n")
    routed = route_candidates(ANSWER, ("127.0.0.1", 40001))
    assert candidate_addresses(routed) == [("127.0.0.1", 40001)]
    assert "a=candidate:7f1c3a0e 1 udp 2130706431 127.0.0.1 40001 typ host\r\n" in routed
    assert routed.replace("40001 typ", "50288 typ") == ANSWER


def test_srt_uris_stay_on_loopback_and_name_their_mode() -> None:
    assert srt_caller_uri(("127.0.0.1", 4000), 120) == (
        "srt://127.0.0.1:4000?mode=caller&adapter=127.0.0.1&latency=120&transtype=live"
    )
    assert srt_listener_uri(4001, 20) == (
        "srt://127.0.0.1:4001?mode=listener&latency=20&transtype=live"
    )
    assert udp_input_uri(4002) == "udp://127.0.0.1:4002"
    assert udp_output_uri(4003) == "udp://127.0.0.1:4003?adapter=127.0.0.1"
    with pytest.raises(ValueError, match="latency_ms"):
        srt_listener_uri(4001, -1)


# -- relay proof, configuration, installation ---------------------------------------------------


def _summary(forward: int, reverse: int) -> dict[str, Any]:
    return {"forward": {"received": forward, "sent": forward}, "reverse": {"received": reverse}}


def test_relay_proof_needs_the_traffic_and_answers() -> None:
    check_relay_carried(_summary(950, 10), expected_forward=1000, what="x")
    with pytest.raises(AnchorUnavailable, match="did not cross the relay"):
        check_relay_carried(_summary(100, 10), expected_forward=1000, what="x")
    with pytest.raises(AnchorUnavailable, match="did not cross the relay"):
        check_relay_carried(_summary(1000, 0), expected_forward=1000, what="x")
    with pytest.raises(AnchorUnavailable, match="no traffic counters"):
        check_relay_carried({}, expected_forward=1, what="x")
    assert relay_line(_summary(5, 3)) == "relay: forward 5 in, 5 out; reverse 3 in, ? out"


def test_workloads_and_timing_validate() -> None:
    assert VideoWorkload().chunks_per_frame == 13  # 13 x 1316 B x 30/s = 4.1 Mbit/s
    for bad in (
        lambda: VideoWorkload(fps=0),
        lambda: VideoWorkload(chunk_bytes=1500),
        lambda: MessageWorkload(message_bytes=4),
        lambda: MessageWorkload(rate_hz=-1),
        lambda: AnchorTiming(drain_s=0),
    ):
        with pytest.raises(ValueError):
            bad()


def test_anchor_unavailable_is_a_bench_error() -> None:
    assert issubclass(AnchorUnavailable, BenchError)


def test_missing_aiortc_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anchors, "_can_import", lambda name: False)
    said: list[str] = []
    with pytest.raises(AnchorUnavailable) as caught:
        ensure_installed("aiortc", install=False, say=said.append)
    message = str(caught.value)
    assert "\n" not in message and said == []
    assert "-m pip install 'aiortc>=1.16,<2'" in message
    av = anchors._installed_version("av")
    assert av is None or f"av=={av}" in message  # PyAV is held where it is


def test_missing_srt_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(AnchorUnavailable, match=r"install it with: apt-get install -y srt-tools$"):
        ensure_installed("srt", install=False, say=lambda _: None)


def test_unknown_anchor_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="unknown anchor"):
        ensure_installed("webrtc", install=False, say=lambda _: None)


def test_runners_refuse_bad_arguments_before_starting_anything() -> None:
    with pytest.raises(ValueError, match="duration_s"):
        run_aiortc((), seed=1, duration_s=0, say=lambda _: None)
    with pytest.raises(ValueError, match="duration_s"):
        run_srt((), seed=1, duration_s=-1, latency_ms=20, say=lambda _: None)
    with pytest.raises(ValueError, match="latency_ms"):
        run_srt((), seed=1, duration_s=1, latency_ms=-5, say=lambda _: None)


# -- the real anchors, through the real relay ---------------------------------------------------

IMPAIRMENT = ("--delay-ms", "5", "--loss-pct", "1")


def _require(system: str) -> None:
    try:
        ensure_installed(system, install=False, say=lambda _: None)
    except AnchorUnavailable as exc:
        pytest.skip(f"the {system} anchor is not installed ({exc})")


@pytest.mark.loopback
@pytest.mark.timeout(90)
def test_aiortc_data_channels_through_the_relay() -> None:
    _require("aiortc")
    ice = importlib.import_module("aioice.ice")
    original = ice.get_host_addresses
    rows = run_aiortc(IMPAIRMENT, seed=3, duration_s=3.0, say=lambda _: None)
    assert ice.get_host_addresses is original  # the loopback-only gathering was undone
    validate_result(_result(rows))
    by_workload = {row["workload"]: row for row in rows}
    assert sorted(by_workload) == ["reliable", "unreliable"]
    for row in rows:
        assert row["system"] == "aiortc"
        assert row["sent"] == 180  # 3 s at 60 Hz
        assert row["delivered"] >= 0.9 * row["sent"]
        # The relay's 5 ms one-way delay is in every latency: the path really crosses it.
        assert row["latency_ms"]["p50"] >= 5.0
    assert by_workload["reliable"]["delivered"] >= 0.98 * by_workload["reliable"]["sent"]


@pytest.mark.loopback
@pytest.mark.timeout(90)
def test_srt_video_through_the_relay() -> None:
    _require("srt")
    said: list[str] = []
    rows = run_srt(IMPAIRMENT, seed=3, duration_s=3.0, latency_ms=40, say=said.append)
    validate_result(_result(rows))
    (row,) = rows
    assert (row["system"], row["workload"], row["sent"]) == ("srt", "video", 90)
    assert row["delivered"] >= 0.9 * row["sent"]
    # SRT holds each packet for its configured latency, on top of the relay's delay.
    assert row["latency_ms"]["p50"] >= 40.0 + 5.0
    assert any(line.startswith("srt: relay: forward") for line in said)
