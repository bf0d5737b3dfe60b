"""Loopback's bare baseline: an `asyncio.Queue` per direction of every pair, in this process.

The same shape as a transport package's ``baseline`` module (`NAME` and `open_mesh`), kept in core because the
loopback transport is the reference implementation and the baseline is the standard library's own queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence

from ._cases import Link

__all__ = ["NAME", "open_mesh"]

NAME = "asyncio.Queue"
"""What the baseline is, for the table."""

_MAXSIZE = 65536  # messages per queue: bounded, as the transports are, but never the bottleneck here


@contextlib.asynccontextmanager
async def open_mesh(n: int) -> AsyncIterator[Sequence[Mapping[int, Link]]]:
    """`n` parties joined pairwise by queues; ``ends[me][peer]`` is ``(send, recv)`` on me's side of the link."""
    queues: dict[tuple[int, int], asyncio.Queue[bytes]] = {
        (a, b): asyncio.Queue(maxsize=_MAXSIZE) for a in range(n) for b in range(n) if a != b
    }
    yield [{p: (queues[(me, p)].put, queues[(p, me)].get) for p in range(n) if p != me} for me in range(n)]
