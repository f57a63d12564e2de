"""Scenario benchmark reports: the result as JSON, a Markdown summary, and two PNG plots.

A scenario run produces one result dict of plain JSON types::

    {"scenario": "wifi-spikes", "version": 1, "description": "...", "driver": "sim" | "relay",
     "seed": 1, "duration_s": 20.0, "notes": ["..."],            # notes are optional
     "rows": [{"system": "framewire", "workload": "unreliable",
               "sent": 1200, "delivered": 1180, "lost": 20, "late": 0,
               "latency_ms": {"p50": 2.1, "p90": 3.0, "p99": 41.0, "mean": 4.2, "max": 43.9},
               "series": {"send_s": [0.0, 0.016, ...], "latency_ms": [2.1, None, ...]}}]}

``latency_ms`` summarises the delivered messages (all ``None`` when none were delivered);
``series`` has one entry per message sent, in send order, ``None`` for a message that was not
delivered (lost, or reported late by the receiver).

:func:`write_scenario` writes ``<stem>.json``, ``<stem>-cdf.png`` and ``<stem>-timeline.png``;
:func:`write_summary` writes ``summary.md`` over several results. Both validate first, so a
malformed result raises :class:`~bench.errors.BenchError` before any file is touched.

matplotlib and numpy are imported inside the functions that need them: importing this module
stays as cheap as importing :mod:`json`.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bench.errors import BenchError

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from numpy.typing import NDArray

__all__ = [
    "ReportConfig",
    "safe_name",
    "summary_table",
    "validate_result",
    "write_scenario",
    "write_summary",
]

DRIVERS: Final = frozenset({"sim", "relay"})
BASELINE_SYSTEM: Final = "raw-udp"
RESULT_KEYS: Final = ("scenario", "version", "description", "driver", "seed", "duration_s", "rows")
ROW_KEYS: Final = (
    "system",
    "workload",
    "sent",
    "delivered",
    "lost",
    "late",
    "latency_ms",
    "series",
)
SUMMARY_KEYS: Final = ("p50", "p90", "p99", "mean", "max")

# Known systems keep one colour in every plot, so reports from different runs compare at a
# glance. Red is left out: it marks undelivered messages.
_SYSTEM_COLORS: Final = {"framewire": "C0", "raw-udp": "C7", "aiortc": "C2", "srt": "C4"}
_SPARE_COLORS: Final = ("C1", "C5", "C6", "C8", "C9")
_WORKLOAD_STYLES: Final = {"reliable": "-", "unreliable": "--", "latest": ":", "video": "-."}
_SPARE_STYLES: Final = ("-", "--", ":", "-.")
_LOSS_COLOR: Final = "red"
_SAFE_CHARS: Final = frozenset(string.ascii_letters + string.digits + "._-+=")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportConfig:
    """How the plots are drawn; the defaults suit a README or a pull-request comment."""

    width_in: float = 9.0
    cdf_height_in: float = 5.0
    # Each workload subplot of the timeline gets this much height (plus room for the title).
    timeline_row_height_in: float = 2.4
    dpi: int = 110
    # A line with more points than this is reduced to per-bin min and max before plotting.
    max_points_per_line: int = 20_000
    # The CDF's latency axis goes logarithmic when max / min latency exceeds this.
    log_span: float = 20.0

    def __post_init__(self) -> None:
        if not (self.width_in > 0 and self.cdf_height_in > 0 and self.timeline_row_height_in > 0):
            raise ValueError("figure sizes must be positive")
        if self.dpi < 10:
            raise ValueError(f"dpi must be at least 10, got {self.dpi}")
        # Min/max reduction emits two points per bin, so fewer than 4 cannot keep a shape.
        if self.max_points_per_line < 4:
            raise ValueError(
                f"max_points_per_line must be at least 4, got {self.max_points_per_line}"
            )
        if self.log_span <= 1:
            raise ValueError(f"log_span must exceed 1, got {self.log_span}")


DEFAULT_CONFIG: Final = ReportConfig()


def safe_name(scenario: str) -> str:
    """File-system-safe stem for a scenario name.

    ``/`` becomes ``__`` (trace scenarios are named like paths); any other character outside
    ``[A-Za-z0-9._+=-]`` becomes ``_``, and a leading ``.`` becomes ``_`` so a stem is never
    hidden or a relative path component.
    """
    if not scenario:
        raise BenchError("scenario name is empty")
    stem = "".join(c if c in _SAFE_CHARS else "_" for c in scenario.replace("/", "__"))
    return "_" + stem[1:] if stem.startswith(".") else stem


# --- validation -----------------------------------------------------------------------------


def validate_result(result: dict[str, Any]) -> None:
    """Raise :class:`BenchError` naming the first problem if ``result`` breaks the schema.

    Checks presence and types of every key, that each row's counts add up
    (``delivered + lost + late == sent``), that both series have one entry per message sent,
    that the non-null latencies number ``delivered``, and that the summary is null exactly when
    nothing was delivered. Unknown extra keys are allowed.
    """
    if not isinstance(result, dict):
        raise BenchError(f"result must be a dict, got {type(result).__name__}")
    _require_keys(result, RESULT_KEYS, "result")
    scenario = result["scenario"]
    if not isinstance(scenario, str) or not scenario:
        raise BenchError(f"result: 'scenario' must be a non-empty string, got {scenario!r}")
    where = f"scenario {scenario!r}"
    _require_int(result, "version", where, minimum=0)
    _require_int(result, "seed", where, minimum=None)
    _require_type(result, "description", str, where)
    if result["driver"] not in DRIVERS:
        raise BenchError(
            f"{where}: 'driver' must be one of {sorted(DRIVERS)}, got {result['driver']!r}"
        )
    duration = result["duration_s"]
    if not _is_number(duration) or not math.isfinite(duration) or duration <= 0:
        raise BenchError(f"{where}: 'duration_s' must be a positive number, got {duration!r}")
    notes = result.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise BenchError(f"{where}: 'notes' must be a list of strings")
    rows = _require_type(result, "rows", list, where)
    seen: set[tuple[str, str]] = set()
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BenchError(f"{where}: row {index} must be a dict, got {type(row).__name__}")
        key = _validate_row(row, f"{where} row {index}")
        # One line per system in each timeline subplot, and one baseline per workload for the
        # ratio column: a duplicate pair would make both ambiguous.
        if key in seen:
            raise BenchError(f"{where}: duplicate row for {key[0]}/{key[1]}")
        seen.add(key)


def _validate_row(row: dict[str, Any], where: str) -> tuple[str, str]:
    _require_keys(row, ROW_KEYS, where)
    system = _require_type(row, "system", str, where)
    workload = _require_type(row, "workload", str, where)
    where = f"{where} ({system}/{workload})"
    sent, delivered, lost, late = (
        _require_int(row, k, where, minimum=0) for k in ("sent", "delivered", "lost", "late")
    )
    if delivered + lost + late != sent:
        raise BenchError(
            f"{where}: delivered + lost + late = {delivered} + {lost} + {late} "
            f"= {delivered + lost + late}, but sent = {sent}"
        )
    _validate_summary(_require_type(row, "latency_ms", dict, where), delivered, where)
    series = _require_type(row, "series", dict, where)
    _require_keys(series, ("send_s", "latency_ms"), f"{where} series")
    send_s = _require_type(series, "send_s", list, f"{where} series")
    latency = _require_type(series, "latency_ms", list, f"{where} series")
    if len(send_s) != len(latency):
        raise BenchError(
            f"{where}: series lengths differ: send_s has {len(send_s)}, "
            f"latency_ms has {len(latency)}"
        )
    if len(send_s) != sent:
        raise BenchError(f"{where}: series have {len(send_s)} entries, but sent = {sent}")
    _validate_series(send_s, latency, delivered, where)
    return system, workload


def _validate_summary(summary: dict[str, Any], delivered: int, where: str) -> None:
    _require_keys(summary, SUMMARY_KEYS, f"{where} latency_ms")
    values = [summary[k] for k in SUMMARY_KEYS]
    if delivered == 0:
        if any(v is not None for v in values):
            raise BenchError(f"{where}: latency_ms must be all null when nothing was delivered")
        return
    if not all(_is_number(v) and math.isfinite(v) and v >= 0 for v in values):
        raise BenchError(
            f"{where}: latency_ms values must be non-negative numbers when messages were "
            f"delivered, got {summary!r}"
        )
    p50, p90, p99, mean, maximum = values
    if not (p50 <= p90 <= p99 <= maximum and mean <= maximum):
        raise BenchError(
            f"{where}: latency_ms is not ordered p50 <= p90 <= p99 <= max: {summary!r}"
        )


def _validate_series(send_s: list[Any], latency: list[Any], delivered: int, where: str) -> None:
    import numpy as np

    # Checking element types through set(map(type, ...)) runs at C speed: series reach 100k
    # entries, and a per-element Python isinstance loop would dominate write_scenario.
    if not set(map(type, send_s)) <= {int, float}:
        raise BenchError(f"{where}: series send_s must hold only numbers")
    if not set(map(type, latency)) <= {int, float, type(None)}:
        raise BenchError(f"{where}: series latency_ms must hold only numbers and nulls")
    send = np.asarray(send_s, dtype=np.float64)
    if send.size and not (np.isfinite(send).all() and send[0] >= 0):
        raise BenchError(f"{where}: series send_s must be finite and non-negative")
    if send.size > 1 and (np.diff(send) < 0).any():
        raise BenchError(f"{where}: series send_s must be in send order (non-decreasing)")
    nulls = latency.count(None)
    if len(latency) - nulls != delivered:
        raise BenchError(
            f"{where}: series latency_ms has {len(latency) - nulls} non-null entries, "
            f"but delivered = {delivered}"
        )
    lat = np.array(latency, dtype=np.float64)  # None becomes NaN
    # A NaN beyond the Nones was a float NaN in the input, which JSON cannot carry.
    if np.isnan(lat).sum() != nulls or np.isinf(lat).any() or (lat < 0).any():
        raise BenchError(f"{where}: series latency_ms must be finite, non-negative or null")


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but True is never a count or a latency.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _require_keys(mapping: dict[str, Any], keys: Iterable[str], where: str) -> None:
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise BenchError(
            f"{where}: missing key{'s' if len(missing) > 1 else ''} "
            + ", ".join(map(repr, missing))
        )


def _require_type(mapping: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = mapping[key]
    if not isinstance(value, kind):
        raise BenchError(f"{where}: {key!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _require_int(mapping: dict[str, Any], key: str, where: str, *, minimum: int | None) -> int:
    value = mapping[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise BenchError(f"{where}: {key!r} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise BenchError(f"{where}: {key!r} must be at least {minimum}, got {value}")
    return value


# --- files ----------------------------------------------------------------------------------


def write_scenario(
    result: dict[str, Any], out_dir: Path, *, config: ReportConfig = DEFAULT_CONFIG
) -> list[Path]:
    """Validate ``result`` and write its JSON, latency CDF and timeline into ``out_dir``.

    Returns ``[<stem>.json, <stem>-cdf.png, <stem>-timeline.png]`` with
    ``stem = safe_name(result["scenario"])``. The JSON holds exactly ``result``; only the plots
    thin out long series.
    """
    validate_result(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = safe_name(result["scenario"])
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(_json_text(result) + "\n", encoding="utf-8")
    cdf_path = out_dir / f"{stem}-cdf.png"
    _cdf_figure(result, config).savefig(cdf_path)
    timeline_path = out_dir / f"{stem}-timeline.png"
    _timeline_figure(result, config).savefig(timeline_path)
    return [json_path, cdf_path, timeline_path]


def summary_table(results: list[dict[str, Any]]) -> list[str]:
    """Markdown lines for ``results``: per scenario a heading, its description, a table, notes.

    Columns: system, workload, delivered (``delivered/sent (pct%)``), p50/p90/p99/max in ms,
    and the row's p50 over the ``raw-udp`` row's p50 of the same workload.
    """
    lines: list[str] = []
    for result in results:
        validate_result(result)
        if lines:
            lines.append("")
        lines.append(
            f"### {result['scenario']} (v{result['version']}, {result['driver']}, "
            f"seed {result['seed']})"
        )
        if result["description"]:
            lines += ["", result["description"]]
        lines += [
            "",
            "| system | workload | delivered | p50 ms | p90 ms | p99 ms | max ms "
            "| p50 vs raw-udp |",
            "|---|---|--:|--:|--:|--:|--:|--:|",
        ]
        baseline = {
            row["workload"]: row["latency_ms"]["p50"]
            for row in result["rows"]
            if row["system"] == BASELINE_SYSTEM
        }
        for row in result["rows"]:
            summary = row["latency_ms"]
            cells = [
                _cell(row["system"]),
                _cell(row["workload"]),
                _delivered_text(row["delivered"], row["sent"]),
                *(_ms_text(summary[k]) for k in ("p50", "p90", "p99", "max")),
                _ratio_text(summary["p50"], baseline.get(row["workload"])),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        notes = result.get("notes", [])
        if notes:
            lines += ["", *(f"- {note}" for note in notes)]
    return lines


def write_summary(results: list[dict[str, Any]], out_dir: Path) -> Path:
    """Write ``summary.md`` (title, per-scenario tables, plot links) and return its path.

    The links point at the PNGs :func:`write_scenario` writes into the same ``out_dir``.
    """
    for result in results:
        validate_result(result)
    stems = [safe_name(r["scenario"]) for r in results]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise BenchError(f"several results would share the files of: {', '.join(duplicates)}")
    lines = ["# framewire scenario benchmarks", ""]
    if not results:
        lines.append("No scenario results.")
    for result in results:
        lines += summary_table([result])
        stem = safe_name(result["scenario"])
        alt = result["scenario"].replace("[", "\\[").replace("]", "\\]")
        lines += [
            "",
            f"![{alt} latency CDF]({stem}-cdf.png)",
            "",
            f"![{alt} latency timeline]({stem}-timeline.png)",
            "",
        ]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    return path


def _json_text(value: Any, depth: int = 0) -> str:
    """Indented JSON with sorted keys, but lists of scalars on one line.

    ``json.dumps(indent=2)`` would put each of a 100k-entry series on its own line, tripling
    the file for no reader's benefit.
    """
    inner = "  " * (depth + 1)
    if isinstance(value, dict) and value:
        if not all(isinstance(k, str) for k in value):
            raise BenchError("result keys must be strings to round-trip through JSON")
        items = [
            f"{inner}{json.dumps(k)}: {_json_text(value[k], depth + 1)}" for k in sorted(value)
        ]
        return "{\n" + ",\n".join(items) + "\n" + "  " * depth + "}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        items = [inner + _json_text(v, depth + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * depth + "]"
    return json.dumps(value, allow_nan=False)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _ms_text(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _delivered_text(delivered: int, sent: int) -> str:
    if sent == 0:
        return "0/0 (—)"
    pct = round(100 * delivered / sent, 1)
    # Rounding must not claim "100.0%" for a lossy row or "0.0%" for one that delivered some.
    if delivered < sent:
        pct = min(pct, 99.9)
    if delivered > 0:
        pct = max(pct, 0.1)
    return f"{delivered}/{sent} ({pct:.1f}%)"


def _ratio_text(p50: float | None, baseline_p50: float | None) -> str:
    if p50 is None or baseline_p50 is None or baseline_p50 <= 0:
        return "—"
    return f"{p50 / baseline_p50:.2f}x"


# --- plots ----------------------------------------------------------------------------------


def _new_figure(config: ReportConfig, height_in: float) -> Figure:
    # A bare Figure on an Agg canvas rather than pyplot with matplotlib.use("Agg"): it renders
    # the same, but neither switches the backend of a caller that uses pyplot interactively
    # nor registers the figure with pyplot, so nothing needs closing and nothing leaks.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(config.width_in, height_in), dpi=config.dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _system_colors(rows: list[dict[str, Any]]) -> dict[str, str]:
    colors: dict[str, str] = {}
    spare = 0
    for row in rows:
        system = row["system"]
        if system in colors:
            continue
        if system in _SYSTEM_COLORS:
            colors[system] = _SYSTEM_COLORS[system]
        else:
            colors[system] = _SPARE_COLORS[spare % len(_SPARE_COLORS)]
            spare += 1
    return colors


def _workload_styles(workloads: list[str]) -> dict[str, str]:
    styles: dict[str, str] = {}
    spare = 0
    for workload in workloads:
        if workload in _WORKLOAD_STYLES:
            styles[workload] = _WORKLOAD_STYLES[workload]
        else:
            styles[workload] = _SPARE_STYLES[spare % len(_SPARE_STYLES)]
            spare += 1
    return styles


def _ordered_workloads(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(row["workload"] for row in rows))


def _series(row: dict[str, Any]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Send times in s and latencies in ms, NaN where a message was not delivered."""
    import numpy as np

    series = row["series"]
    return (
        np.asarray(series["send_s"], dtype=np.float64),
        np.array(series["latency_ms"], dtype=np.float64),
    )


def _title(result: dict[str, Any], what: str) -> str:
    return (
        f"{result['scenario']}: {what}\n"
        f"{result['driver']} driver, seed {result['seed']}, {result['duration_s']:g} s"
    )


def _cdf_figure(result: dict[str, Any], config: ReportConfig) -> Figure:
    import numpy as np
    from matplotlib.ticker import LogFormatter

    rows: list[dict[str, Any]] = result["rows"]
    colors = _system_colors(rows)
    styles = _workload_styles(_ordered_workloads(rows))
    fig = _new_figure(config, config.cdf_height_in)
    ax = fig.add_subplot()
    lowest, highest = math.inf, 0.0
    empty: list[str] = []
    for row in rows:
        label = f"{row['system']}/{row['workload']}"
        _, latency = _series(row)
        delivered = np.sort(latency[~np.isnan(latency)])
        if delivered.size == 0:
            empty.append(label)
            continue
        # y is over messages *sent*, so the curve's top shows the delivered share.
        fraction = np.arange(1, delivered.size + 1, dtype=np.float64) / row["sent"]
        # A CDF has no spikes to lose: evenly spaced ranks (always keeping the first and the
        # maximum) trace it to well under a pixel.
        keep = _even_ranks(delivered.size, config.max_points_per_line)
        x = np.concatenate(([delivered[0]], delivered[keep]))
        y = np.concatenate(([0.0], fraction[keep]))
        ax.step(
            x,
            y,
            where="post",
            color=colors[row["system"]],
            linestyle=styles[row["workload"]],
            linewidth=1.5,
            label=label,
            # A dot where the curve ends shows the delivered share even when curves overlap.
            marker="o",
            markersize=3,
            markevery=[-1],
        )
        lowest = min(lowest, float(delivered[0]))
        highest = max(highest, float(delivered[-1]))
    for label in empty:
        # An invisible entry keeps the legend honest about rows that have no curve.
        ax.plot([], [], linestyle="none", label=f"{label}: none delivered")
    if lowest == math.inf:
        ax.text(0.5, 0.5, "no messages delivered", transform=ax.transAxes, ha="center")
    log_x = 0 < lowest < math.inf and highest / lowest > config.log_span
    if log_x:
        ax.set_xscale("log")
        # Plain numbers ("2", "30", "100"): the default 3x10^0 style is hard to read off, and
        # spans of only one or two decades need labelled minor ticks to be readable at all.
        ax.xaxis.set_major_formatter(LogFormatter())
        ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 1)))
        ax.set_xlabel("latency (ms, log scale)")
    else:
        ax.set_xlim(left=0)
        ax.set_xlabel("latency (ms)")
    ax.axhline(1.0, color="0.75", linewidth=0.8, zorder=0)
    ax.set_ylim(0, 1.03)
    ax.set_ylabel("fraction of messages sent\n(lost/late never arrive: lossy curves end below 1)")
    ax.grid(True, alpha=0.3)
    ax.set_title(_title(result, "latency CDF"), fontsize="medium")
    if rows:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return fig


def _timeline_figure(result: dict[str, Any], config: ReportConfig) -> Figure:
    from matplotlib.lines import Line2D

    rows: list[dict[str, Any]] = result["rows"]
    colors = _system_colors(rows)
    workloads = _ordered_workloads(rows) or ["(no rows)"]
    height = max(config.cdf_height_in, 1.3 + config.timeline_row_height_in * len(workloads))
    fig = _new_figure(config, height)
    axes = fig.subplots(len(workloads), 1, sharex=True, squeeze=False)[:, 0]
    for ax, workload in zip(axes, workloads, strict=True):
        _timeline_axes(ax, [r for r in rows if r["workload"] == workload], colors, config)
        ax.set_title(workload, loc="left", fontsize="medium")
        ax.set_ylabel("latency (ms)")
    axes[-1].set_xlabel("send time (s)")
    # The run's duration fixes the axis so timelines of one scenario line up; a relay run may
    # still send a little past it, and those messages must stay on the plot.
    last_send = max((r["series"]["send_s"][-1] for r in rows if r["sent"]), default=0.0)
    axes[-1].set_xlim(0, max(result["duration_s"], last_send))
    fig.suptitle(_title(result, "latency over send time"), fontsize="medium")
    handles = [Line2D([], [], color=c, label=s) for s, c in colors.items()]
    handles.append(
        Line2D([], [], color=_LOSS_COLOR, marker="|", linestyle="none", label="not delivered")
    )
    fig.legend(
        handles=handles,
        # Below the x label: above, it would crowd the two-line title.
        loc="outside lower center",
        ncols=len(handles),
        fontsize="small",
        frameon=False,
    )
    return fig


def _timeline_axes(
    ax: Axes, rows: list[dict[str, Any]], colors: dict[str, str], config: ReportConfig
) -> None:
    """One line per system, and a lane of red ticks per system that lost messages."""
    import numpy as np

    top = 0.0
    lanes: list[tuple[dict[str, Any], NDArray[np.float64]]] = []
    for row in rows:
        send, latency = _series(row)
        missing = np.isnan(latency)
        if not missing.all():
            x, y = _minmax_downsample(send, latency, config.max_points_per_line)
            # Small markers as well as the line: an isolated delivery between two losses has
            # no segment to draw.
            ax.plot(
                x,
                y,
                color=colors[row["system"]],
                alpha=0.85,
                linewidth=0.8,
                marker=".",
                markersize=1.5,
            )
            top = max(top, float(np.nanmax(latency)))
        if missing.any():
            lanes.append((row, send[missing]))
    # The lanes sit above the data: reserve that share of the height so no tick hides a spike.
    lane_height = 0.07
    data_share = 1.0 - lane_height * len(lanes) - 0.02
    if top > 0:
        ax.set_ylim(0, top * 1.05 / data_share)
    else:
        # Nothing delivered (or every latency 0): a latency scale would only suggest data.
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.text(0.5, data_share / 2, "nothing delivered", transform=ax.transAxes, ha="center")
    ax.grid(True, alpha=0.3)
    pixels = int(config.width_in * config.dpi)
    for index, (row, lost_at) in enumerate(lanes):
        lane_y = 1.0 - lane_height * (index + 0.6)
        marks = _thin_marks(lost_at, 2 * pixels)
        ax.plot(
            marks,
            np.full(marks.size, lane_y),
            transform=ax.get_xaxis_transform(),  # x in seconds, y as a share of the axes
            color=_LOSS_COLOR,
            linestyle="none",
            marker="|",
            markersize=6,
            markeredgewidth=0.8,
        )
        ax.annotate(
            f"{row['system']}: {_undelivered_text(row)}",
            xy=(1.0, lane_y),
            xycoords="axes fraction",
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize="x-small",
            color=_LOSS_COLOR,
            annotation_clip=False,
        )


def _undelivered_text(row: dict[str, Any]) -> str:
    parts = [f"{row[k]} {k}" for k in ("lost", "late") if row[k]]
    return ", ".join(parts)


def _even_ranks(size: int, limit: int) -> NDArray[np.intp]:
    """Indices ``0 .. size - 1``, thinned to at most ``limit`` evenly spaced ones (ends kept)."""
    import numpy as np

    if size <= limit:
        return np.arange(size)
    return np.unique(np.linspace(0, size - 1, limit).round().astype(np.intp))


def _minmax_downsample(
    x: NDArray[np.float64], y: NDArray[np.float64], limit: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """At most ``limit`` points that keep every spike: each bin's min and max, in send order.

    Plain striding would drop a one-message stall; averaging would flatten it. A bin with no
    delivery yields NaN so the line breaks there as it does at full resolution.
    """
    import numpy as np

    if y.size <= limit:
        return x, y
    width = -(-y.size // (limit // 2))  # ceil division: samples per bin
    bins = -(-y.size // width)
    # NaN padding fills only the tail of the last bin and is never picked as an extreme of a
    # bin with a delivery; an all-NaN bin picks its first index, which is a real sample.
    padded = np.full(bins * width, np.nan)
    padded[: y.size] = y
    grid = padded.reshape(bins, width)
    empty = np.isnan(grid).all(axis=1)
    low = np.argmin(np.where(np.isnan(grid), np.inf, grid), axis=1)
    high = np.argmax(np.where(np.isnan(grid), -np.inf, grid), axis=1)
    # Emit each bin's two extremes in the order they happened, so the line runs forward in time.
    first = np.minimum(low, high) + np.arange(bins) * width
    second = np.maximum(low, high) + np.arange(bins) * width
    index = np.column_stack((first, second)).ravel()
    values = y[index]
    values[np.repeat(empty, 2)] = np.nan
    return x[index], values


def _thin_marks(at: NDArray[np.float64], limit: int) -> NDArray[np.float64]:
    """At most one mark per ``1 / limit`` of the time span: more would paint the same pixels."""
    import numpy as np

    if at.size <= limit:
        return at
    span = float(at[-1] - at[0]) or 1.0
    slots = np.floor((at - at[0]) / span * (limit - 1)).astype(np.intp)
    _, first = np.unique(slots, return_index=True)
    return at[first]
