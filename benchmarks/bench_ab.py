"""Old code against new, interleaved in one run: `stoffelnet bench`'s in-process cases for two or more source trees,
each beside the same bare baseline: medians, and the median of each repeat's paired ratio.

    python benchmarks/bench_ab.py --tree before=/tmp/before --tree after=. [--transport tcp-tls] [--case "round trip"]
        [--repeats 3] [--scale 1.0]

A tree is a folder holding the workspace's ``stoffelnet_core/src``, ``stoffelnet_tcp_tls/src``,
``stoffelnet_loopback/src`` and ``stoffelnet_quic/src`` (a checkout, or ``git archive HEAD | tar -x -C
/tmp/before``). Every measurement runs in a fresh process with that tree first on ``PYTHONPATH``; the trees and the
baseline alternate, the order reversed every other repeat, and the ratios are the medians of each repeat's pairs, so
drift on a shared machine cancels out of them (absolute figures move by up to 2x from run to run here).
``--scale`` multiplies the message counts (1.0: 2,000 round trips, 50,000 small messages, 2,000 of 64 KiB, 100 of
1 MiB, 2,000 rounds).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CASES = ["round trip", "one-way 64 B", "one-way 1 KiB", "one-way 64 KiB", "one-way 1 MiB", "rounds 3"]
PACKAGES = ("stoffelnet_core", "stoffelnet_tcp_tls", "stoffelnet_loopback", "stoffelnet_quic")


def measure(case: str, impl: str, transport: str, scale: float) -> list[float]:
    """One measurement of `case` (a prefix of a `bench._CASES` name) for stoffelnet or the baseline, here."""
    from stoffelnet_core import bench, plugins

    sizes = bench.Sizes(
        rtt=int(2000 * scale),
        small=int(50000 * scale),
        kib=int(50000 * scale),
        big=int(2000 * scale),
        huge=int(100 * scale),
        rounds=int(2000 * scale),
        parties=(3,),
        repeats=1,
    )
    chosen = next(c for c in bench._CASES if c.name.startswith(case))
    bench.warm_malloc()  # as `stoffelnet bench` does
    if impl == "baseline":
        found = {info.name: info for info in plugins.default_plugins().transports()}
        baseline = bench.find_baseline(transport, found[transport].transport)
        assert baseline is not None, f"{transport} has no baseline"
        open_mesh = baseline.open_mesh
    else:
        open_mesh = functools.partial(bench._stoffelnet_mesh, transport)
    return asyncio.run(bench._timed(chosen.measure(open_mesh, sizes)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR", help="a source tree (repeatable)")
    parser.add_argument("--case", action="append", help=f"a case name prefix (repeatable; default: {CASES})")
    parser.add_argument("--transport", default="tcp-tls")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.transport, args.scale)))
        return
    trees = [tuple(t.split("=", 1)) for t in args.tree] or [("current", "")]
    cases = args.case or CASES
    got: dict[tuple[str, str], list[float]] = {}  # (case, tree or "baseline") -> each repeat's figure
    for repeat in range(args.repeats):
        for case in cases:
            runs = [(name, "stoffelnet", folder) for name, folder in trees] + [("baseline", "baseline", "")]
            for name, impl, folder in reversed(runs) if repeat % 2 else runs:
                env = dict(os.environ)
                if folder:
                    env["PYTHONPATH"] = os.pathsep.join(str(Path(folder, p, "src").resolve()) for p in PACKAGES)
                command = [sys.executable, __file__, "--child", case, impl, "--transport", args.transport]
                done = subprocess.run([*command, "--scale", str(args.scale)], env=env, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"{name} {case}: {done.stderr[-2000:]}")
                got.setdefault((case, name), []).append(json.loads(done.stdout.strip().splitlines()[-1])[0])
    # As `stoffelnet bench`: each repeat's trees and baseline ran back to back; the median of the paired ratios.
    from stoffelnet_core import bench

    for case in cases:
        base = got[(case, "baseline")]
        cells = []
        for name, _ in trees:
            mine = got[(case, name)]
            paired = bench.paired_ratio(mine, base)
            cells.append(f"{name} {statistics.median(mine):,.1f} ({paired:.3f}x)")
        print(f"{args.transport} {case:15} baseline {statistics.median(base):,.1f} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
