"""``framewire bench`` with scenarios, ``--list``, ``--fidelity`` and ``framewire demo
--scenario``: outputs a person and a machine can use, and one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.test_cli import assert_one_error_line, run

TRACES = Path(__file__).resolve().parent.parent.parent / "shared" / "traces"
BUILTIN = ("clean", "lan", "wifi-spikes", "lossy-5", "burst-loss", "congested-5mbps")


def test_list_shows_every_builtin_and_one_scenario_per_shared_trace() -> None:
    done = run("bench", "--list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert all(name in names for name in BUILTIN)
    assert all(" v1 " in line for line in lines)  # each line: name, version, description
    if TRACES.is_dir():
        files = [ln.split("\t")[0] for ln in (TRACES / "INDEX.tsv").read_text().splitlines()[1:]]
        assert sorted(n for n in names if n.startswith("trace/")) == sorted(
            f"trace/{f}" for f in files
        )


def test_list_says_when_the_traces_folder_is_missing(tmp_path: Path) -> None:
    env_missing = tmp_path / "nothing-here"
    done = run_env({"FRAMEWIRE_TRACES": str(env_missing)}, "bench", "--list")
    assert done.returncode == 0
    assert not any(line.startswith("trace/") for line in done.stdout.splitlines())
    assert "no shared traces folder" in done.stderr


def run_env(env: dict[str, str], *args: str) -> object:
    import subprocess
    import sys

    from tests.test_cli import ROOT

    return subprocess.run(
        [sys.executable, "-m", "framewire", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_scenarios_write_json_markdown_and_plots(tmp_path: Path) -> None:
    done = run(
        "bench",
        "--quick",
        "--compare",
        "none",
        "lan",
        "lossy-5",
        "--json",
        "--quiet",
        "--out",
        str(tmp_path),
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    by_name = {r["scenario"]: r for r in report["results"]}
    assert set(by_name) == {"lan", "lossy-5"}
    for name, result in by_name.items():
        systems = {(r["system"], r["workload"]) for r in result["rows"]}
        for workload in ("reliable", "unreliable", "latest", "video"):
            assert ("framewire", workload) in systems and ("raw-udp", workload) in systems
        assert all("series" not in r for r in result["rows"])  # printed without series
        saved = json.loads((tmp_path / f"{name}.json").read_text())
        assert all(len(r["series"]["send_s"]) == r["sent"] for r in saved["rows"])
        for plot in (f"{name}-cdf.png", f"{name}-timeline.png"):
            assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lossy = {(r["system"], r["workload"]): r for r in by_name["lossy-5"]["rows"]}
    assert lossy[("raw-udp", "unreliable")]["lost"] > 0  # the link really lost datagrams
    assert lossy[("framewire", "reliable")]["delivered"] == lossy[("framewire", "reliable")]["sent"]
    assert "| framewire | reliable |" in (tmp_path / "summary.md").read_text()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["bench", "no-such-scenario"], "unknown scenario 'no-such-scenario'"),
        (["bench", "trace/no/such.file"], "no trace 'no/such.file'"),
        (["bench", "--trace", "/no/such/trace"], "/no/such/trace"),
        (["bench", "--compare", "iperf", "lan"], "--compare: unknown system 'iperf'"),
        (["demo", "--scenario", "no-such-scenario"], "unknown scenario"),
        (["impair", "--listen", "127.0.0.1:0", "--to", "nowhere"], "--to"),
    ],
)
def test_bench_and_impair_errors_are_one_line(args: list[str], fragment: str) -> None:
    done = run(*args)
    assert done.returncode != 0
    assert_one_error_line(done.stderr, fragment)


@pytest.mark.loopback
def test_demo_through_the_relay_reports_the_link() -> None:
    done = run(
        "demo",
        "--seconds",
        "2",
        "--scenario",
        "lan",
        "--json",
        "--quiet",
        "--frame-log",
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["frames_received"] >= 0.95 * result["frames_sent"]
    relay = result["link"]["relay"]
    assert result["link"]["scenario"] == "lan"
    # The video really crossed the relay: at least one datagram per frame went through it.
    assert relay["forward"]["sent"] >= result["frames_sent"]
    assert relay["reverse"]["sent"] > 0
    assert len(result["frame_log"]) == result["frames_decoded"]
    # The lan link adds 1 ms each way; no frame can be faster than that.
    assert min(ms for _, ms in result["frame_log"]) > 1.0
