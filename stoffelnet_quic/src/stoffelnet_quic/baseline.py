"""The bare baseline `stoffelnet bench` measures the quic transport against: hand-written aioquic, one stream.

Same keys (ECDSA P-256 from `keys.generate_identity`) and, by default, the same `QuicConfiguration` as the
transport: it is taken from `QuicTransport._configuration` with the same options, so idle timeout,
`max_datagram_size`, congestion control and flow-control windows are equal by construction (``aioquic_defaults``
switches to `QuicConfiguration()`'s own defaults instead). What a competent aioquic program does: one connection per
pair, one bidirectional stream, 4-byte length-prefixed messages, writes coalesced per loop turn into one
``send_stream_data`` + ``transmit``, and a sender that waits while more than `_HIGH_WATER` bytes sit unacknowledged
(aioquic has no backpressure of its own).

The harness finds this module by name (``<transport package>.baseline``) and uses `NAME`, `open_mesh`, `VARIANTS`
(``quic[qh3]``: the transport on qh3, beside this same bare aioquic at the same settings) and `VARIANT_BASELINES`
(``quic[shipped]``, ``quic[qh3-shipped]``: the transport as shipped, beside bare aioquic at its own defaults);
``benchmarks/bench_quic.py`` uses the pieces directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import socket
import ssl
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent, StreamDataReceived

from stoffelnet_core.bench.support import HOST, Keys, Recv, Send, free_ports, introduce, make_keys, meet
from stoffelnet_core.ids import ClientType
from stoffelnet_core.transport import Credentials, TransportContext

from .transport import ALPN, QuicTransport

__all__ = [
    "DEFAULTS_NAME",
    "NAME",
    "VARIANTS",
    "VARIANT_BASELINES",
    "BareQuic",
    "Keys",
    "bare_configuration",
    "bare_dial",
    "bare_listen",
    "bare_mesh",
    "make_keys",
    "open_mesh",
    "open_mesh_at_defaults",
]

NAME = "bare aioquic, 1 stream"
"""What the baseline is, for the table."""

_QH3 = importlib.util.find_spec("qh3") is not None
VARIANTS: dict[str, dict[str, Any]] = {
    "shipped": {},
    **({"qh3": {"engine": "qh3"}, "qh3-shipped": {"engine": "qh3"}} if _QH3 else {}),
}
"""The transport's other engines, measured beside the same baseline (``stoffelnet bench`` rows ``quic[qh3]``), and
the transport as shipped (no options; ``engine = "qh3"``) beside bare aioquic at its own defaults (below)."""

DEFAULTS_NAME = "bare aioquic, 1 stream, QuicConfiguration() defaults"

STREAM = 0


def free_udp_ports(n: int) -> list[int]:
    return free_ports(n, socket.SOCK_DGRAM)


# -- bare aioquic ----------------------------------------------------------------------------------------------------
# Unacknowledged bytes in aioquic's stream buffer before a sender waits: 256 KiB and 1 MiB tie on the dev machine,
# 4 MiB is slower (both ends on one loop). stoffelnet's own bound is its 1 MiB receive window per stream.
_HIGH_WATER = 1024 * 1024


def bare_configuration(
    k: Keys, me: int, *, client: bool, options: Mapping[str, Any] | None = None, aioquic_defaults: bool = False
) -> QuicConfiguration:
    """The transport's own configuration for `options` (its ``[transport_options.quic]``; ``engine`` aside: this is
    aioquic), or with `aioquic_defaults` `QuicConfiguration()`'s own defaults with our keys."""
    alpn = [ALPN[ClientType.SERVER]] if client else list(ALPN.values())
    if aioquic_defaults:
        config = QuicConfiguration(
            is_client=client, alpn_protocols=alpn, verify_mode=ssl.CERT_NONE, server_name="stoffelnet"
        )
        config.load_cert_chain(k.certs[me], k.keys[me])
        return config
    # The same QUIC settings on aioquic, whatever engine `options` name (the bare side is aioquic by definition).
    same = {key: value for key, value in (options or {}).items() if key != "engine"}
    context = TransportContext(options=same, credentials=Credentials(k.certs[me], k.keys[me]))
    configuration: QuicConfiguration = QuicTransport(context)._configuration(client=client, alpn=alpn, host=HOST)
    return configuration


class BareQuic(QuicConnectionProtocol):
    """One QUIC connection carrying 4-byte length-prefixed messages on stream 0, writes coalesced per loop turn."""

    def __init__(self, quic: QuicConnection, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self._buf = bytearray()
        self._inbox: deque[bytes] = deque()
        self._recv_waiter: asyncio.Future[None] | None = None
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush_scheduled = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._lost = False
        self._greeted = quic.configuration.is_client  # the server waits for the client's empty hello

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self._data(event.data)
        elif isinstance(event, HandshakeCompleted):
            if self._quic.configuration.is_client:
                self._quic.send_stream_data(STREAM, b"\0\0\0\0")  # opens stream 0 with an empty hello
                self.transmit()
                self.ready.set_result(None)
        elif isinstance(event, ConnectionTerminated):
            self._lost = True
            for waiter in [self._recv_waiter, *self._drain_waiters]:
                if waiter is not None and not waiter.done():
                    waiter.set_exception(ConnectionError("connection lost"))

    def _data(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, end, inbox = 0, len(buf), self._inbox
        while end - pos >= 4:
            stop = pos + 4 + int.from_bytes(buf[pos : pos + 4], "big")
            if stop > end:
                break
            if self._greeted:
                inbox.append(bytes(buf[pos + 4 : stop]))
            else:
                self._greeted = True
                self.ready.set_result(None)
            pos = stop
        del buf[:pos]
        waiter = self._recv_waiter
        if inbox and waiter is not None:
            self._recv_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _unacked(self) -> int:
        stream = self._quic._streams.get(STREAM)
        return len(stream.sender._buffer) if stream is not None else 0

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        super().datagram_received(data, addr)
        if self._drain_waiters and self._unacked() < _HIGH_WATER:
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def send(self, data: bytes) -> None:
        self._out.append(len(data).to_bytes(4, "big"))
        self._out.append(data)
        self._out_size += len(data) + 4
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if self._out_size + self._unacked() >= _HIGH_WATER:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out or self._lost:
            return
        self._quic.send_stream_data(STREAM, b"".join(self._out))
        self._out = []
        self._out_size = 0
        self.transmit()

    async def recv(self) -> bytes:
        inbox = self._inbox
        while not inbox:
            if self._lost:
                raise ConnectionError("connection lost")
            self._recv_waiter = waiter = self._loop.create_future()
            await waiter
        return inbox.popleft()


async def bare_listen(
    k: Keys,
    me: int,
    on_conn: Callable[[BareQuic], None],
    options: Mapping[str, Any] | None = None,
    aioquic_defaults: bool = False,
    port: int = 0,
) -> tuple[QuicServer, int]:
    config = bare_configuration(k, me, client=False, options=options, aioquic_defaults=aioquic_defaults)

    def create(quic: QuicConnection, **kwargs: Any) -> BareQuic:
        conn = BareQuic(quic, **kwargs)
        on_conn(conn)
        return conn

    transport, server = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: QuicServer(configuration=config, create_protocol=create), local_addr=(HOST, port)
    )
    bound: int = transport.get_extra_info("sockname")[1]
    return server, bound


async def bare_dial(
    k: Keys, me: int, port: int, options: Mapping[str, Any] | None = None, aioquic_defaults: bool = False
) -> tuple[asyncio.DatagramTransport, BareQuic]:
    config = bare_configuration(k, me, client=True, options=options, aioquic_defaults=aioquic_defaults)
    connection = QuicConnection(configuration=config)
    transport, conn = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: BareQuic(connection), local_addr=(HOST, 0)
    )
    try:
        conn.connect((HOST, port))
        await conn.ready
    except BaseException:
        transport.close()
        raise
    return transport, conn


@contextlib.asynccontextmanager
async def bare_mesh(
    k: Keys, n: int, options: Mapping[str, Any] | None = None, aioquic_defaults: bool = False
) -> AsyncIterator[dict[tuple[int, int], BareQuic]]:
    """Connections between every pair of `n` parties in this process: ``conns[(me, peer)]`` is me's end."""
    conns: dict[tuple[int, int], BareQuic] = {}
    endpoints: list[asyncio.DatagramTransport] = []
    servers: list[QuicServer] = []
    try:
        for hi in range(1, n):
            accepted: asyncio.Queue[BareQuic] = asyncio.Queue()
            server, port = await bare_listen(k, hi, accepted.put_nowait, options, aioquic_defaults)
            servers.append(server)
            for lo in range(hi):
                dialer_transport, conns[(lo, hi)] = await bare_dial(k, lo, port, options, aioquic_defaults)
                endpoints.append(dialer_transport)
                conns[(hi, lo)] = theirs = await accepted.get()  # dials are one at a time: accepted in order
                await theirs.ready
        yield conns
    finally:
        for conn in conns.values():
            conn.close()
        for server in servers:
            server.close()
        for endpoint in endpoints:
            endpoint.close()


@contextlib.asynccontextmanager
async def open_party(k: Keys, me: int, ports: Sequence[int]) -> AsyncIterator[Mapping[int, tuple[Send, Recv]]]:
    """Party `me` of ``len(ports)`` parties, each in its own process, over bare aioquic at the transport's default
    settings: it listens on UDP ``ports[me]``, dials every higher party (retrying while it starts), and says who it
    is in a first message; yields ``{peer: (send, recv)}``. The multi-process rounds of `stoffelnet bench` run this
    beside stoffelnet's own parties."""
    n = len(ports)
    arrived: asyncio.Queue[BareQuic] = asyncio.Queue()

    def greeted(conn: BareQuic) -> None:  # only a connection whose dialer's hello came (not an abandoned attempt)
        conn.ready.add_done_callback(lambda _: arrived.put_nowait(conn))

    server, _ = await bare_listen(k, me, greeted, port=ports[me])
    conns: dict[int, BareQuic] = {}
    endpoints: list[asyncio.DatagramTransport] = []
    try:
        loop = asyncio.get_running_loop()
        for peer in range(me + 1, n):
            deadline = loop.time() + 30.0
            while True:
                try:
                    async with asyncio.timeout(1.0):
                        endpoint, conns[peer] = await bare_dial(k, me, ports[peer])
                    break
                except TimeoutError:
                    if loop.time() > deadline:
                        raise
            endpoints.append(endpoint)
            await introduce(conns[peer], me)
        yield await meet(me, conns, arrived)
    finally:
        for conn in conns.values():
            conn.close()
        server.close()
        for endpoint in endpoints:
            endpoint.close()


def bare_ends(conns: dict[tuple[int, int], BareQuic], me: int, peer: int) -> tuple[Send, Recv]:
    conn = conns[(me, peer)]
    return conn.send, conn.recv


@contextlib.asynccontextmanager
async def open_mesh(n: int, aioquic_defaults: bool = False) -> AsyncIterator[Sequence[Mapping[int, tuple[Send, Recv]]]]:
    """`n` parties connected pairwise over bare aioquic in this process, at the transport's default settings (or
    `QuicConfiguration()`'s), keys in a temporary folder; ``ends[me][peer]`` is ``(send, recv)`` on me's side of the
    link to peer."""
    with tempfile.TemporaryDirectory(prefix="stoffelnet-bare-quic-") as folder:
        k = make_keys(Path(folder), max(n, 2))
        async with bare_mesh(k, n, aioquic_defaults=aioquic_defaults) as conns:
            yield [{p: bare_ends(conns, me, p) for p in range(n) if p != me} for me in range(n)]


open_mesh_at_defaults = functools.partial(open_mesh, aioquic_defaults=True)
"""`open_mesh` with bare aioquic at `QuicConfiguration()`'s own defaults: 1200-byte datagrams, 1 MiB windows."""

VARIANT_BASELINES = {
    variant: (DEFAULTS_NAME, open_mesh_at_defaults) for variant in VARIANTS if variant.endswith("shipped")
}
"""The variants measured beside another baseline than `open_mesh`: the transport as shipped, beside what an
aioquic program gets without tuning (issue target: >= 1.5x its throughput)."""
