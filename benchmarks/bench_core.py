"""Core and loopback benchmarks, each beside its bare baseline measured in the same run.

    python benchmarks/bench_core.py [--quick]

Cases are interleaved (A, B, A, B ...) and the best of the repeats is kept, so drift on a shared machine cancels
out of the ratios; absolute figures on these machines move by up to 2x from run to run. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time
from collections.abc import Awaitable, Callable

from stoffelnet_core import codec
from stoffelnet_core.testing import local_network

PAYLOAD = b"x" * 64


def bench_codec(n: int) -> float:
    """Microseconds to frame and unframe one 64 B data envelope."""
    decoder = codec.FrameDecoder()
    encode = codec.encode_data
    feed = decoder.feed
    start = time.perf_counter()
    for i in range(n):
        feed(encode(0, i, None, PAYLOAD))
    return (time.perf_counter() - start) / n * 1e6


def bench_cbor_baseline(n: int) -> float:
    """Microseconds for the bare cbor2 dumps + loads of the same list (no framing, no checks)."""
    import cbor2

    dumps, loads = cbor2.dumps, cbor2.loads
    start = time.perf_counter()
    for i in range(n):
        loads(dumps([1, 0, i, None, PAYLOAD]))
    return (time.perf_counter() - start) / n * 1e6


async def _pump(send: Callable[[], Awaitable[object]], recv: Callable[[], Awaitable[object]], n: int) -> float:
    async def sender() -> None:
        for _ in range(n):
            await send()

    async def receiver() -> None:
        for _ in range(n):
            await recv()

    start = time.perf_counter()
    await asyncio.gather(sender(), receiver())
    return n / (time.perf_counter() - start)


async def bench_queue(n: int) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=65536)
    return await _pump(lambda: queue.put(PAYLOAD), queue.get, n)


async def bench_loopback(n: int) -> float:
    async with local_network(2) as lan:
        a, b = lan[0], lan[1]
        return await _pump(lambda: a.send(1, PAYLOAD), lambda: b.receive_from(0), n)


async def bench_self(n: int) -> float:
    async with local_network(1) as lan:
        a = lan[0]
        return await _pump(lambda: a.send(0, PAYLOAD), lambda: a.receive_from(0), n)


async def bench_rounds(parties: int, rounds: int) -> float:
    async with local_network(parties) as lan:
        start = time.perf_counter()
        for _ in range(rounds):
            await asyncio.gather(*(net.broadcast(PAYLOAD) for net in lan))
            for net in lan:
                for sender in range(parties):
                    await net.receive_from(sender)
        return rounds / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer messages and repeats")
    args = parser.parse_args()
    n = 50_000 if args.quick else 200_000
    repeats = 2 if args.quick else 4

    best: dict[str, float] = {}

    def keep(name: str, value: float, higher: bool = True) -> None:
        old = best.get(name)
        if old is None or (value > old if higher else value < old):
            best[name] = value

    for _ in range(repeats):
        keep("codec", bench_codec(n), higher=False)
        keep("cbor", bench_cbor_baseline(n), higher=False)
        keep("queue", asyncio.run(bench_queue(n)))
        keep("loopback", asyncio.run(bench_loopback(n)))
        keep("queue2", asyncio.run(bench_queue(n)))
        keep("self", asyncio.run(bench_self(n)))
        keep("rounds3", asyncio.run(bench_rounds(3, 2000 if args.quick else 5000)))
    queue = max(best["queue"], best["queue2"])

    rows = [
        ("codec: frame+unframe 64 B", "µs", best["codec"], best["cbor"], "bare cbor2 dumps+loads", "<= 5 µs"),
        ("loopback 64 B one way", "msg/s", best["loopback"], queue, "asyncio.Queue", ">= 200k msg/s"),
        ("self-delivery 64 B", "msg/s", best["self"], queue, "asyncio.Queue", ">= 0.5x Queue"),
        ("loopback 3-party rounds 64 B", "rounds/s", best["rounds3"], float("nan"), "-", "-"),
    ]
    print(f"machine: {platform.machine()} {platform.system()} Python {platform.python_version()}, {n} messages")
    head = f"{'case':32} {'value':>12} {'unit':>9} {'baseline':>12}  {'ratio':>6}  {'baseline is':24} target"
    print(head)
    print("-" * len(head))
    for case, unit, value, base, base_name, target in rows:
        ratio = value / base if base == base else float("nan")
        print(f"{case:32} {value:12,.2f} {unit:>9} {base:12,.2f}  {ratio:6.2f}  {base_name:24} {target}")


if __name__ == "__main__":
    main()
