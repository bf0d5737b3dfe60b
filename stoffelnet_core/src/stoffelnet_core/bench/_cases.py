"""The cases, written once over ``(send, recv)`` links: stoffelnet and every baseline run the same code."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from .. import codec

__all__ = ["Link", "Mesh", "Recv", "Send", "codec_us", "one_way_s", "round_trips_us", "rounds_s"]

Send = Callable[[bytes], Awaitable[None]]
Recv = Callable[[], Awaitable[bytes]]
Link = tuple[Send, Recv]
"""One side of a link to one peer."""
Mesh = Sequence[Mapping[int, Link]]
"""``mesh[me][peer]``: me's side of its link to peer, for every pair of parties."""


async def round_trips_us(a: Link, b: Link, payload: bytes, n: int, warm: int) -> tuple[float, float]:
    """Median and p99 microseconds of `n` ping-pongs a -> b -> a (after `warm` untimed ones)."""
    send_a, recv_a = a
    send_b, recv_b = b

    async def echo() -> None:
        for _ in range(warm + n):
            await send_b(await recv_b())

    task = asyncio.create_task(echo())
    clock = time.perf_counter_ns
    samples: list[float] = []
    try:
        for i in range(warm + n):
            t0 = clock()
            await send_a(payload)
            await recv_a()
            if i >= warm:
                samples.append((clock() - t0) / 1000)
        await task
    finally:
        task.cancel()
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


async def one_way_s(send: Send, recv: Recv, payload: bytes, n: int, warm: int) -> float:
    """Seconds to move `n` messages from `send` to `recv` (after `warm` untimed ones), both on this loop."""

    async def sender(count: int) -> None:
        for _ in range(count):
            await send(payload)

    async def receiver(count: int) -> None:
        for _ in range(count):
            await recv()

    await asyncio.gather(sender(warm), receiver(warm))
    start = time.perf_counter()
    await asyncio.gather(sender(n), receiver(n))
    return time.perf_counter() - start


async def party_rounds(peers: Mapping[int, Link], payload: bytes, count: int) -> None:
    """One party's part of `count` all-to-all rounds: send to every peer, then receive from each."""
    links = list(peers.values())
    for _ in range(count):
        for send, _ in links:
            await send(payload)
        for _, recv in links:
            await recv()


async def rounds_s(mesh: Mesh, payload: bytes, rounds: int, warm: int) -> float:
    """Seconds for `rounds` all-to-all rounds of every party in `mesh` (one process)."""
    await asyncio.gather(*(party_rounds(p, payload, warm) for p in mesh))
    start = time.perf_counter()
    await asyncio.gather(*(party_rounds(p, payload, rounds) for p in mesh))
    return time.perf_counter() - start


def codec_us(payload: bytes, n: int) -> float:
    """Microseconds to frame and unframe one data envelope carrying `payload`."""
    decoder = codec.FrameDecoder()
    encode, feed = codec.encode_data, decoder.feed
    start = time.perf_counter()
    for i in range(n):
        feed(encode(0, i, None, payload))
    return (time.perf_counter() - start) / n * 1e6


def cbor_us(payload: bytes, n: int) -> float:
    """Microseconds for bare cbor2 ``dumps`` + ``loads`` of the same list (no framing, no checks): the codec's
    baseline."""
    import cbor2

    dumps, loads = cbor2.dumps, cbor2.loads
    start = time.perf_counter()
    for i in range(n):
        loads(dumps([1, 0, i, None, payload]))
    return (time.perf_counter() - start) / n * 1e6
