"""The bare baseline `stoffelnet bench` measures the tcp-tls transport against: hand-written asyncio TLS.

What a competent asyncio program would do with the same keys (ECDSA P-256 from `keys.generate_identity`) and the
same `ssl.SSLContext` settings and socket options as the transport (its own `_context` and `_configure_socket`):
one connection per pair, 4-byte length-prefixed messages, writes coalesced per loop turn into one
``transport.write`` (one TLS record per 16 KiB instead of one per chunk), reads parsed in place by a
`BufferedProtocol`, backpressure by a pending-bytes limit and `pause_writing`, reading paused above 1 MiB unread.

The harness finds this module by name (``<transport package>.baseline``) and uses `NAME`, `open_mesh` and (for the
multi-process rounds) `open_party`;
``benchmarks/bench_tcp_tls.py`` uses the pieces directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import cast

from stoffelnet_core.bench.support import HOST, Keys, Recv, Send, introduce, make_keys, meet
from stoffelnet_core.ids import ClientType

from .transport import ALPN, _configure_socket, _context

__all__ = ["NAME", "BareConn", "Keys", "bare_dial", "bare_listen", "bare_mesh", "make_keys", "open_mesh", "open_party"]

NAME = "bare asyncio TLS"
"""What the baseline is, for the table."""

# -- bare asyncio TLS ------------------------------------------------------------------------------------------------
# Pending bytes before a sender waits for the flush: the best of 64 KiB .. 4 MiB in each mode on the dev machine
# (both ends on one loop want small batches; a sender with a core of its own wants large ones).
_HIGH_WATER = 256 * 1024
_HIGH_WATER_PROCS = 1024 * 1024
_READ_HIGH = 1024 * 1024  # unread bytes before reading pauses (stoffelnet's default receive window)
_MIN_READ = 64 * 1024


class BareConn(asyncio.BufferedProtocol):
    """One TLS connection carrying 4-byte length-prefixed messages, coalesced per loop turn."""

    def __init__(self, high_water: int = _HIGH_WATER) -> None:
        self._loop = asyncio.get_running_loop()
        self._high_water = high_water
        self._transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self._buf = bytearray(256 * 1024)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        self._read_paused = False
        self._recv_waiter: asyncio.Future[None] | None = None
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush_scheduled = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._lost = False

    # asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # not isinstance: uvloop's are no subclasses
        self._transport = transport
        _configure_socket(transport)
        if not self.ready.done():
            self.ready.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        want = max(sizehint, _MIN_READ)
        if len(self._buf) - self._end < want:
            live = self._end - self._start
            if live + want > len(self._buf):
                new = bytearray(max(2 * len(self._buf), live + want))
                new[:live] = self._view[self._start : self._end]
                self._view.release()
                self._buf, self._view = new, memoryview(new)
            elif live:
                self._buf[:live] = self._buf[self._start : self._end]
            self._start, self._end = 0, live
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        end = self._end + nbytes
        pos = self._start
        buf, view, inbox = self._buf, self._view, self._inbox
        got = 0
        while end - pos >= 4:
            stop = pos + 4 + int.from_bytes(buf[pos : pos + 4], "big")
            if stop > end:
                break
            inbox.append(bytes(view[pos + 4 : stop]))
            got += stop - pos
            pos = stop
        if pos == end:
            pos = end = 0
        self._start, self._end = pos, end
        if got:
            self._inbox_bytes += got
            if self._inbox_bytes > _READ_HIGH and not self._read_paused and self._transport is not None:
                self._read_paused = True
                self._transport.pause_reading()
            waiter = self._recv_waiter
            if waiter is not None:
                self._recv_waiter = None
                if not waiter.done():
                    waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        for waiter in [self._recv_waiter, *self._drain_waiters]:
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionError("connection lost"))

    # application side
    async def send(self, data: bytes) -> None:
        self._out.append(len(data).to_bytes(4, "big"))
        self._out.append(data)
        self._out_size += len(data) + 4
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if self._out_size >= self._high_water:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._write_paused or not self._out or self._transport is None:
            return
        self._transport.write(b"".join(self._out))
        self._out = []
        self._out_size = 0
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def recv(self) -> bytes:
        inbox = self._inbox
        while not inbox:
            if self._lost:
                raise ConnectionError("connection lost")
            self._recv_waiter = waiter = self._loop.create_future()
            await waiter
        data = inbox.popleft()
        self._inbox_bytes -= len(data) + 4
        if self._read_paused and self._inbox_bytes <= _READ_HIGH // 2 and self._transport is not None:
            self._read_paused = False
            self._transport.resume_reading()
        return data

    def close(self) -> None:
        if self._transport is not None:
            if self._out:
                self._transport.write(b"".join(self._out))  # what was sent this turn, before the close
                self._out = []
            self._transport.close()


def bare_server_context(k: Keys, me: int = 1) -> ssl.SSLContext:
    return _context(server=True, cert=k.certs[me], key=k.keys[me], trusted=list(k.certs), alpn=list(ALPN.values()))


def bare_client_context(k: Keys, me: int) -> ssl.SSLContext:
    return _context(
        server=False, cert=k.certs[me], key=k.keys[me], trusted=list(k.certs), alpn=[ALPN[ClientType.SERVER]]
    )


async def bare_listen(k: Keys, port: int, on_conn: Callable[[BareConn], None], me: int = 1) -> asyncio.Server:
    ctx = bare_server_context(k, me)

    def factory() -> BareConn:
        conn = BareConn()
        on_conn(conn)
        return conn

    return await asyncio.get_running_loop().create_server(factory, HOST, port, ssl=ctx)


async def bare_dial(k: Keys, me: int, port: int, retry_for: float = 0.0, high_water: int = _HIGH_WATER) -> BareConn:
    loop = asyncio.get_running_loop()
    ctx = bare_client_context(k, me)
    deadline = time.monotonic() + retry_for
    while True:
        try:
            _, conn = await loop.create_connection(
                lambda: BareConn(high_water), HOST, port, ssl=ctx, server_hostname="stoffelnet"
            )
            return conn
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def bare_mesh(k: Keys, n: int) -> AsyncIterator[dict[tuple[int, int], BareConn]]:
    """Connections between every pair of `n` parties in this process: ``conns[(me, peer)]`` is me's end."""
    conns: dict[tuple[int, int], BareConn] = {}
    servers: list[asyncio.Server] = []
    try:
        for hi in range(1, n):
            accepted: asyncio.Queue[BareConn] = asyncio.Queue()
            server = await bare_listen(k, 0, accepted.put_nowait, hi)
            servers.append(server)
            port = server.sockets[0].getsockname()[1]
            for lo in range(hi):
                conns[(lo, hi)] = await bare_dial(k, lo, port)
                conns[(hi, lo)] = theirs = await accepted.get()  # dials are one at a time: accepted in order
                await theirs.ready
        # the TLS 1.3 server's session tickets and the like: let every handshake settle before timing
        await asyncio.sleep(0.01)
        yield conns
    finally:
        for conn in conns.values():
            conn.close()
        for server in servers:
            server.close()
            await server.wait_closed()


def bare_ends(conns: dict[tuple[int, int], BareConn], me: int, peer: int) -> tuple[Send, Recv]:
    conn = conns[(me, peer)]
    return conn.send, conn.recv


@contextlib.asynccontextmanager
async def open_party(k: Keys, me: int, ports: Sequence[int]) -> AsyncIterator[Mapping[int, tuple[Send, Recv]]]:
    """Party `me` of ``len(ports)`` parties, each in its own process: it listens on ``ports[me]``, dials every
    higher party (retrying while it starts), and says who it is in a first message; yields ``{peer: (send, recv)}``.
    The multi-process rounds of `stoffelnet bench` run this beside stoffelnet's own parties."""
    n = len(ports)
    conns: dict[int, BareConn] = {}
    arrived: asyncio.Queue[BareConn] = asyncio.Queue()
    server = await bare_listen(k, ports[me], arrived.put_nowait, me)
    try:
        for peer in range(me + 1, n):
            conns[peer] = conn = await bare_dial(k, me, ports[peer], retry_for=30.0, high_water=_HIGH_WATER_PROCS)
            await introduce(conn, me)
        yield await meet(me, conns, arrived)
    finally:
        for conn in conns.values():
            conn.close()
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def open_mesh(n: int) -> AsyncIterator[Sequence[Mapping[int, tuple[Send, Recv]]]]:
    """`n` parties connected pairwise over bare TLS in this process, keys in a temporary folder;
    ``ends[me][peer]`` is ``(send, recv)`` on me's side of the link to peer."""
    with tempfile.TemporaryDirectory(prefix="stoffelnet-bare-tls-") as folder:
        k = make_keys(Path(folder), max(n, 2))
        async with bare_mesh(k, n) as conns:
            yield [{p: bare_ends(conns, me, p) for p in range(n) if p != me} for me in range(n)]
