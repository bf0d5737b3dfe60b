"""tcp-tls benchmarks: stoffelnet over tcp-tls beside a bare asyncio TLS baseline, measured in the same run.

    python benchmarks/bench_tcp_tls.py [--quick] [--no-procs] [--profile]

Both sides use the same keys (ECDSA P-256, `keys.generate_identity`, in a temp folder), the same `ssl.SSLContext`
settings (the transport's own `_context`: mutual TLS 1.3, pinned self-signed certificates, ALPN) and the same
socket options. The bare baseline is what a competent hand-written asyncio program would do: one connection per
pair, 4-byte length-prefixed messages, writes coalesced per loop turn into one ``transport.write`` (one TLS record
per 16 KiB instead of one per chunk), reads parsed in place by a `BufferedProtocol`, backpressure by a pending
buffer limit (256 KiB on one loop, 1 MiB across processes) and `pause_writing`, reading paused above 1 MiB of
unread messages.

Modes (the "mode" column): ``1 proc`` runs both ends of every connection in this process on one event loop and
one core (as `local_network` does), the bare baseline the same way; ``2 procs`` puts the receiver in a child process
(one-way cases only; the sender times from its first message to the receiver's acknowledgement of the last).
Cases are interleaved (stoffelnet, bare, stoffelnet, bare ...) and the best repeat is kept, so drift on a shared
machine cancels out of the ratios; absolute figures on these machines move by up to 2x from run to run.

``--profile`` then runs the stoffelnet side of every case that missed its target under cProfile (1 proc) and
prints the top functions by own time. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import io
import multiprocessing
import os
import platform
import pstats
import ssl
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

from stoffelnet_core import open_network
from stoffelnet_core.bench._cases import one_way_s, round_trips_us, rounds_s
from stoffelnet_core.bench.support import Keys, Recv, Send, free_ports, make_keys, stoffel_config, stoffel_mesh
from stoffelnet_tcp_tls.baseline import _HIGH_WATER_PROCS, BareConn, bare_dial, bare_ends, bare_listen, bare_mesh

SMALL = b"p" * 64
KIB = b"k" * 1024
BIG = b"B" * (64 * 1024)
ACK = b"!"
PARTIES = 3  # keys are made once for the largest case; pairs use parties 0 and 1


# -- one measurement of one case, in one process -------------------------------------------------------------------
class Sizes(NamedTuple):
    rtt: int  # timed 64 B round trips
    kib: int  # 1 KiB messages
    big: int  # 64 KiB messages
    rounds: int  # 3-party rounds


QUICK = Sizes(rtt=5000, kib=100_000, big=4000, rounds=4000)
FULL = Sizes(rtt=20_000, kib=400_000, big=16_000, rounds=15_000)


@contextlib.asynccontextmanager
async def _pair(impl: str, k: Keys, n: int) -> AsyncIterator[list[dict[int, tuple[Send, Recv]]]]:
    """`n` parties of `impl`; ``ends[me][peer]`` is ``(send, recv)`` for me's side of the link to peer."""
    if impl == "stoffelnet":
        ports = free_ports(n)
        async with stoffel_mesh([stoffel_config("tcp-tls", k, ports, i) for i in range(n)]) as ends:
            yield ends
    else:
        async with bare_mesh(k, n) as conns:
            yield [{p: bare_ends(conns, me, p) for p in range(n) if p != me} for me in range(n)]


async def run_case(impl: str, case: str, k: Keys, s: Sizes, profiler: cProfile.Profile | None = None) -> list[float]:
    """One measurement; returns the case's figures (rtt: median and p99 µs; others: one rate)."""
    parties = 3 if case == "rounds3" else 2
    async with asyncio.timeout(300), _pair(impl, k, parties) as ends:
        if profiler is not None:
            profiler.enable()
        try:
            if case == "rtt":
                return list(await round_trips_us(ends[0][1], ends[1][0], SMALL, s.rtt, warm=200))
            if case == "kib":
                return [s.kib / await one_way_s(ends[0][1][0], ends[1][0][1], KIB, s.kib, warm=2000)]
            if case == "big":
                return [s.big * len(BIG) / 2**20 / await one_way_s(ends[0][1][0], ends[1][0][1], BIG, s.big, warm=64)]
            if case == "rounds3":
                return [s.rounds / await rounds_s(ends, SMALL, s.rounds, warm=100)]
        finally:
            if profiler is not None:
                profiler.disable()
    raise ValueError(case)


# -- two processes: the receiver in a child --------------------------------------------------------------------------
def _child(impl: str, k: Keys, ports: list[int], warm: int, n: int) -> None:
    asyncio.run(_child_main(impl, k, ports, warm, n))


async def _child_main(impl: str, k: Keys, ports: list[int], warm: int, n: int) -> None:
    async with asyncio.timeout(300):
        if impl == "stoffelnet":
            async with open_network(stoffel_config("tcp-tls", k, ports, 1)) as net:
                await _child_receive(functools.partial(net.send, 0), functools.partial(net.receive_from, 0), warm, n)
            return
        accepted: asyncio.Queue[BareConn] = asyncio.Queue()
        server = await bare_listen(k, ports[1], accepted.put_nowait)
        conn = await accepted.get()
        await conn.ready
        await _child_receive(conn.send, conn.recv, warm, n)
        await conn.recv()  # the parent's goodbye: it has read our acknowledgement
        conn.close()
        server.close()


async def _child_receive(send: Send, recv: Recv, warm: int, n: int) -> None:
    for count in (warm, n):
        for _ in range(count):
            await recv()
        await send(ACK)


async def _parent_send(send: Send, recv: Recv, payload: bytes, warm: int, n: int) -> float:
    for _ in range(warm):
        await send(payload)
    await recv()
    start = time.perf_counter()
    for _ in range(n):
        await send(payload)
    await recv()
    return time.perf_counter() - start


async def _parent_main(impl: str, k: Keys, ports: list[int], payload: bytes, warm: int, n: int) -> float:
    async with asyncio.timeout(300):
        if impl == "stoffelnet":
            async with open_network(stoffel_config("tcp-tls", k, ports, 0)) as net:
                return await _parent_send(
                    functools.partial(net.send, 1), functools.partial(net.receive_from, 1), payload, warm, n
                )
        conn = await bare_dial(k, 0, ports[1], retry_for=30, high_water=_HIGH_WATER_PROCS)
        elapsed = await _parent_send(conn.send, conn.recv, payload, warm, n)
        await conn.send(b"bye")
        await asyncio.sleep(0.05)
        conn.close()
        return elapsed


def run_two_procs(impl: str, case: str, k: Keys, s: Sizes) -> list[float]:
    payload, n, warm = (KIB, s.kib, 2000) if case == "kib" else (BIG, s.big, 64)
    ports = free_ports(2)
    child = multiprocessing.get_context("spawn").Process(target=_child, args=(impl, k, ports, warm, n), daemon=True)
    child.start()
    try:
        elapsed = asyncio.run(_parent_main(impl, k, ports, payload, warm, n))
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
    if child.exitcode != 0:
        raise RuntimeError(f"{impl} {case} receiver process exited with {child.exitcode}")
    return [n / elapsed] if case == "kib" else [n * len(payload) / 2**20 / elapsed]


# -- the table -------------------------------------------------------------------------------------------------------
class Row(NamedTuple):
    case: str
    mode: str
    unit: str
    key: str
    figure: int  # which figure of the measurement
    higher: bool  # is a higher value better
    target: float | None  # ratio stoffelnet / bare; None: no target
    source: str  # which measured case


ROWS = [
    Row("64 B round trip, median", "1 proc", "µs", "rtt", 0, False, 1.15, "rtt"),
    Row("64 B round trip, p99", "1 proc", "µs", "rtt", 1, False, None, "rtt"),  # of the best median's repeat
    Row("1 KiB one way", "1 proc", "msg/s", "kib", 0, True, 0.9, "kib"),
    Row("64 KiB one way", "1 proc", "MiB/s", "big", 0, True, 0.9, "big"),
    Row("3-party all-to-all 64 B", "1 proc", "rounds/s", "rounds3", 0, True, 0.9, "rounds3"),
    Row("1 KiB one way", "2 procs", "msg/s", "kib2", 0, True, 0.9, "kib"),
    Row("64 KiB one way", "2 procs", "MiB/s", "big2", 0, True, 0.9, "big"),
]


def met(row: Row, ratio: float) -> str:
    if row.target is None:
        return "-"
    return "yes" if (ratio >= row.target if row.higher else ratio <= row.target) else "NO"


def target_text(row: Row) -> str:
    if row.target is None:
        return "-"
    return f"{'>=' if row.higher else '<='} {row.target:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer messages and repeats (about a minute)")
    parser.add_argument("--no-procs", action="store_true", help="skip the two-process one-way cases")
    parser.add_argument("--profile", action="store_true", help="cProfile the stoffelnet side of every missed case")
    args = parser.parse_args()
    sizes, repeats = (QUICK, 3) if args.quick else (FULL, 5)

    started = time.perf_counter()
    best: dict[tuple[str, str], list[float]] = {}

    def keep(impl: str, key: str, values: list[float], higher: bool) -> None:
        old = best.get((impl, key))
        if old is None or (values[0] > old[0] if higher else values[0] < old[0]):
            best[(impl, key)] = values

    with tempfile.TemporaryDirectory(prefix="stoffelnet-bench-") as folder:
        k = make_keys(Path(folder))
        for _ in range(repeats):
            for case, higher in (("rtt", False), ("kib", True), ("big", True), ("rounds3", True)):
                for impl in ("stoffelnet", "bare"):
                    keep(impl, case, asyncio.run(run_case(impl, case, k, sizes)), higher)
            if not args.no_procs:
                for case in ("kib", "big"):
                    for impl in ("stoffelnet", "bare"):
                        keep(impl, case + "2", run_two_procs(impl, case, k, sizes), True)
        elapsed = time.perf_counter() - started

        print(
            f"machine: {platform.machine()} {platform.system()} Python {platform.python_version()}, "
            f"{ssl.OPENSSL_VERSION}, {os.cpu_count()} cpus; best of {repeats}, interleaved; {elapsed:.0f} s"
        )
        print(
            f"sizes: {sizes.rtt} round trips, {sizes.kib} x 1 KiB, {sizes.big} x 64 KiB, {sizes.rounds} rounds; "
            "ratio = stoffelnet / bare"
        )
        head = f"{'case':26} {'mode':7} {'stoffelnet':>11} {'unit':>8} {'bare':>11} {'ratio':>6}  {'target':9} met?"
        print(head)
        print("-" * len(head))
        missed: list[str] = []
        for row in ROWS:
            if ("stoffelnet", row.key) not in best:
                continue
            value, base = best[("stoffelnet", row.key)][row.figure], best[("bare", row.key)][row.figure]
            ratio = value / base
            ok = met(row, ratio)
            if ok == "NO" and row.source not in missed:
                missed.append(row.source)
            print(
                f"{row.case:26} {row.mode:7} {value:11,.1f} {row.unit:>8} {base:11,.1f} {ratio:6.2f}  "
                f"{target_text(row):9} {ok}"
            )

        if args.profile:
            for case in missed:
                profiler = cProfile.Profile()
                asyncio.run(run_case("stoffelnet", case, k, QUICK, profiler))
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(25)
                print(f"\n== cProfile, stoffelnet side of {case!r} (1 proc, both ends, --quick sizes), by own time ==")
                print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))


if __name__ == "__main__":
    main()
