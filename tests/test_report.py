"""Scenario reports: written files, JSON round trip, the Markdown table, result validation."""

from __future__ import annotations

import copy
import json
import math
import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from bench import report
from bench.errors import BenchError
from bench.report import (
    ReportConfig,
    safe_name,
    summary_table,
    validate_result,
    write_scenario,
    write_summary,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRACE = "trace/mahimahi/ATT-LTE-driving.down"
Result = dict[str, Any]


def make_row(
    system: str,
    workload: str,
    latencies: Sequence[float | None],
    *,
    late: int = 0,
    period_s: float = 0.01,
) -> dict[str, Any]:
    """A row whose counts and nearest-rank summary agree with ``latencies``."""
    values = sorted(v for v in latencies if v is not None)

    def rank(q: float) -> float | None:
        return values[max(0, math.ceil(q * len(values)) - 1)] if values else None

    return {
        "system": system,
        "workload": workload,
        "sent": len(latencies),
        "delivered": len(values),
        "lost": len(latencies) - len(values) - late,
        "late": late,
        "latency_ms": {
            "p50": rank(0.5),
            "p90": rank(0.9),
            "p99": rank(0.99),
            "mean": statistics.fmean(values) if values else None,
            "max": values[-1] if values else None,
        },
        "series": {
            "send_s": [round(i * period_s, 6) for i in range(len(latencies))],
            "latency_ms": list(latencies),
        },
    }


def make_result(scenario: str, rows: list[dict[str, Any]], **extra: Any) -> Result:
    return {
        "scenario": scenario,
        "version": 2,
        "description": "2 ms base delay, 40 ms stalls about once a second",
        "driver": "sim",
        "seed": 7,
        "duration_s": 20.0,
        "rows": rows,
        **extra,
    }


def small_rows() -> list[dict[str, Any]]:
    """raw-udp p50 2.0 and framewire p50 2.5 on one workload; a workload without baseline."""
    return [
        make_row("raw-udp", "unreliable", [2.0] * 38 + [None, 45.0]),
        # Lossy, with one message reported late: 36 delivered of 40.
        make_row("framewire", "unreliable", [2.5] * 35 + [None, None, None, None, 41.0], late=1),
        make_row("framewire", "reliable", [30.0] * 39 + [120.0]),
        make_row("aiortc", "video", [None] * 40),  # nothing delivered
    ]


def long_row() -> dict[str, Any]:
    """50k messages: 2 ms base, a 40 ms stall every 2500 messages, 1% lost in bursts."""
    latencies: list[float | None] = []
    for i in range(50_000):
        if i % 1000 < 10:
            latencies.append(None)
        elif i % 2500 < 20:
            latencies.append(40.0 - 2 * (i % 2500))
        else:
            latencies.append(2.0 + (i % 7) * 0.01)
    return make_row("srt", "unreliable", latencies, period_s=0.0004)


@pytest.fixture(scope="module")
def trace_result() -> Result:
    return make_result(
        TRACE,
        [*small_rows(), long_row()],
        notes=["aiortc not installed: pass --compare aiortc to install it"],
    )


@pytest.fixture(scope="module")
def written(trace_result: Result, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_scenario(trace_result, tmp_path_factory.mktemp("report"))


def test_safe_name() -> None:
    assert safe_name("wifi-spikes") == "wifi-spikes"
    assert safe_name("lossy-5") == "lossy-5"
    assert safe_name(TRACE) == "trace__mahimahi__ATT-LTE-driving.down"
    # Never hidden, never a path component, never a shell or Markdown special character.
    assert safe_name("../a b(c)") == "_.__a_b_c_"
    with pytest.raises(BenchError):
        safe_name("")


def test_writes_json_and_two_pngs_named_after_the_scenario(written: list[Path]) -> None:
    stem = "trace__mahimahi__ATT-LTE-driving.down"
    assert [p.name for p in written] == [f"{stem}.json", f"{stem}-cdf.png", f"{stem}-timeline.png"]
    assert all(p.parent == written[0].parent for p in written)
    for png in written[1:]:
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC
        assert len(data) > 20_000  # axes, text and curves, not a blank canvas
    cdf = imread(written[1])
    assert cdf.shape[:2] == (550, 990)  # 9 x 5 in at 110 dpi
    timeline = imread(written[2])
    # Three workloads stacked: wider than tall is no longer possible, width stays fixed.
    assert timeline.shape[1] == 990 and timeline.shape[0] > 550
    # Not a single colour: something was drawn.
    assert float(np.ptp(cdf[..., :3])) > 0.5 and float(np.ptp(timeline[..., :3])) > 0.5


def test_json_round_trips_to_the_input(written: list[Path], trace_result: Result) -> None:
    text = written[0].read_text(encoding="utf-8")
    loaded = json.loads(text)
    assert loaded == trace_result
    assert list(loaded) == sorted(loaded)
    # Series stay one line each: a 50k-entry list does not become 50k lines.
    assert len(text.splitlines()) < 200


def test_json_is_deterministic_whatever_the_key_order(tmp_path: Path) -> None:
    result = make_result("lossy-5", small_rows())
    reordered = {k: result[k] for k in reversed(result)}
    reordered["rows"] = [{k: row[k] for k in reversed(row)} for row in result["rows"]]
    first = write_scenario(result, tmp_path / "a")[0].read_bytes()
    second = write_scenario(reordered, tmp_path / "b")[0].read_bytes()
    assert first == second


def test_a_result_without_rows_still_plots(tmp_path: Path) -> None:
    paths = write_scenario(make_result("empty", []), tmp_path)
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in paths[1:])


def table_cells(lines: list[str]) -> dict[tuple[str, str], list[str]]:
    rows = [line.strip("|").split("|") for line in lines if line.startswith("| ")][1:]
    return {(cells[0].strip(), cells[1].strip()): [c.strip() for c in cells] for cells in rows}


def test_summary_table_rows_and_ratio_column() -> None:
    result = make_result("wifi-spikes", small_rows(), notes=["one", "two"])
    lines = summary_table([result])
    assert lines[0] == "### wifi-spikes (v2, sim, seed 7)"
    assert result["description"] in lines
    header = (
        "| system | workload | delivered | p50 ms | p90 ms | p99 ms | max ms | p50 vs raw-udp |"
    )
    assert header in lines
    assert lines[-2:] == ["- one", "- two"]
    cells = table_cells(lines)
    assert cells["raw-udp", "unreliable"] == [
        "raw-udp", "unreliable", "39/40 (97.5%)", "2.00", "2.00", "45.0", "45.0", "1.00x",
    ]  # fmt: skip
    assert cells["framewire", "unreliable"][2:] == [
        "36/40 (90.0%)", "2.50", "2.50", "41.0", "41.0", "1.25x",
    ]  # fmt: skip
    # No raw-udp row for this workload, and no deliveries: no ratio.
    assert cells["framewire", "reliable"][3:] == ["30.0", "30.0", "120.0", "120.0", "—"]
    assert cells["aiortc", "video"][2:] == ["0/40 (0.0%)", "—", "—", "—", "—", "—"]


def test_summary_never_rounds_a_lossy_row_to_100_percent() -> None:
    almost = make_row("raw-udp", "latest", [1.0] * 9999 + [None])
    barely = make_row("framewire", "latest", [None] * 9999 + [4.0])
    cells = table_cells(summary_table([make_result("x", [almost, barely])]))
    assert cells["raw-udp", "latest"][2] == "9999/10000 (99.9%)"
    assert cells["framewire", "latest"][2] == "1/10000 (0.1%)"
    assert cells["framewire", "latest"][-1] == "4.00x"


def test_write_summary_links_each_scenarios_plots(tmp_path: Path) -> None:
    results = [make_result("lossy-5", small_rows()), make_result(TRACE, small_rows()[:1])]
    path = write_summary(results, tmp_path)
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "summary.md"
    assert text.startswith("# ")
    assert "### lossy-5 (v2, sim, seed 7)" in text
    assert f"### {TRACE} (v2, sim, seed 7)" in text
    assert "(lossy-5-cdf.png)" in text
    assert "(trace__mahimahi__ATT-LTE-driving.down-cdf.png)" in text
    assert "(trace__mahimahi__ATT-LTE-driving.down-timeline.png)" in text


def test_write_summary_rejects_results_that_would_share_files(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="share the files"):
        write_summary([make_result("a/b", []), make_result("a__b", [])], tmp_path)


def test_minmax_downsample_keeps_spikes_gaps_and_order() -> None:
    y = np.full(100_000, 2.0)
    y[31_337] = 500.0  # a single-message stall
    y[77_777] = 0.5
    y[50_000:51_000] = np.nan  # a loss burst far wider than a bin
    x = np.linspace(0.0, 100.0, y.size, endpoint=False)
    xs, ys = report._minmax_downsample(x, y, 20_000)
    assert xs.size <= 20_000
    assert np.nanmax(ys) == 500.0 and np.nanmin(ys) == 0.5
    assert np.isnan(ys).any()
    assert (np.diff(xs) >= 0).all()
    _, short = report._minmax_downsample(x[:100], y[:100], 20_000)
    assert short.size == 100


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        ReportConfig(max_points_per_line=2)
    with pytest.raises(ValueError):
        ReportConfig(log_span=1.0)


# --- validation -------------------------------------------------------------------------------


def valid() -> Result:
    return make_result("wifi-spikes", small_rows(), notes=["n"])


def test_valid_result_passes() -> None:
    validate_result(valid())


def _set(path: tuple[Any, ...], value: Any) -> Callable[[Result], None]:
    def mutate(result: Result) -> None:
        target: Any = result
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Callable[[Result], None]:
    def mutate(result: Result) -> None:
        target: Any = result
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _shift_loss(result: Result) -> None:
    # Counts still add up, but the series has one more latency than "delivered".
    result["rows"][0]["delivered"] -= 1
    result["rows"][0]["lost"] += 1


def _shorten_both_series(result: Result) -> None:
    series = result["rows"][2]["series"]
    series["send_s"].pop()
    series["latency_ms"].pop()


MALFORMED: dict[str, tuple[Callable[[Result], None], str]] = {
    "missing top key": (_delete(("driver",)), "missing key 'driver'"),
    "missing row key": (_delete(("rows", 1, "series")), "missing key 'series'"),
    "missing summary key": (_delete(("rows", 1, "latency_ms", "p99")), "missing key 'p99'"),
    "missing series key": (_delete(("rows", 1, "series", "send_s")), "missing key 'send_s'"),
    "series lengths differ": (
        lambda r: r["rows"][0]["series"]["send_s"].pop(),
        "series lengths differ",
    ),
    "series shorter than sent": (_shorten_both_series, "but sent = 40"),
    "counts do not add up": (_set(("rows", 1, "lost"), 5), "delivered + lost + late"),
    "non-null latencies != delivered": (_shift_loss, "non-null entries, but delivered = 38"),
    "null summary with deliveries": (_set(("rows", 0, "latency_ms", "p50"), None), "non-negative"),
    "summary without deliveries": (_set(("rows", 3, "latency_ms", "max"), 1.0), "all null"),
    "unordered summary": (_set(("rows", 0, "latency_ms", "p90"), 99.0), "not ordered"),
    "NaN latency": (_set(("rows", 0, "series", "latency_ms", 3), math.nan), "finite"),
    "negative latency": (_set(("rows", 0, "series", "latency_ms", 3), -1.0), "non-negative"),
    "string latency": (_set(("rows", 0, "series", "latency_ms", 3), "2.0"), "only numbers"),
    "send times out of order": (_set(("rows", 0, "series", "send_s", 5), 0.0), "send order"),
    "bool count": (_set(("rows", 0, "late"), False), "must be an integer"),
    "negative count": (_set(("rows", 0, "late"), -1), "at least 0"),
    "unknown driver": (_set(("driver",), "ns3"), "'driver' must be one of"),
    "zero duration": (_set(("duration_s",), 0), "duration_s"),
    "rows not a list": (_set(("rows",), {}), "'rows' must be a list"),
    "notes not strings": (_set(("notes",), [1]), "'notes' must be a list of strings"),
    "duplicate row": (lambda r: r["rows"].append(copy.deepcopy(r["rows"][0])), "duplicate row"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_validate_rejects(case: str) -> None:
    mutate, message = MALFORMED[case]
    result = valid()
    mutate(result)
    with pytest.raises(BenchError, match=re.escape(message)):
        validate_result(result)


def test_validate_rejects_a_non_dict() -> None:
    with pytest.raises(BenchError, match="must be a dict"):
        validate_result([])  # type: ignore[arg-type]


def test_write_scenario_validates_before_writing(tmp_path: Path) -> None:
    result = valid()
    result["rows"][0]["lost"] += 1
    with pytest.raises(BenchError, match=re.escape("delivered + lost + late")):
        write_scenario(result, tmp_path / "out")
    assert not (tmp_path / "out").exists()
