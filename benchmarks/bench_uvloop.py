"""stoffelnet on uvloop beside stoffelnet on asyncio's own loop, per transport, interleaved, in one run.

    python benchmarks/bench_uvloop.py [--quick] [--transport NAME ...]

The evidence behind `Transport.uvloop` (which transports `event_loop = "uvloop"` may run on uvloop): each case
of `stoffelnet bench` runs on asyncio (A), then on uvloop (B), A, B ..., and the best repeat is kept. `uvloop x`
is the speed on uvloop relative to asyncio (above 1: faster). Needs ``pip install 'stoffelnet-core[uvloop]'``.
tcp-tls is not measured: uvloop 0.23 does not complete the server side of ``start_tls``, which its listener uses.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import platform
from collections.abc import Callable
from importlib.metadata import version

import uvloop

from stoffelnet_core.bench import _CASES, FULL, QUICK, _stoffelnet_mesh, _timed

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {"asyncio": None, "uvloop": uvloop.new_event_loop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and 2 repeats")
    parser.add_argument("--transport", action="append", default=None, help="default: loopback and quic")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    transports = args.transport or ["loopback", "quic"]
    best: dict[tuple[str, str, str], float] = {}
    for _ in range(sizes.repeats):
        for transport in transports:
            for case in _CASES:
                for loop_name, factory in LOOPS.items():
                    mesh = functools.partial(_stoffelnet_mesh, transport)
                    with asyncio.Runner(loop_factory=factory) as runner:
                        value = runner.run(_timed(case.measure(mesh, sizes)))[0]
                    key = (transport, case.name, loop_name)
                    old = best.get(key)
                    if old is None or (value > old if case.better == "higher" else value < old):
                        best[key] = value
    print(f"machine: {platform.machine()}, CPython {platform.python_version()}, uvloop {version('uvloop')}")
    print()
    print("| transport | case | unit | asyncio | uvloop | uvloop x |")
    print("|---|---|---|---|---|---|")
    for transport in transports:
        for case in _CASES:
            a, u = best[(transport, case.name, "asyncio")], best[(transport, case.name, "uvloop")]
            gain = u / a if case.better == "higher" else a / u
            print(f"| {transport} | {case.name} | {case.unit} | {a:,.1f} | {u:,.1f} | {gain:.2f} |")


if __name__ == "__main__":
    main()
