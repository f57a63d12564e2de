"""Output of the command line: the live stats line, summaries, JSON.

Convention for every command: live progress goes to stderr, results to stdout when asked for
(``--json``), so ``framewire ... --json > result.json`` captures exactly one JSON object.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping
from typing import Any, TextIO

__all__ = [
    "LiveLine",
    "bench_table",
    "demo_progress",
    "demo_summary",
    "emit_json",
    "emit_json_line",
    "fmt_ms",
    "percentile_row",
    "receive_progress",
    "receive_summary",
    "send_progress",
    "send_summary",
]

Result = Mapping[str, Any]


class LiveLine:
    """One status line, refreshed in place on a terminal and appended line by line elsewhere.

    On a TTY each update rewrites the line after a carriage return (and clears what a longer
    previous text left behind); in a log file or a pipe, where ``\\r`` would leave a mess,
    every update is its own line. The caller decides how often to update (about once a second).
    """

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        self._tty = _isatty(self._stream)
        self._open = False  # a TTY line is showing and has no newline yet

    def update(self, text: str) -> None:
        if not self._enabled:
            return
        if self._tty:
            # A line longer than the terminal wraps, and \r then only rewinds its last row.
            width = shutil.get_terminal_size().columns - 1
            if len(text) > width > 0:
                text = text[: width - 1] + "…" if _can_encode(self._stream, "…") else text[:width]
            self._stream.write("\r" + text + "\x1b[K")
            self._open = True
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def finish(self) -> None:
        """End the line in place, so what is printed next starts on a fresh line."""
        if self._open:
            self._stream.write("\n")
            self._stream.flush()
            self._open = False


def _can_encode(stream: TextIO, text: str) -> bool:
    try:
        text.encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or unusual streams
        return False


def emit_json(obj: Result, stream: TextIO | None = None) -> None:
    """The result object on stdout, indented for people; still exactly one JSON value."""
    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(obj, indent=2) + "\n")
    out.flush()


def emit_json_line(obj: Result, stream: TextIO | None = None) -> None:
    """One compact JSON line (the progress protocol between ``demo`` and its children)."""
    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(obj, separators=(",", ":")) + "\n")
    out.flush()


# -- numbers -----------------------------------------------------------------------------------


def fmt_ms(value: object, digits: int = 1) -> str:
    """A millisecond value for people: ``12.3``, or ``-`` when there is no sample."""
    if not isinstance(value, int | float):
        return "-"
    if 0 < abs(value) < 10 ** (-digits):
        return f"{value:.{digits + 2}f}"  # keep sub-0.1 ms transport figures readable
    return f"{value:.{digits}f}"


def _fmt_num(value: object, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def percentile_row(label: str, values: object, note: str = "") -> str:
    """``label  p50 x  p95 x  p99 x  max x ms  (note)`` from a percentiles dict."""
    got = values if isinstance(values, Mapping) else {}
    cells = "  ".join(f"{key} {fmt_ms(got.get(key), 2):>7}" for key in ("p50", "p95", "p99", "max"))
    tail = f"  ({note})" if note else ""
    return f"  {label:<16}{cells} ms{tail}"


# -- live lines --------------------------------------------------------------------------------


def receive_progress(p: Result) -> str:
    return (
        f"recv {p['t_s']:5.1f}s  {p['fps']:5.1f} fps  "
        f"latency p50 {fmt_ms(p['frame_latency_ms_p50'])} ms  "
        f"playout p50 {fmt_ms(p.get('playout_delay_ms_p50'))} ms  "
        f"late {p.get('late_frames', 0)}  "
        f"transport p50 {fmt_ms(p['transport_ms_p50'], 2)} ms  "
        f"srtt {fmt_ms(p['srtt_ms'], 2)} ms  "
        f"lost {p['frames_missing']} frames  link {p.get('link', '?')}"
    )


def send_progress(p: Result) -> str:
    return (
        f"send {p['t_s']:5.1f}s  {p['fps']:5.1f} fps  {p['bitrate_kbps']:6.0f} kbit/s  "
        f"encode p50 {fmt_ms(p['encode_ms_p50'], 2)} ms  "
        f"srtt {fmt_ms(p['srtt_ms'], 2)} ms  "
        f"lost {p['packets_lost']} pkts ({p.get('loss_pct', 0):.1f} %)  "
        f"retx {p['retransmissions']}  link {p.get('link', '?')}"
    )


def demo_progress(sender: Result | None, receiver: Result | None) -> str:
    """The demo's single live line, from the latest progress of each child; the figures
    that matter most come first, since a narrow terminal cuts the end off."""
    if sender is None:
        return "demo  starting"
    parts = [f"demo {sender['t_s']:5.1f}s", f"sent {sender['fps']:4.1f} fps"]
    if receiver is not None:
        parts += [
            f"recv {receiver['fps']:4.1f} fps",
            f"latency p50 {fmt_ms(receiver['frame_latency_ms_p50'])} ms",
            f"transport p50 {fmt_ms(receiver['transport_ms_p50'], 2)} ms",
        ]
    parts += [f"srtt {fmt_ms(sender['srtt_ms'], 2)} ms", f"lost {sender['packets_lost']}"]
    if receiver is not None and receiver["frames_missing"]:
        parts.append(f"missing {receiver['frames_missing']} frames")
    parts.append(f"{sender['bitrate_kbps'] / 1000:.1f} Mbit/s")
    return "  ".join(parts)


# -- summaries ---------------------------------------------------------------------------------


def _session_line(s: Result) -> str:
    line = (
        f"  {'session':<16}srtt {fmt_ms(s.get('srtt_ms'), 2)} ms, "
        f"packets lost {s.get('packets_lost')}, retransmissions {s.get('retransmissions')}"
    )
    end = s.get("ended")
    if isinstance(end, Mapping):
        who = "by peer" if end.get("by_peer") else "by us"
        line += f"; ended: {end.get('reason')} ({who})"
    return line


def receive_summary(r: Result) -> list[str]:
    return [
        f"received {r['frames_received']} frames in {_fmt_num(r['seconds'])} s "
        f"({_fmt_num(r['fps'])} fps), decoded {r['frames_decoded']}, "
        f"missing {r['frames_missing']}, late {r['frames_late']}, "
        f"keyframes {r['keyframes_received']} ({r['keyframe_requests']} requested), "
        f"{_fmt_num(r['bitrate_kbps'], 0)} kbit/s",
        percentile_row("frame latency", r["frame_latency_ms"], "capture -> shown"),
        f"  playout         {r.get('jitter')}: delay mean "
        f"{fmt_ms((r.get('playout_delay_ms') or {}).get('mean'))} ms, "
        f"p95 {fmt_ms((r.get('playout_delay_ms') or {}).get('p95'))} ms (sender -> shown), "
        f"late {r.get('late_frames', 0)}, stalls {r.get('stalls', 0)}",
        percentile_row("transport", r["transport_ms"], "send() -> delivered"),
        percentile_row("decode", r["decode_ms"]),
        _session_line(r["session"]),
    ]


def send_summary(r: Result) -> list[str]:
    return [
        f"sent {r['frames_sent']} frames of {r['size']} in {_fmt_num(r['seconds'])} s "
        f"({_fmt_num(r['fps'])} fps), keyframes {r['keyframes_sent']} "
        f"({r['keyframe_requests_received']} requested), "
        f"{_fmt_num(r['bitrate_kbps'], 0)} kbit/s, {r['ticks_skipped']} ticks skipped",
        percentile_row("encode", r["encode_ms"]),
        percentile_row("tick lateness", r["tick_late_ms"], "event-loop wake-up"),
        _session_line(r["session"]),
    ]


def demo_summary(d: Result) -> list[str]:
    return [
        f"demo: {d['size']} at {_fmt_num(d['fps'], 0)} fps for {_fmt_num(d['seconds'])} s "
        f"on 127.0.0.1, {d['loop']} loop, video on the {d['video_channel']} channel",
        f"  frames          sent {d['frames_sent']}, received {d['frames_received']}, "
        f"decoded {d['frames_decoded']}, missing {d['frames_missing']}, "
        f"keyframes {d['keyframes']} ({d['keyframe_requests']} requested)",
        percentile_row("frame latency", d["frame_latency_ms"], "capture -> decoded"),
        percentile_row("transport", d["transport_ms"], "send() -> delivered"),
        percentile_row("encode", d["encode_ms"]),
        percentile_row("decode", d["decode_ms"]),
        f"  {'link':<16}{_fmt_num(d['bitrate_kbps'], 0)} kbit/s, "
        f"srtt {fmt_ms(d['srtt_ms'], 3)} ms, packets lost {d['packets_lost']}, "
        f"retransmissions {d['retransmissions']}",
    ]


def bench_table(report: Result) -> list[str]:
    """framewire against raw UDP, one row per figure; rows for optional extras of the report
    (the AEAD floor, delivery through ``async for``) when it has them."""
    raw_lat = report["raw_latency_us"]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "-"

    rows: list[tuple[str, float, float]] = []
    for key, name in (
        ("message_latency_us", "latency"),
        ("iterator_latency_us", "  via async for"),
        ("aead_floor_latency_us", "  AEAD floor"),
    ):
        figures = report.get(key)
        if isinstance(figures, Mapping):
            rows += [(f"{name} {q} (us)", figures[q], raw_lat[q]) for q in ("p50", "p99")]
    rows.append(("goodput (Mbit/s)", report["goodput_mbps"], report["raw_goodput_mbps"]))
    lines = [
        f"loopback benchmark, {report['loop']} loop, "
        f"{report['message_bytes']}-byte messages for latency",
        f"  {'':<28}{'framewire':>10}{'raw UDP':>10}{'ratio':>9}",
    ]
    for label, fw, raw in rows:
        lines.append(f"  {label:<28}{fw:>10.1f}{raw:>10.1f}{ratio(fw, raw):>9}")
    lines.append(
        f"  ratios: latency p50 {report['latency_ratio_p50']:.2f}x, "
        f"goodput {report['goodput_ratio']:.2f}x (median of runs paired with raw)"
    )
    return lines
