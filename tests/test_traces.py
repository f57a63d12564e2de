"""Recorded link-trace readers (bench.traces): exact parses, errors, detection, real files.

The small-file tests write hand-made traces into ``tmp_path`` and check every field of the
loaded :class:`Trace`. The real-trace tests read the third-party data in ``../shared/traces``
(never copied into the repository) and skip when it is absent.
"""

from __future__ import annotations

import itertools
import os
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.errors import BenchError
from bench.traces import (
    FORMATS,
    Trace,
    TraceError,
    clear_trace_cache,
    default_traces_dir,
    load_trace,
    shared_traces,
)

ROOT = Path(__file__).resolve().parent.parent
SHARED_TRACES = ROOT.parent / "shared" / "traces"

GNETTRACK_HEADER = (
    "Timestamp,Longitude,Latitude,Speed,Operatorname,CellID,NetworkMode,RSRP,RSRQ,SNR,CQI,"
    "RSSI,DL_bitrate,UL_bitrate,State,PINGAVG,PINGMIN,PINGMAX,PINGSTDEV,PINGLOSS,CELLHEX,"
    "NODEHEX,LACHEX,RAWCELLID,NRxRSRP,NRxRSRQ"
)


def _write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def _gnettrack_row(stamp: str, dl: str, ul: str = "1") -> str:
    return (
        f"{stamp},-8.38,51.93,0,B,12,5G,-99,-15,6.0,12,-90,{dl},{ul},D,-,-,-,-,-,"
        "C,A81B,9CBA,11016972,-100.0,-15.0"
    )


def _raises_at(path: Path, line: int, reason: str, **kwargs: str) -> None:
    """load_trace fails with a one-line message naming the file, the line and the reason."""
    with pytest.raises(TraceError) as info:
        load_trace(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert re.search(rf"{re.escape(path.name)}:{line}: .*{reason}", message), message


def _time_weighted_mean(times: tuple[float, ...], values: tuple[float, ...], end: float) -> float:
    """Mean of a piecewise-constant schedule held forward, over ``[times[0], end)``."""
    edges = (*times, end)
    total = sum(v * (b - a) for (a, b), v in zip(itertools.pairwise(edges), values, strict=True))
    return total / (end - times[0])


# --- exact parses of hand-written files ------------------------------------------------------


def test_mahimahi_exact(tmp_path: Path) -> None:
    path = _write(tmp_path, "link.down", "0\n0\n5\n1000\n")
    trace = load_trace(path)
    assert trace == Trace(
        name="link.down",
        format="mahimahi",
        kind="opportunities",
        times_s=(0.0, 0.0, 0.005, 1.0),
        values=(1500.0, 1500.0, 1500.0, 1500.0),
        period_s=1.0,
    )


def test_mahimahi_late_start_and_untidy_lines_parse_like_clean_ones(tmp_path: Path) -> None:
    # CRLF, blank lines and no final newline take the checked path; same result as clean.
    clean = load_trace(_write(tmp_path, "clean.up", "831\n880\n880\n2000\n"))
    untidy = load_trace(_write(tmp_path, "untidy.up", "831\r\n\n880\r\n 880 \n\n2000"))
    assert clean.times_s == untidy.times_s == (0.831, 0.88, 0.88, 2.0)
    assert clean.period_s == untidy.period_s == 2.0


def test_cooked_exact_shifts_to_zero_and_holds_forward(tmp_path: Path) -> None:
    path = _write(tmp_path, "oboe_like.txt", "0.5\t1.0\n1.5\t2.5\n3.5\t0\n")
    trace = load_trace(path)
    assert trace == Trace(
        name="oboe_like.txt",
        format="cooked",
        kind="rate",
        times_s=(0.0, 1.0, 3.0),
        values=(1e6, 2.5e6, 0.0),
        # last time 3.0 + median spacing of (1.0, 2.0)
        period_s=4.5,
    )


def test_gnettrack_exact_skips_blank_rates_and_keeps_last_of_a_repeated_second(
    tmp_path: Path,
) -> None:
    rows = [
        _gnettrack_row("2020.01.01_23.59.58", "100", "10"),
        _gnettrack_row("2020.01.01_23.59.59", "-", "-"),
        _gnettrack_row("2020.01.02_00.00.00", "200", "20"),
        _gnettrack_row("2020.01.02_00.00.00", "300", "30"),
        _gnettrack_row("2020.01.02_00.00.03", "", ""),
        _gnettrack_row("2020.01.02_00.00.04", "50", "5"),
    ]
    path = _write(tmp_path, "drive.csv", "\n".join([GNETTRACK_HEADER, *rows]) + "\n")
    down = load_trace(path)
    assert down == Trace(
        name="drive.csv",
        format="g-nettrack",
        kind="rate",
        times_s=(0.0, 2.0, 6.0),
        values=(100_000.0, 300_000.0, 50_000.0),
        period_s=7.0,
    )
    up = load_trace(path, direction="up")
    assert up.times_s == down.times_s
    assert up.values == (10_000.0, 30_000.0, 5_000.0)


def test_gnettrack_columns_are_found_by_name(tmp_path: Path) -> None:
    content = "Timestamp,UL_bitrate,State,DL_bitrate\n2019.12.14_10.16.30,1,D,7\n"
    trace = load_trace(_write(tmp_path, "short.csv", content))
    assert trace.values == (7000.0,)
    assert trace.period_s == 1.0


def test_gnettrack_times_count_from_the_first_row_even_without_a_rate(tmp_path: Path) -> None:
    rows = [_gnettrack_row("2020.01.01_10.00.00", "-"), _gnettrack_row("2020.01.01_10.00.02", "8")]
    trace = load_trace(_write(tmp_path, "late.csv", "\n".join([GNETTRACK_HEADER, *rows])))
    assert trace.times_s == (2.0,)
    assert trace.period_s == 3.0


def test_flent_exact(tmp_path: Path) -> None:
    content = "seq,t_rel_s,rtt_ms\n0,0.0,20.0\n1,0.25,40.0\n3,0.75,10.0\n"
    trace = load_trace(_write(tmp_path, "ping.csv", content))
    assert trace == Trace(
        name="ping.csv",
        format="flent-ping-csv",
        kind="delay",
        times_s=(0.0, 0.25, 0.75),
        values=(20.0 / 2 / 1000, 40.0 / 2 / 1000, 10.0 / 2 / 1000),
        # last time 0.75 + median spacing of (0.25, 0.5)
        period_s=1.125,
    )


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        ("0\n5\nabc\n", 3, "expected one integer"),
        ("0\n5\n1.5\n", 3, "expected one integer"),
        ("0\n10\n5\n", 3, "time decreases"),
        ("0\n-5\n", 2, "negative timestamp"),
        ("0\n0\n", 2, "period .*would be 0"),
        ("0\n", 1, "period .*would be 0"),
        ("0\n99999999999999999999\n", 2, "out of range"),
    ],
)
def test_mahimahi_errors(tmp_path: Path, content: str, line: int, reason: str) -> None:
    _raises_at(_write(tmp_path, "bad.down", content), line, reason)


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        ("0\t1\n1\tfoo\n", 2, "rate is not a number"),
        ("0\t1\n1\t2\t3\n", 2, "found 3 field"),
        ("0\t1\n1\t2\n0.5\t2\n", 3, "time decreases"),
        ("0\t1\n1\t-2\n", 2, "negative rate"),
        ("0\t1\n1\tnan\n", 2, "rate is not finite"),
        ("0\t1\n", 1, "single sample"),
        ("2\t1\n2\t3\n", 2, "period would be 0"),
    ],
)
def test_cooked_errors(tmp_path: Path, content: str, line: int, reason: str) -> None:
    _raises_at(_write(tmp_path, "bad_cooked", content), line, reason)


@pytest.mark.parametrize(
    ("rows", "line", "reason"),
    [
        (["2020.01.01_10.00.00,1,2", "2020.13.01_10.00.01,1,2"], 3, "not YYYY.MM.DD_hh.mm.ss"),
        (["2020.01.01_10.00.05,1,2", "2020.01.01_10.00.04,1,2"], 3, "time decreases"),
        (["2020.01.01_10.00.00,1,2", "2020.01.01_10.00.01,-3,2"], 3, "negative DL_bitrate"),
        (["2020.01.01_10.00.00,fast,2"], 2, "DL_bitrate is not a number"),
        (["2020.01.01_10.00.00"], 2, "row has 1 column"),
        (["2020.01.01_10.00.00,-,2", "2020.01.01_10.00.01,,2"], 3, "no row has a DL_bitrate"),
        ([], 1, "no row has a DL_bitrate"),
    ],
)
def test_gnettrack_errors(tmp_path: Path, rows: list[str], line: int, reason: str) -> None:
    content = "\n".join(["Timestamp,DL_bitrate,UL_bitrate", *rows]) + "\n"
    _raises_at(_write(tmp_path, "bad.csv", content), line, reason)


def test_gnettrack_missing_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "nodl.csv", "Timestamp,UL_bitrate\n2020.01.01_10.00.00,1\n")
    _raises_at(path, 1, "no 'DL_bitrate' column")
    assert load_trace(path, direction="up").values == (1000.0,)


def test_gnettrack_lone_carriage_returns_end_lines(tmp_path: Path) -> None:
    content = "Timestamp,DL_bitrate\r2020.01.01_10.00.00,5\r2020.01.01_10.00.01,6\r"
    assert load_trace(_write(tmp_path, "old_mac.csv", content)).values == (5000.0, 6000.0)


def test_gnettrack_oversize_cell(tmp_path: Path) -> None:
    content = "Timestamp,DL_bitrate\n" + "9" * 200_000 + ",1\n"
    _raises_at(_write(tmp_path, "huge.csv", content), 2, "bad CSV: field larger")


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        ("seq,t_rel_s,rtt_ms\n", 2, "empty trace"),
        ("seq,t_rel_s,rtt_ms\n0,0.0,20\n1,0.2,-1\n", 3, "negative rtt_ms"),
        ("seq,t_rel_s,rtt_ms\n0,0.5,20\n1,0.2,10\n", 3, "time decreases"),
        ("seq,t_rel_s,rtt_ms\n0,0.0,20\n1,0.2\n", 3, "row has 2 column"),
    ],
)
def test_flent_errors(tmp_path: Path, content: str, line: int, reason: str) -> None:
    _raises_at(_write(tmp_path, "bad_ping.csv", content), line, reason)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    _raises_at(_write(tmp_path, "empty", content), 1, "empty trace")


def test_unknown_content_names_the_first_non_blank_line(tmp_path: Path) -> None:
    _raises_at(_write(tmp_path, "mystery", "\n\nhello trace world\n"), 3, "cannot tell")


def test_not_utf8(tmp_path: Path) -> None:
    path = _write(tmp_path, "binary.csv", b"seq,t_rel_s,rtt_ms\n0,0,\xff\n")
    _raises_at(path, 2, "not UTF-8")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match=r"nothere\.down: cannot read trace"):
        load_trace(tmp_path / "nothere.down")
    with pytest.raises(TraceError, match="cannot read trace"):
        load_trace(tmp_path)


def test_unknown_format_and_bad_direction(tmp_path: Path) -> None:
    path = _write(tmp_path, "ok.down", "1\n2\n")
    with pytest.raises(TraceError, match="unknown trace format 'pcap'"):
        load_trace(path, format="pcap")
    with pytest.raises(ValueError, match="direction"):
        load_trace(path, direction="sideways")  # type: ignore[arg-type]


def test_trace_error_is_a_bench_error() -> None:
    assert issubclass(TraceError, BenchError)


def test_trace_checks_its_invariants() -> None:
    with pytest.raises(ValueError, match="same length"):
        Trace(name="x", format="cooked", kind="rate", times_s=(0.0,), values=(), period_s=1.0)
    with pytest.raises(ValueError, match="period_s"):
        Trace(name="x", format="cooked", kind="rate", times_s=(0.0, 2.0), values=(1, 2), period_s=1)
    with pytest.raises(ValueError, match="start at or after 0"):
        Trace(name="x", format="cooked", kind="rate", times_s=(-1.0,), values=(1,), period_s=1)


# --- format detection and caching ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("seq,t_rel_s,rtt_ms\n0,0.0,20\n1,0.2,30\n", "flent-ping-csv"),
        ("Timestamp,DL_bitrate,UL_bitrate\n2020.01.01_10.00.00,5,1\n", "g-nettrack"),
        ("\n12\n15\n", "mahimahi"),
        ("0.0\t1.5\n1.0\t2.5\n", "cooked"),
        ("0 1e-3\n1 2\n", "cooked"),
    ],
)
def test_format_detection_from_content(tmp_path: Path, content: str, expected: str) -> None:
    assert load_trace(_write(tmp_path, "unknown_kind", content)).format == expected


def test_index_decides_the_format_and_the_name(tmp_path: Path) -> None:
    # The header does not start with "Timestamp,", so content detection would fail: the
    # INDEX.tsv row is what makes this a g-nettrack log.
    traces = tmp_path / "traces"
    content = "UL_bitrate,Timestamp,DL_bitrate\n1,2020.01.01_10.00.00,5\n"
    path = _write(traces, "set/log.csv", content)
    _write(traces, "INDEX.tsv", _index_text([("set/log.csv", "g-nettrack", "1", "1.0", "")]))
    trace = load_trace(path)
    assert (trace.name, trace.format, trace.values) == ("set/log.csv", "g-nettrack", (5000.0,))
    # Not listed in the index: content decides, and the name is still relative to the dir.
    other = load_trace(_write(traces, "set/extra.down", "3\n4\n"))
    assert (other.name, other.format) == ("set/extra.down", "mahimahi")


def test_index_with_unknown_format(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.bin", "1\n2\n")
    _write(tmp_path, "INDEX.tsv", _index_text([("a.bin", "pcap", "2", "0.002", "")]))
    with pytest.raises(TraceError, match=r"INDEX\.tsv gives unknown trace format 'pcap'"):
        load_trace(path)
    assert load_trace(path, format="mahimahi").period_s == 0.002


def test_loads_are_cached_until_the_file_changes(tmp_path: Path) -> None:
    path = _write(tmp_path, "cached.down", "1\n2\n")
    first = load_trace(path)
    assert load_trace(str(path)) is first
    path.write_text("1\n2\n3\n")
    later = time.time() + 5
    os.utime(path, (later, later))
    assert load_trace(path).times_s == (0.001, 0.002, 0.003)


# --- the catalogue ---------------------------------------------------------------------------


def _index_text(rows: list[tuple[str, str, str, str, str]]) -> str:
    header = (
        "file\torigin_repo\torigin_commit\torigin_path\tlicence\tformat\tsamples\tduration_s"
        "\tmean_Mbps\tbytes\tsha256\tdescription"
    )
    lines = [header]
    for name, fmt, samples, duration, mean in rows:
        lines.append(
            f"{name}\to/r\tc0\tp\tMIT\t{fmt}\t{samples}\t{duration}\t{mean}\t1\tff\td {name}"
        )
    return "\n".join(lines) + "\n"


def test_shared_traces_reads_the_index(tmp_path: Path) -> None:
    rows = [("b/two", "cooked", "3", "10.5", "1.25"), ("a/one", "mahimahi", "4", "2.0", "")]
    _write(tmp_path, "INDEX.tsv", _index_text(rows))
    entries = shared_traces(tmp_path)
    assert [e.name for e in entries] == ["a/one", "b/two"]
    one, two = entries
    assert one.path == tmp_path / "a" / "one"
    assert (one.format, one.samples, one.duration_s, one.mean_mbps) == ("mahimahi", 4, 2.0, None)
    assert (two.mean_mbps, two.licence, two.description) == (1.25, "MIT", "d b/two")


def test_shared_traces_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="traces directory is missing"):
        shared_traces(tmp_path / "absent")
    with pytest.raises(TraceError, match=r"has no INDEX\.tsv"):
        shared_traces(tmp_path)
    _write(tmp_path, "INDEX.tsv", _index_text([("x", "cooked", "many", "1", "")]))
    with pytest.raises(TraceError, match=r"INDEX.tsv:2: bad samples"):
        shared_traces(tmp_path)


def test_default_traces_dir_prefers_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAMEWIRE_TRACES", str(tmp_path / "not-yet"))
    assert default_traces_dir() == tmp_path / "not-yet"
    monkeypatch.delenv("FRAMEWIRE_TRACES")
    found = default_traces_dir()
    assert found is None or found.is_dir()
    if SHARED_TRACES.is_dir():
        assert found == SHARED_TRACES


# --- properties ------------------------------------------------------------------------------

_counter = itertools.count()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Callable[[bytes], Path]:
    """Write one example to a fresh file (module scope, so Hypothesis can share it)."""
    directory = tmp_path_factory.mktemp("trace-examples")

    def write(content: bytes) -> Path:
        # A fresh name per example: a file rewritten within one timer tick and at the same
        # size would keep its cache key.
        return _write(directory, f"case{next(_counter)}", content)

    return write


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 10**7), min_size=1, max_size=200), st.booleans())
def test_mahimahi_property_fast_and_checked_paths_agree(
    scratch: Callable[[bytes], Path], stamps: list[int], crlf: bool
) -> None:
    stamps.sort()
    newline = "\r\n" if crlf else "\n"  # CRLF forces the line-by-line path
    content = newline.join(map(str, stamps)).encode()
    if stamps[-1] == 0:
        with pytest.raises(TraceError, match="would be 0"):
            load_trace(scratch(content), format="mahimahi")
        return
    trace = load_trace(scratch(content), format="mahimahi")
    assert trace.times_s == tuple(ms / 1000 for ms in stamps)
    assert trace.period_s == stamps[-1] / 1000


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.sampled_from((None, *FORMATS)))
def test_garbage_loads_or_raises_trace_error(
    scratch: Callable[[bytes], Path], content: bytes, fmt: str | None
) -> None:
    try:
        trace = load_trace(scratch(content), format=fmt)
    except TraceError:
        return
    assert all(b >= a for a, b in itertools.pairwise(trace.times_s))
    assert all(v >= 0 for v in trace.values)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("0123456789.-\t ,e\n"), st.integers(1, 4)),
        max_size=60,
    ).map(lambda parts: "".join(ch * n for ch, n in parts)),
    st.sampled_from(("", "seq,t_rel_s,rtt_ms\n", "Timestamp,DL_bitrate,UL_bitrate\n")),
)
def test_numberish_garbage_loads_or_raises_trace_error(
    scratch: Callable[[bytes], Path], body: str, header: str
) -> None:
    # Random bytes rarely look like a trace; this mixes the characters traces are made of.
    try:
        trace = load_trace(scratch((header + body).encode()))
    except TraceError:
        return
    assert trace.period_s > 0
    assert trace.period_s >= trace.times_s[-1]


# --- the real traces in ../shared/traces -----------------------------------------------------


@pytest.fixture(scope="module")
def traces_dir() -> Path:
    if not SHARED_TRACES.is_dir():
        pytest.skip(f"shared traces not found at {SHARED_TRACES} (they are never in the repo)")
    return SHARED_TRACES


def _entry(traces_dir: Path, name: str) -> tuple[Trace, float | None, int, float]:
    entry = {e.name: e for e in shared_traces(traces_dir)}[name]
    return load_trace(entry.path), entry.mean_mbps, entry.samples, entry.duration_s


def test_shared_traces_lists_every_file(traces_dir: Path) -> None:
    entries = shared_traces(traces_dir)
    assert len(entries) == 636
    assert [e.name for e in entries] == sorted({e.name for e in entries})
    assert all(e.path.is_file() for e in entries)


def test_real_mahimahi_mean_capacity_matches_the_index(traces_dir: Path) -> None:
    trace, mean_mbps, samples, duration_s = _entry(traces_dir, "mahimahi/ATT-LTE-driving.up")
    assert (trace.kind, len(trace.times_s), mean_mbps) == ("opportunities", samples, 0.834)
    assert trace.times_s[0] == 0.831  # uplink files start late (README)
    assert trace.period_s == pytest.approx(duration_s, abs=0.05)
    # README: mean capacity = lines x 1500 x 8 / duration.
    derived_mbps = len(trace.times_s) * 1500 * 8 / trace.period_s / 1e6
    assert derived_mbps == pytest.approx(mean_mbps, rel=0.05)


@pytest.mark.parametrize("name", ["hsdpa_norway/norway_bus_1", "oboe/oboe_trace_0.txt"])
def test_real_cooked_time_weighted_mean_matches_the_index(traces_dir: Path, name: str) -> None:
    trace, mean_mbps, samples, duration_s = _entry(traces_dir, name)
    assert mean_mbps is not None
    assert (trace.kind, len(trace.times_s), trace.times_s[0]) == ("rate", samples, 0.0)
    assert trace.times_s[-1] == pytest.approx(duration_s, abs=0.05)
    # README: the INDEX mean holds each value until the next sample, over first..last sample,
    # which is our schedule without the last value's extra interval, so it matches closely.
    assert _time_weighted_mean(
        trace.times_s, trace.values, trace.times_s[-1]
    ) / 1e6 == pytest.approx(mean_mbps, rel=0.01)
    # Over the whole loop period the last value also counts for one median spacing.
    assert _time_weighted_mean(trace.times_s, trace.values, trace.period_s) / 1e6 == (
        pytest.approx(mean_mbps, rel=0.25)
    )


def test_real_gnettrack_loads_with_a_plausible_mean(traces_dir: Path) -> None:
    trace, mean_mbps, rows, duration_s = _entry(
        traces_dir, "5g_ireland/driving/B_2019.12.16_07.22.43.csv"
    )
    assert mean_mbps is not None
    assert trace.kind == "rate"
    assert len(trace.times_s) < rows  # repeated seconds collapse to one sample
    assert trace.period_s == duration_s + 1.0
    # The INDEX mean is over all rows, counting repeated seconds twice, and those cluster in
    # stalls (e.g. two rows of 2 kbit/s), so it sits 5-12% below the time-weighted mean on
    # every log; only a loose match is meaningful.
    derived = _time_weighted_mean(trace.times_s, trace.values, trace.period_s) / 1e6
    assert derived == pytest.approx(mean_mbps, rel=0.15)


def test_real_flent_delay_matches_the_readme(traces_dir: Path) -> None:
    trace, _, samples, duration_s = _entry(
        traces_dir, "wifi_flent/wifi_iwlwifi_ping_under_tcp_upload.csv"
    )
    assert (trace.kind, len(trace.times_s)) == ("delay", samples)
    assert trace.times_s[-1] == pytest.approx(duration_s, abs=0.05)
    # README: mean RTT = 94.8 ms, min 22.6, max 194.0; a delay value is half an RTT in s.
    assert statistics.mean(trace.values) * 2 * 1000 == pytest.approx(94.8, abs=0.05)
    assert (min(trace.values), max(trace.values)) == (22.6 / 2 / 1000, 194.0 / 2 / 1000)


def test_every_indexed_trace_loads(traces_dir: Path) -> None:
    # About 0.6 s for all 636 files, so not marked slow.
    for entry in shared_traces(traces_dir):
        trace = load_trace(entry.path)
        assert (trace.name, trace.format) == (entry.name, entry.format)
        assert trace.period_s >= trace.times_s[-1] >= trace.times_s[0] >= 0
        if entry.format == "g-nettrack":
            assert len(trace.times_s) <= entry.samples
        else:
            assert len(trace.times_s) == entry.samples, entry.name


def test_biggest_mahimahi_file_loads_fast(traces_dir: Path) -> None:
    path = traces_dir / "mahimahi" / "TMobile-LTE-driving.down"
    clear_trace_cache()
    started = time.perf_counter()
    trace = load_trace(path)
    elapsed = time.perf_counter() - started
    assert len(trace.times_s) == 505078
    # About 0.04 s here (numpy path; the line-by-line path takes 0.2 s). The bound is loose
    # so a busy machine does not fail it; it catches a return to per-line regex speeds.
    assert elapsed < 2.0
