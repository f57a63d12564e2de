"""The ``framewire`` command: argument parsing, the error boundary, and dispatch.

Heavy packages (PyAV, the transport) are imported by the command that needs them, so
``--help`` and argument errors answer at once.

Exit status: 0 success, 1 runtime failure, 2 usage error, 130 interrupted (Ctrl-C), 143
terminated (SIGTERM; sessions are closed gracefully first, as for Ctrl-C). Every
expected failure is one line on stderr, ``framewire: error: ...``; never a traceback (set
``FRAMEWIRE_DEBUG=1`` to get one for an unexpected error).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from framewire import __version__
from framewire.errors import CommandError
from framewire.output import (
    LiveLine,
    bench_table,
    demo_progress,
    demo_summary,
    emit_json,
    emit_json_line,
    receive_progress,
    receive_summary,
    send_progress,
    send_summary,
)

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + 15
PROG = "framewire"
DEFAULT_SIZE = (1280, 720)
LOOPS = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


# -- argument types: each raises ArgumentTypeError with a message made for people ----------------

_SIZE = re.compile(r"(\d+)[xX](\d+)")
_BITRATE = re.compile(r"(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:bps|bit/s|b/s)?")
_BITRATE_UNITS = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}
MIN_SIDE, MAX_SIDE = 16, 4096
MIN_FPS, MAX_FPS = 1.0, 240.0
MIN_BITRATE, MAX_BITRATE = 10_000, 1_000_000_000


def parse_size(text: str) -> tuple[int, int]:
    """``WxH``: even sides within 16..4096 (yuv420p halves both for chroma)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"expected WxH like 1280x720, got {text!r}")
    width, height = int(match[1]), int(match[2])
    for name, side in (("width", width), ("height", height)):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise argparse.ArgumentTypeError(
                f"{name} must be within {MIN_SIDE}..{MAX_SIDE}, got {text!r}"
            )
        if side % 2:
            raise argparse.ArgumentTypeError(f"{name} must be even (yuv420p), got {text!r}")
    return width, height


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def parse_fps(text: str) -> float:
    value = _number(text, "a frame rate")
    if not MIN_FPS <= value <= MAX_FPS:
        raise argparse.ArgumentTypeError(f"must be within {MIN_FPS:g}..{MAX_FPS:g}, got {text!r}")
    return value


def parse_seconds(text: str) -> float:
    value = _number(text, "a number of seconds")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def parse_jitter(text: str) -> str:
    """``realtime``, ``smooth`` or ``fixed:MS``."""
    from stream.errors import StreamUsageError
    from stream.jitter import JitterMode

    try:
        return str(JitterMode.parse(text))
    except StreamUsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_bitrate(text: str) -> int | None:
    """``auto`` (None: follow the rate controller), or ``4M``, ``800k``, ``2500000`` (bit/s;
    k, M, G are powers of 1000)."""
    if text.strip() == "auto":
        return None
    match = _BITRATE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected auto or a bitrate like 4M, 800k or 2500000, got {text!r}"
        )
    value = round(float(match[1]) * _BITRATE_UNITS[match[2].lower()])
    if not MIN_BITRATE <= value <= MAX_BITRATE:
        raise argparse.ArgumentTypeError(f"must be within 10k..1G bit/s, got {text!r}")
    return value


def _host_port(text: str, *, allow_port_zero: bool) -> tuple[str, int]:
    # transport.udp only; importing the transport package here would pull in its engines.
    from transport.udp import parse_host_port

    try:
        host, port = parse_host_port(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT like 127.0.0.1:5000, got {text!r}"
        ) from None
    if port == 0 and not allow_port_zero:
        raise argparse.ArgumentTypeError(f"port 0 is not a destination, got {text!r}")
    return host, port


def parse_listen(text: str) -> tuple[str, int]:
    return _host_port(text, allow_port_zero=True)


def parse_destination(text: str) -> tuple[str, int]:
    return _host_port(text, allow_port_zero=False)


# -- the parser -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (``framewire: error: ...``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix(PROG).strip()
        sys.stderr.write(f"{PROG}: error: {where + ': ' if where else ''}{message}\n")
        sys.exit(EXIT_USAGE)


DEMO_EPILOG = """\
--json prints one object with, among others: frames_sent, frames_received, frames_decoded,
frames_missing, keyframes, frame_latency_ms {p50,p95,p99,max} (capture -> decoded picture),
encode_ms_p50, decode_ms_p50, transport_ms_p50 (encoded frame handed to send() -> whole
message delivered), bitrate_kbps (actual), srtt_ms, packets_lost, retransmissions, size, fps,
seconds, loop. Both children use this machine's monotonic clock, so latencies need no offset.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="framewire: low-latency video and messages over an encrypted UDP transport.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="auto",
        help="event loop: uvloop where installed (auto, the default) or asyncio's own",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # Accepted after the command too (`framewire bench --loop asyncio`); SUPPRESS keeps the
    # global value when it is not repeated there.
    loop_again = _Parser(add_help=False)
    loop_again.add_argument("--loop", choices=LOOPS, default=argparse.SUPPRESS, help="as above")

    def output_flags(command: argparse.ArgumentParser, *, child: bool) -> None:
        command.add_argument(
            "--json", action="store_true", help="print the result as JSON on stdout"
        )
        command.add_argument(
            "--quiet", action="store_true", help="no live stats line and no summary on stderr"
        )
        if child:
            # For `framewire demo`: JSON lines on stdout ({"ready": port}, {"progress": ...},
            # {"result": ...}), and exit when stdin reaches EOF (the parent has gone).
            command.add_argument("--progress-json", action="store_true", help=argparse.SUPPRESS)
            command.add_argument("--parent-pipe", action="store_true", help=argparse.SUPPRESS)

    def video_flags(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--size",
            type=parse_size,
            metavar="WxH",
            help="default 1280x720 (a file source: the file's size)",
        )
        command.add_argument("--fps", type=parse_fps, default=30.0, help="1..240, default 30")
        command.add_argument(
            "--bitrate",
            type=parse_bitrate,
            default=4_000_000,
            help="H.264 bitrate: auto (follow the link's delay-based rate control, up to "
            "8M) or fixed, like 4M, 800k or 2500000 bit/s (default 4M)",
        )

    receive = commands.add_parser(
        "receive",
        parents=[loop_again],
        help="accept one sender and decode its video",
        description="Listen, accept one session, decode its video until the sender closes it.",
    )
    receive.add_argument(
        "--listen",
        type=parse_listen,
        required=True,
        metavar="HOST:PORT",
        help="address to listen on; port 0 picks a free one (printed on stderr)",
    )
    receive.add_argument(
        "--seconds",
        type=parse_seconds,
        help="stop this long after the sender connects (default: when the sender closes)",
    )
    receive.add_argument(
        "--accept-timeout",
        type=parse_seconds,
        metavar="SECONDS",
        help="give up when no sender connects within this long (default: wait)",
    )
    receive.add_argument(
        "--jitter",
        type=parse_jitter,
        default="smooth",
        metavar="MODE",
        help="playout: realtime (lowest delay, late frames dropped), smooth (few stalls, "
        "delay as low as that allows; the default) or fixed:MS (MS after the sender)",
    )
    receive.add_argument(
        "--sink",
        default="discard",
        metavar="discard|FILE",
        help="where the pictures go: discard (the default) or a video file (MP4, MKV, ... "
        "by extension), written with libx264",
    )
    receive.add_argument(
        "--sink-fps",
        type=parse_fps,
        default=30.0,
        metavar="N",
        help="the frame rate a file sink is written at (default 30)",
    )
    receive.add_argument("--frame-log", action="store_true", help=argparse.SUPPRESS)
    output_flags(receive, child=True)
    receive.set_defaults(run=_cmd_receive)

    send = commands.add_parser(
        "send",
        parents=[loop_again],
        help="send a test pattern or a video file as H.264",
        description="Connect to a receiver and send H.264 video (the test pattern or a "
        "file), then close.",
    )
    send.add_argument(
        "--source",
        default="testsrc",
        metavar="testsrc|FILE",
        help="testsrc (a moving pattern with the frame number in its pixels; the default) "
        "or a video file, played in real time",
    )
    send.add_argument("--repeat", action="store_true", help="start a file source again at its end")
    send.add_argument("--to", type=parse_destination, required=True, metavar="HOST:PORT")
    send.add_argument(
        "--seconds", type=parse_seconds, help="how long to send (default: until Ctrl-C)"
    )
    video_flags(send)
    send.add_argument(
        "--frame-deadline",
        type=parse_seconds,
        default=0.1,
        metavar="SECONDS",
        help="a frame not delivered within this long is abandoned (default 0.1)",
    )
    output_flags(send, child=True)
    send.set_defaults(run=_cmd_send)

    demo = commands.add_parser(
        "demo",
        parents=[loop_again],
        help="receiver and sender as two processes on 127.0.0.1",
        description="Stream the test pattern between two processes on 127.0.0.1 and report "
        "frame latency, transport latency and losses.",
        epilog=DEMO_EPILOG,
    )
    demo.add_argument("--seconds", type=parse_seconds, default=5.0, help="default 5")
    video_flags(demo)
    demo.add_argument(
        "--scenario",
        metavar="NAME",
        help="run the video through `framewire impair` with this link (see bench --list)",
    )
    demo.add_argument("--traces", metavar="DIR", help="the shared traces folder")
    demo.add_argument(
        "--trace", metavar="FILE", help="run the video through a relay replaying this trace"
    )
    demo.add_argument("--frame-log", action="store_true", help=argparse.SUPPRESS)
    output_flags(demo, child=False)
    demo.set_defaults(run=_cmd_demo)

    bench = commands.add_parser(
        "bench",
        parents=[loop_again],
        help="latency benchmarks: loopback against raw UDP, or named link scenarios",
        description="Without SCENARIO: message latency and goodput on loopback, framewire "
        "against raw UDP on the same event loop, in separate processes. With SCENARIO names: "
        "message and video-frame latency through each scenario's impaired link (simulated, "
        "or through the real relay with --real), next to raw UDP through the same link.",
    )
    bench.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="see --list")
    bench.add_argument("--list", action="store_true", help="list the scenarios, one per line")
    bench.add_argument("--quick", action="store_true", help="the CI size")
    bench.add_argument("--out", metavar="DIR", help="write JSON, summary.md and PNG plots here")
    bench.add_argument(
        "--real", action="store_true", help="through the UDP relay on loopback (not simulated)"
    )
    bench.add_argument(
        "--compare",
        metavar="SYSTEMS",
        default="auto",
        help="anchors to run through the relay too: aiortc,srt (installed when missing), "
        "none, or auto (the default: those already installed)",
    )
    bench.add_argument("--trace", metavar="FILE", help="a scenario replaying this trace file")
    bench.add_argument("--traces", metavar="DIR", help="the shared traces folder")
    bench.add_argument("--seed", type=int, default=1, help="impairment seed (1)")
    bench.add_argument(
        "--fidelity",
        action="store_true",
        help="check the relay against the model (delay, jitter, loss, rate, spikes, overhead)",
    )
    bench.add_argument(
        "--link",
        action="store_true",
        help="check the link estimate (stats().link) on the simulated link: accuracy, "
        "reaction time of the quality class, stability, spike detection",
    )
    bench.add_argument(
        "--rate",
        action="store_true",
        help="check rate control on the simulated link: congested-5mbps utilisation and "
        "queueing, a capacity drop, adaptive vs fixed 5 Mbit/s on the cellular traces",
    )
    output_flags(bench, child=False)
    bench.set_defaults(run=_cmd_bench)

    impair = commands.add_parser(
        "impair",
        help="a UDP relay that impairs the link between two peers",
        description="Relay UDP between peers sending to --listen and the peer at --to, "
        "through the impairment model (delay, jitter, loss, bursts, reordering, duplication, "
        "rate limit, spikes, recorded traces). A live counter line on stderr; a JSON summary "
        "on stdout when it stops (Ctrl-C, SIGTERM or --duration).",
    )
    from bench.relay import add_relay_arguments

    add_relay_arguments(impair)
    impair.set_defaults(run=_cmd_impair)
    return parser


# -- commands -------------------------------------------------------------------------------------


def _install_loop(name: str) -> str:
    from bench import BenchError, install_loop

    try:
        return install_loop(name)
    except BenchError as exc:
        raise CommandError(str(exc), exit_code=EXIT_USAGE) from exc


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, with SIGTERM cancelling the command like Ctrl-C does: sessions are
    closed (the peer learns at once instead of after its idle timeout), children stopped."""
    return asyncio.run(_cancel_on_sigterm(coro))


async def _cancel_on_sigterm(coro: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    try:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    except (NotImplementedError, RuntimeError, ValueError):  # no signals here (Windows)
        return await coro
    try:
        return await coro
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _check_pattern_size(command: str, size: tuple[int, int]) -> None:
    from stream.stamp import STAMP_HEIGHT_PX, STAMP_WIDTH_PX

    width, height = size
    if width < STAMP_WIDTH_PX or height < STAMP_HEIGHT_PX:
        raise CommandError(
            f"{command}: argument --size: the test pattern needs at least "
            f"{STAMP_WIDTH_PX}x{STAMP_HEIGHT_PX} (its frame stamp), got {width}x{height}",
            exit_code=EXIT_USAGE,
        )


def _exit_with_parent() -> None:
    """Exit at once when stdin reaches EOF: the demo process that started us has gone."""

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(EXIT_FAILURE)

    threading.Thread(target=watch, name="parent-pipe", daemon=True).start()


class _Progress:
    """Routes live progress: a stats line on stderr, JSON lines for a parent, or nothing."""

    def __init__(self, args: argparse.Namespace, render: Callable[[dict[str, Any]], str]):
        self._machine = bool(getattr(args, "progress_json", False))
        self._line = LiveLine(enabled=not (args.quiet or self._machine))
        self._render = render

    def __call__(self, progress: dict[str, Any]) -> None:
        if self._machine:
            emit_json_line({"progress": progress})
        else:
            self._line.update(self._render(progress))

    def finish(self) -> None:
        self._line.finish()


def _finish(args: argparse.Namespace, result: dict[str, Any], summary: list[str]) -> None:
    if not args.quiet:
        sys.stderr.write("\n".join(summary) + "\n")
        sys.stderr.flush()
    if args.json:
        emit_json(result)
    if getattr(args, "progress_json", False):
        emit_json_line({"result": result})


def _cmd_receive(args: argparse.Namespace) -> int:
    from framewire import video

    if args.parent_pipe:
        _exit_with_parent()
    options = video.ReceiveOptions(
        listen=args.listen,
        seconds=args.seconds,
        accept_timeout_s=args.accept_timeout,
        frame_log=args.frame_log,
        jitter=args.jitter,
        sink=args.sink,
        sink_fps=args.sink_fps,
    )
    requested_port = args.listen[1]

    def on_ready(addr: tuple[str, int]) -> None:
        if args.progress_json:
            emit_json_line({"ready": addr[1]})
        if not args.quiet or requested_port == 0:
            sys.stderr.write(f"listening on {video.format_addr(addr)}\n")
            sys.stderr.flush()

    progress = _Progress(args, receive_progress)
    try:
        result = _run(video.receive(options, on_ready=on_ready, on_progress=progress))
    finally:
        progress.finish()
    result["loop"] = args.loop
    _finish(args, result, receive_summary(result))
    if result["error"]:
        raise CommandError(result["error"])
    return EXIT_OK


def _cmd_send(args: argparse.Namespace) -> int:
    from framewire import video

    pattern = args.source == "testsrc"
    if pattern:
        _check_pattern_size("send", args.size or DEFAULT_SIZE)
    if args.parent_pipe:
        _exit_with_parent()
    width, height = args.size or DEFAULT_SIZE
    options = video.SendOptions(
        to=args.to,
        seconds=args.seconds,
        width=width,
        height=height,
        fps=args.fps,
        bitrate_bps=args.bitrate,
        frame_deadline_s=args.frame_deadline,
        source=args.source,
        loop=args.repeat,
        scale=args.size is not None,
    )
    progress = _Progress(args, send_progress)
    try:
        result = _run(video.send(options, on_progress=progress))
    finally:
        progress.finish()
    result["loop"] = args.loop
    _finish(args, result, send_summary(result))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from framewire.demo import DemoOptions, run_demo

    _check_pattern_size("demo", args.size or DEFAULT_SIZE)
    width, height = args.size or DEFAULT_SIZE
    options = DemoOptions(
        seconds=args.seconds,
        width=width,
        height=height,
        fps=args.fps,
        bitrate_bps=args.bitrate,
        loop=args.loop,
        relay_args=_demo_relay_args(args),
        scenario=args.scenario or (f"trace/{Path(args.trace).name}" if args.trace else None),
        frame_log=args.frame_log,
    )
    line = LiveLine(enabled=not args.quiet)

    def on_progress(sender: dict[str, Any] | None, receiver: dict[str, Any] | None) -> None:
        line.update(demo_progress(sender, receiver))

    try:
        result = _run(run_demo(options, on_progress))
    finally:
        line.finish()
    if args.json:
        emit_json(result)
    else:
        sys.stdout.write("\n".join(demo_summary(result)) + "\n")
    return EXIT_OK


def _demo_relay_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The relay options for ``demo --scenario`` (checked here, so a typo fails at once)."""

    from bench.scenarios import file_trace_scenario, scenario

    if args.scenario and args.trace:
        raise CommandError("give --scenario or --trace, not both", exit_code=EXIT_USAGE)
    if args.trace:
        return file_trace_scenario(Path(args.trace)).relay_args
    if not args.scenario:
        return ()
    return scenario(args.scenario, Path(args.traces) if args.traces else None).relay_args


def _bench_say(quiet: bool) -> Callable[[str], None]:
    """The progress lines of ``framewire bench``: ``bench: ...`` on stderr unless --quiet."""

    def say(text: str) -> None:
        if not quiet:
            sys.stderr.write(f"bench: {text}\n")
            sys.stderr.flush()

    return say


def _cmd_impair(args: argparse.Namespace) -> int:
    from bench.relay import run_relay

    return run_relay(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from bench import BenchPlan, measure

    if args.fidelity:
        return _cmd_bench_fidelity(args)
    if args.link:
        return _cmd_bench_link(args)
    if args.rate:
        return _cmd_bench_rate(args)
    if args.list or args.scenarios or args.trace:
        return _cmd_bench_scenarios(args)

    plan = BenchPlan.quick(args.loop) if args.quick else BenchPlan.full(args.loop)

    say = _bench_say(args.quiet)
    report = measure(plan, say)
    if args.json:
        emit_json(report)
    else:
        sys.stdout.write("\n".join(bench_table(report)) + "\n")
    return EXIT_OK


def _cmd_bench_link(args: argparse.Namespace) -> int:
    from bench import linkbench

    say = _bench_say(args.quiet)
    result = linkbench.run(args.seed, args.quick, say)
    return _finish_checks(
        args, "link", result, linkbench.plot, "link-reaction.png", linkbench.table, ("timelines",)
    )


def _finish_checks(
    args: argparse.Namespace,
    name: str,
    result: dict[str, Any],
    plot: Callable[[dict[str, Any], Path], None],
    png: str,
    table: Callable[[dict[str, Any]], list[str]],
    bulky: tuple[str, ...],
) -> int:
    """Write ``NAME.json`` and the plot under ``--out``, print the JSON (without the
    ``bulky`` keys) or the table, and fail when a check failed."""
    out = Path(args.out) if args.out else Path("bench-results")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out / png)
    if args.json:
        emit_json({k: v for k, v in result.items() if k not in bulky})
    else:
        sys.stdout.write("\n".join(table(result)) + "\n")
    _bench_say(args.quiet)(f"wrote {out}/{name}.json and {out}/{png}")
    failed = [c["name"] for c in result["checks"] if not c["passed"]]
    if failed:
        raise CommandError(f"{name}: {len(failed)} check(s) failed: {failed[0]}")
    return EXIT_OK


def _traces_dir(args: argparse.Namespace) -> Path | None:
    """``--traces DIR`` (which must exist), or None for the default folder."""
    if not args.traces:
        return None
    traces = Path(args.traces)
    if not traces.is_dir():
        raise CommandError(f"traces folder {args.traces} is missing", exit_code=EXIT_USAGE)
    return traces


def _cmd_bench_rate(args: argparse.Namespace) -> int:
    from bench import ratebench

    say = _bench_say(args.quiet)
    traces = _traces_dir(args)
    result = ratebench.run(args.seed, args.quick, traces, say)
    if not result["traces"]:
        say(
            "rate: no shared traces folder (../shared/traces; pass --traces DIR): "
            "the cellular rows are skipped"
        )
    return _finish_checks(
        args, "rate", result, ratebench.plot, "rate.png", ratebench.summary, ("congested", "drop")
    )


def _cmd_bench_fidelity(args: argparse.Namespace) -> int:

    from bench import fidelity, report

    packets = 2000 if args.quick else 5000

    say = _bench_say(args.quiet)
    say(f"fidelity: {packets} datagrams per check through the relay and the model")
    entries = fidelity.measure(packets, args.seed)
    overhead = fidelity.relay_overhead(packets, args.seed)
    out = Path(args.out) if args.out else Path("bench-results")
    out.mkdir(parents=True, exist_ok=True)
    results = [fidelity.as_result(e, args.seed) for e in entries]
    for result in results:
        report.write_scenario(result, out)
    summary = {
        "out": str(out),
        "checks": [{k: v for k, v in e.items() if k != "series"} for e in entries],
        "relay_overhead": overhead,
    }
    (out / "fidelity.json").write_text(json.dumps(summary, indent=2) + "\n")
    failed = [k for e in entries for k, ok in e["verdicts"].items() if not ok]
    if not overhead["passed"]:
        failed.append("relay adds at most 0.3 ms p50")
    if args.json:
        emit_json(summary)
    else:
        for e in entries:
            r, m = e["relay"], e["sim"]
            sys.stdout.write(
                f"{e['check']:24s} relay: delay {r['delay_mean_ms']} ms (sd {r['delay_sd_ms']}) "
                f"loss {r['loss_pct']}% rate {r['delivered_mbps']} Mbit/s | sim: delay "
                f"{m['delay_mean_ms']} ms (sd {m['delay_sd_ms']}) loss {m['loss_pct']}% rate "
                f"{m['delivered_mbps']} Mbit/s\n"
            )
            for what, ok in e["verdicts"].items():
                sys.stdout.write(f"    {'ok  ' if ok else 'FAIL'} {what}\n")
        sys.stdout.write(
            f"relay overhead: p50 {overhead['relay_p50_ms']} ms vs direct "
            f"{overhead['direct_p50_ms']} ms: +{overhead['added_p50_ms']} ms\n"
        )
    say(f"wrote {out}/fidelity.json and plots")
    if failed:
        raise CommandError(f"fidelity: {len(failed)} check(s) failed: {failed[0]}")
    return EXIT_OK


def _cmd_bench_scenarios(args: argparse.Namespace) -> int:

    from bench import report, suite
    from bench.scenarios import catalogue, file_trace_scenario, scenario

    traces = _traces_dir(args)
    if args.list:
        scenarios = catalogue(traces)
        if traces is None and not any(s.name.startswith("trace/") for s in scenarios):
            sys.stderr.write(
                "bench: no shared traces folder (../shared/traces): trace "
                "scenarios are not listed (pass --traces DIR)\n"
            )
        sys.stdout.write("".join(s.line() + "\n" for s in scenarios))
        return EXIT_OK
    chosen = [scenario(name, traces) for name in args.scenarios]
    if args.trace:
        chosen.append(file_trace_scenario(Path(args.trace)))
    compare = [c for c in args.compare.split(",") if c]
    unknown = sorted(set(compare) - {"aiortc", "srt", "auto", "none"})
    if unknown:
        raise CommandError(
            f"--compare: unknown system {unknown[0]!r} (aiortc, srt, none, auto)",
            exit_code=EXIT_USAGE,
        )
    plan = suite.Plan.quick(args.seed) if args.quick else suite.Plan.full(args.seed)

    say = _bench_say(args.quiet)
    results = suite.run(
        chosen, plan, real=args.real, compare=compare, auto="auto" in compare, say=say
    )
    out = Path(args.out) if args.out else Path("bench-results")
    out.mkdir(parents=True, exist_ok=True)
    for result in results:
        report.write_scenario(result, out)
    summary = report.write_summary(results, out)
    say(f"wrote {summary} and per-scenario JSON and PNG plots in {out}/")
    if args.json:
        emit_json({"out": str(out), "results": [suite.without_series(r) for r in results]})
    else:
        sys.stdout.write("\n".join(report.summary_table(results)) + "\n")
    return EXIT_OK


# -- the error boundary ---------------------------------------------------------------------------


def _error(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    sys.stderr.flush()


def _describe(exc: BaseException) -> str:
    """One line for an expected failure: its message, never a repr or a traceback."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror[0].lower()}{exc.strerror[1:]}{where}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (the console script exits with it)."""
    from bench import BenchError
    from stream.errors import StreamError
    from transport.errors import TransportError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.loop = _install_loop(args.loop)
        return int(args.run(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except asyncio.CancelledError:  # SIGTERM, see _run
        return EXIT_TERMINATED
    except CommandError as exc:
        _error(str(exc))
        return exc.exit_code
    except BrokenPipeError:
        # stdout's reader went away (`| head`): nothing more to say to anyone.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except ValueError as exc:  # an argument the layers below refused
        _error(_describe(exc))
        return EXIT_USAGE
    except (TransportError, StreamError, BenchError, OSError) as exc:
        _error(_describe(exc))
        return EXIT_FAILURE
    except Exception as exc:
        if os.environ.get("FRAMEWIRE_DEBUG"):
            traceback.print_exc()
        _error(
            f"internal error: {type(exc).__name__}: {_describe(exc)} (FRAMEWIRE_DEBUG=1 shows more)"
        )
        return EXIT_FAILURE
