"""framewire benchmarks: loopback latency and goodput against raw UDP, microbenchmarks."""

from bench.errors import BenchError
from bench.loopback import BenchPlan, measure
from bench.loops import install_loop, resolve_loop

__all__ = ["BenchError", "BenchPlan", "install_loop", "measure", "resolve_loop"]
