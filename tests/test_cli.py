"""The ``framewire`` command line: argument errors, output, and the commands on loopback.

Commands run as ``python -m framewire ...`` subprocesses, the way people run them, so exit
codes, stdout/stderr separation and the absence of tracebacks are what is checked.
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from framewire.cli import parse_bitrate, parse_fps, parse_seconds, parse_size
from framewire.output import LiveLine, demo_progress, receive_summary, send_summary

ROOT = Path(__file__).resolve().parent.parent
FRAMEWIRE = [sys.executable, "-m", "framewire"]


def _restore_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored and children inherit that; Python
    # then installs no KeyboardInterrupt handler. Ctrl-C tests need the default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FRAMEWIRE, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*FRAMEWIRE, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_restore_sigint,
    )


def assert_one_error_line(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert lines, "no error message"
    assert lines[-1].startswith("framewire: error: "), stderr
    errors = [line for line in lines if line.startswith("framewire: error: ")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[-1], stderr


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def read_listening_port(proc: subprocess.Popen[str], timeout_s: float = 15) -> int:
    """The port from the receiver's ``listening on HOST:PORT`` line on stderr."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if line.startswith("listening on "):
            return int(line.rsplit(":", 1)[1])
    proc.kill()
    raise AssertionError(f"receiver printed no address: {proc.communicate()}")


# -- argument parsing (no sockets) ----------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["send", "--to", "127.0.0.1:5000", "--size", "12x"], "--size"),
        (["send", "--to", "127.0.0.1:5000", "--size", "1281x720"], "even"),
        (["send", "--to", "127.0.0.1:5000", "--size", "8x8"], "16..4096"),
        (["send", "--to", "127.0.0.1:5000", "--size", "8192x720"], "16..4096"),
        (["demo", "--size", "128x72"], "at least 256x48"),
        (["send", "--to", "127.0.0.1:5000", "--fps", "0"], "--fps"),
        (["demo", "--fps", "241"], "1..240"),
        (["demo", "--fps", "fast"], "--fps"),
        (["demo", "--seconds", "0"], "--seconds"),
        (["demo", "--seconds", "-2"], "--seconds"),
        (["demo", "--seconds", "inf"], "--seconds"),
        (["demo", "--bitrate", "4X"], "--bitrate"),
        (["demo", "--bitrate", "5k"], "10k..1G"),
        (["send"], "--to"),
        (["send", "--to", "localhost"], "HOST:PORT"),
        (["send", "--to", "127.0.0.1:0"], "port 0"),
        (["receive", "--listen", "127.0.0.1:70000"], "HOST:PORT"),
        (["receive", "--listen", "127.0.0.1:0", "--jitter", "fixed:x"], "fixed:MS"),
        (["--loop", "twisted", "demo"], "--loop"),
        (["bench", "--loop", "twisted"], "--loop"),
        ([], "COMMAND"),
        (["teleport"], "teleport"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert_one_error_line(result.stderr, fragment)


@pytest.mark.timeout(30)
def test_help_exits_0() -> None:
    for args in ([], ["demo"], ["send"], ["receive"], ["bench"]):
        result = run(*args, "--help")
        assert result.returncode == 0, result
        assert "usage: framewire" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1280x720", (1280, 720)), ("640X360", (640, 360)), ("16x4096", (16, 4096))],
)
def test_parse_size(text: str, expected: tuple[int, int]) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4M", 4_000_000),
        ("800k", 800_000),
        ("2500000", 2_500_000),
        ("1.5M", 1_500_000),
        ("auto", None),
    ],
)
def test_parse_bitrate(text: str, expected: int | None) -> None:
    assert parse_bitrate(text) == expected


@pytest.mark.parametrize("text", ["", "4 Mbit", "-1M", "2G", "9999", "M"])
def test_parse_bitrate_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bitrate(text)


def test_parse_numbers() -> None:
    assert parse_fps("29.97") == pytest.approx(29.97)
    assert parse_seconds("0.5") == 0.5
    for bad in ("nan", "0", "-1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_seconds(bad)


# -- output (no sockets) --------------------------------------------------------------------------


class _Stream(io.StringIO):
    def __init__(self, *, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_live_line_overwrites_on_a_tty_and_appends_elsewhere() -> None:
    tty = _Stream(tty=True)
    line = LiveLine(tty)
    line.update("one")
    line.update("two")
    line.finish()
    assert tty.getvalue() == "\rone\x1b[K\rtwo\x1b[K\n"

    log = _Stream(tty=False)
    line = LiveLine(log)
    line.update("one")
    line.update("two")
    line.finish()
    assert log.getvalue() == "one\ntwo\n"

    quiet = _Stream(tty=True)
    line = LiveLine(quiet, enabled=False)
    line.update("one")
    line.finish()
    assert quiet.getvalue() == ""


def test_summaries_survive_runs_without_samples() -> None:
    empty = dict.fromkeys(("p50", "p95", "p99", "max"))
    session: dict[str, Any] = {"srtt_ms": None, "packets_lost": 0, "retransmissions": 0}
    session["ended"] = {"reason": "idle timeout", "code": 2, "by_peer": False}
    received = {
        "frames_received": 0,
        "seconds": 0.0,
        "fps": None,
        "frames_decoded": 0,
        "frames_missing": 0,
        "frames_late": 0,
        "keyframes_received": 0,
        "keyframe_requests": 0,
        "bitrate_kbps": None,
        "frame_latency_ms": empty,
        "transport_ms": empty,
        "decode_ms": empty,
        "session": session,
    }
    text = "\n".join(receive_summary(received))
    assert "received 0 frames" in text and "idle timeout" in text
    sent = {
        "frames_sent": 0,
        "size": "640x360",
        "seconds": 0.0,
        "fps": None,
        "keyframes_sent": 0,
        "keyframe_requests_received": 0,
        "bitrate_kbps": None,
        "ticks_skipped": 0,
        "encode_ms": empty,
        "tick_late_ms": empty,
        "session": session,
    }
    assert "sent 0 frames" in "\n".join(send_summary(sent))
    assert demo_progress(None, None) == "demo  starting"


# -- on loopback ----------------------------------------------------------------------------------

DEMO_FIELDS = {
    "frames_sent",
    "frames_received",
    "frames_decoded",
    "frame_latency_ms",
    "encode_ms_p50",
    "decode_ms_p50",
    "transport_ms_p50",
    "size",
    "fps",
    "seconds",
    "loop",
    "frames_missing",
    "keyframes",
    "bitrate_kbps",
    "srtt_ms",
    "packets_lost",
    "retransmissions",
}


@pytest.mark.loopback
@pytest.mark.timeout(60)
def test_demo_json_reports_a_clean_stream() -> None:
    started = time.monotonic()
    result = run("demo", "--seconds", "2", "--size", "640x360", "--json", timeout=45)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # exactly one JSON value, nothing else on stdout
    assert report.keys() >= DEMO_FIELDS
    assert report["size"] == "640x360"
    assert report["frames_sent"] >= 50
    assert report["frames_received"] >= 0.95 * report["frames_sent"]
    assert report["frames_decoded"] >= 0.95 * report["frames_sent"]
    assert report["transport_ms_p50"] > 0
    assert report["encode_ms_p50"] > 0 and report["decode_ms_p50"] > 0
    latency = report["frame_latency_ms"]
    assert set(latency) == {"p50", "p95", "p99", "max"}
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert latency["p50"] > report["transport_ms_p50"]  # capture->decoded includes transport
    assert elapsed < 2 + 5 + 3  # the promise is seconds + ~5 s; 3 s slack for a busy CI
    assert "Traceback" not in result.stderr


@pytest.mark.loopback
@pytest.mark.timeout(60)
def test_receive_and_send_work_together() -> None:
    receiver = spawn("receive", "--listen", "127.0.0.1:0", "--accept-timeout", "20", "--json")
    try:
        port = read_listening_port(receiver)
        sent = run(
            "send",
            "--to",
            f"127.0.0.1:{port}",
            "--seconds",
            "2",
            "--size",
            "640x360",
            "--fps",
            "25",
            "--bitrate",
            "2M",
            "--json",
            timeout=30,
        )
        out, err = receiver.communicate(timeout=15)
    finally:
        receiver.kill()
        receiver.wait()
    assert sent.returncode == 0, sent.stderr
    assert receiver.returncode == 0, err
    send_report = json.loads(sent.stdout)
    receive_report = json.loads(out)
    assert send_report["frames_sent"] >= 40
    assert receive_report["frames_received"] >= 0.95 * send_report["frames_sent"]
    assert receive_report["frames_decoded"] == receive_report["frames_received"]
    assert receive_report["transport_ms"]["p50"] > 0
    assert receive_report["session"]["ended"]["reason"] == "done"
    assert receive_report["session"]["ended"]["by_peer"] is True
    assert "received " in err and "sent " in sent.stderr  # the summaries, on stderr
    assert "Traceback" not in err + sent.stderr


@pytest.mark.loopback
@pytest.mark.timeout(30)
def test_send_to_nobody_fails_within_the_handshake_timeout() -> None:
    port = free_udp_port()
    started = time.monotonic()
    result = run("send", "--to", f"127.0.0.1:{port}", "--seconds", "1", timeout=20)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert_one_error_line(result.stderr, f"127.0.0.1:{port}", "handshake timeout")
    assert elapsed < 7.0  # 5 s handshake timeout plus start-up


@pytest.mark.loopback
@pytest.mark.timeout(30)
def test_receive_on_a_port_in_use_fails_cleanly() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run("receive", "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert_one_error_line(result.stderr, "cannot listen", "in use")


@pytest.mark.loopback
@pytest.mark.timeout(30)
def test_receive_gives_up_when_nobody_connects() -> None:
    result = run("receive", "--listen", "127.0.0.1:0", "--accept-timeout", "0.5")
    assert result.returncode == 1
    assert_one_error_line(result.stderr, "no sender connected")


def _children_of(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields follow the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return children


@pytest.mark.loopback
@pytest.mark.timeout(60)
def test_ctrl_c_exits_130_quietly_and_stops_the_demo_children() -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the child processes")
    demo = spawn("demo", "--seconds", "20", "--size", "640x360", "--json")
    deadline = time.monotonic() + 20
    children: list[int] = []
    while len(children) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        children = _children_of(demo.pid)
    assert len(children) == 2, "the demo did not start its receiver and sender"
    time.sleep(1.0)  # streaming by now
    demo.send_signal(signal.SIGINT)
    out, err = demo.communicate(timeout=15)
    assert demo.returncode == 130, err
    assert out == ""
    assert "Traceback" not in err and "error" not in err
    time.sleep(0.5)
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []


@pytest.mark.loopback
@pytest.mark.timeout(30)
def test_ctrl_c_while_waiting_for_a_sender_exits_130() -> None:
    receiver = spawn("receive", "--listen", "127.0.0.1:0")
    read_listening_port(receiver)
    receiver.send_signal(signal.SIGINT)
    _, err = receiver.communicate(timeout=10)
    assert receiver.returncode == 130
    assert "Traceback" not in err and "error" not in err


@pytest.mark.loopback
@pytest.mark.timeout(30)
def test_sigterm_closes_the_session_so_the_peer_ends_at_once() -> None:
    receiver = spawn("receive", "--listen", "127.0.0.1:0", "--json", "--quiet")
    sender: subprocess.Popen[str] | None = None
    try:
        port = read_listening_port(receiver)
        sender = spawn("send", "--to", f"127.0.0.1:{port}", "--size", "640x360", "--quiet")
        time.sleep(2.0)
        sender.send_signal(signal.SIGTERM)
        sender.communicate(timeout=10)
        started = time.monotonic()
        out, err = receiver.communicate(timeout=10)
        waited = time.monotonic() - started
    finally:
        for proc in (receiver, sender):
            if proc is not None:
                proc.kill()
                proc.wait()
    assert sender.returncode == 128 + signal.SIGTERM
    assert receiver.returncode == 0, err
    assert waited < 3  # not the 15 s idle timeout
    ended = json.loads(out)["session"]["ended"]
    assert ended == {"reason": "interrupted", "code": 0, "by_peer": True}


@pytest.mark.timeout(30)
def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("framewire ")


def test_bench_table_renders_every_figure() -> None:
    from framewire.output import bench_table

    report = {
        "loop": "uvloop",
        "message_bytes": 1200,
        "message_latency_us": {"p50": 120.0, "p99": 300.0},
        "raw_latency_us": {"p50": 40.0, "p99": 100.0},
        "iterator_latency_us": {"p50": 150.0, "p99": 350.0},
        "aead_floor_latency_us": {"p50": 70.0, "p99": 150.0},
        "latency_ratio_p50": 3.0,
        "goodput_mbps": 1000.0,
        "raw_goodput_mbps": 2000.0,
        "goodput_ratio": 0.5,
    }
    text = "\n".join(bench_table(report))
    assert "AEAD floor p50" in text and "3.00x" in text and "goodput 0.50x" in text


def test_send_from_a_missing_file_is_one_line() -> None:
    result = run("send", "--to", "127.0.0.1:9", "--source", "/nonexistent/film.mp4")
    assert result.returncode == 1, result
    assert_one_error_line(result.stderr, "--source", "/nonexistent/film.mp4")
