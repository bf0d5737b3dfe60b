"""Shared helpers for the quic attack suites: a victim network, hand-driven aioquic peers, log and health checks.

The victim is a real 3-party quic network on 127.0.0.1 with one legitimate client connected, built exactly like the
tcp-tls victim (tests/tcp_tls/conftest.py, whose checks are copied here: both suites must be runnable alone). Keys
come from core's `testing._make_keys`, with one allowlisted client more than is connected: that spare identity can
authenticate for real without being refused as a duplicate of the connected client.

Over QUIC the acceptor proves its key in aioquic's TLS, but the dialer does not: it proves its key in core's
handshake (Handshake, the acceptor's Handshake with a fresh nonce, then a `Proof`). The attackers here are raw
aioquic clients (and one raw aioquic server) that speak core's codec on core's native streams by hand (what
`testing.hostile`'s frame helpers make for a byte pipe, spread over QUIC streams by `NativeWriter`), so every step
of that exchange can be skipped, forged or replayed.

Every wait is bounded by `TIMEOUT`; nothing sleeps to synchronise: log records and QUIC events are awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamDataReceived

from stoffelnet_core import codec, keys
from stoffelnet_core.bench.support import make_keys
from stoffelnet_core.config import TLSConfig
from stoffelnet_core.frames import Envelope, Handshake, Proof
from stoffelnet_core.ids import Address, ClientType
from stoffelnet_core.mux import DATA, HEADER, PREFIX
from stoffelnet_core.network import Network
from stoffelnet_core.proof import proof_message
from stoffelnet_core.testing.hostile import (
    HOST,
    TIMEOUT,
    Victim,
    control_frame,
    start_victim,
)
from stoffelnet_core.transport import BytePipe, Credentials, TransportContext
from stoffelnet_quic.transport import ALPN, QuicListener, QuicPipe, QuicTransport, _Endpoint, _Protocol

ALPN_PARTY = ALPN[ClientType.SERVER]
ALPN_CLIENT = ALPN[ClientType.CLIENT]


# -- the victim --------------------------------------------------------------------------------------------------


def quic_pipe(net: Network, peer: int) -> QuicPipe:
    """The QUIC pipe of `net`'s connection to party `peer`."""
    pipe = net.connection(peer)._pipe
    assert isinstance(pipe, QuicPipe)
    return pipe


def quic_protocol(net: Network, peer: int) -> _Protocol:
    """The datagram protocol driving `net`'s QUIC connection to party `peer` (its engine: ``.quic``)."""
    return quic_pipe(net, peer)._protocol


def quic_server(net: Network) -> _Endpoint:
    """The UDP endpoint behind a party's listener, holding the engine's QUIC server (private: tests instrument and
    inspect it)."""
    listener = net._listener
    assert isinstance(listener, QuicListener)
    endpoint = listener._endpoint
    assert isinstance(endpoint, _Endpoint)
    return endpoint


def half_open(net: Network) -> int:
    """QUIC connections a party's listener holds whose QUIC handshake never completed (no pipe handed to core)."""
    protocols = set(quic_server(net).server._protocols.values())
    return sum(1 for p in protocols if getattr(p, "pipe", None) is None)


# -- checks that the network is unaffected ------------------------------------------------------------------------


# -- the event loop must not see an exception ---------------------------------------------------------------------
@pytest.fixture(autouse=True)
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Every call of the loop's exception handler (an exception escaping a callback: a crash in aioquic or the
    transport) fails the test; the list is also handed to tests that want to look at it sooner."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)
    assert not seen, f"the event loop's exception handler was called: {[c.get('message') for c in seen]}"


# -- the wire, written by hand ------------------------------------------------------------------------------------


def sign(
    tls: TLSConfig, acceptor_nonce: bytes, acceptor_fp: str, role: str, claimed: int, dialer_nonce: bytes
) -> Proof:
    """The Proof the holder of `tls`'s key makes for this claim: core's `proof_message`, by `keys.sign_proof`."""
    identity = keys.load_identity(tls.cert, tls.key)
    certificate, signature = keys.sign_proof(
        identity, proof_message(acceptor_nonce, acceptor_fp, role, claimed, dialer_nonce)
    )
    return Proof(certificate, signature)


class StreamsReader:
    """Parses what a peer wrote on its native streams: control envelopes (channel 0) and the bytes of every other
    channel."""

    def __init__(self) -> None:
        self.control: list[Envelope] = []
        self.app_bytes = 0  # bytes of channels other than 0
        self._channels: dict[int, int] = {}  # QUIC stream id -> channel (-1: the stream of window updates)
        self._prefixes: dict[int, bytearray] = {}
        self._decoder = codec.FrameDecoder()

    def feed(self, stream_id: int, data: bytes) -> None:
        channel = self._channels.get(stream_id)
        if channel is None:
            prefix = self._prefixes.setdefault(stream_id, bytearray())
            prefix += data
            if len(prefix) < PREFIX.size:
                return
            kind, channel = PREFIX.unpack_from(prefix)
            data = bytes(prefix[PREFIX.size :])
            del self._prefixes[stream_id]
            channel = self._channels[stream_id] = channel if kind == DATA else -1
        if channel == 0:
            self.control += [envelope for envelope, _ in self._decoder.feed(data)]
        elif channel > 0:
            self.app_bytes += len(data)


class NativeWriter:
    """Writes what `testing.hostile`'s helpers make for a byte pipe (mux frames) the way core writes native
    streams: each channel's bytes on a QUIC stream of its own (opened by us; core may also answer on the peer's),
    opened with its prefix; window updates (and any other frame type, as it is) on one more. Bytes are forwarded as
    they come: a frame cut short stays cut short on its stream."""

    def __init__(self, quic: QuicConnection, kind: int) -> None:
        self._quic = quic
        self._kind = kind  # 0: a dialer's bidirectional streams, 1: an acceptor's
        self._numbers: dict[int, int] = {}  # channel (-1: window updates) -> our stream number
        self._buf = bytearray()
        self._remaining = 0
        self._current = 0

    def write(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while buf:
            if self._remaining:
                take = min(self._remaining, len(buf))
                self._emit(self._current, DATA, bytes(buf[:take]))
                del buf[:take]
                self._remaining -= take
            elif len(buf) >= HEADER.size:
                kind, channel, length = HEADER.unpack_from(buf)
                if kind == DATA:
                    self._current, self._remaining = channel, length
                    del buf[: HEADER.size]
                else:
                    self._emit(-1, kind, bytes(buf[: HEADER.size]))
                    del buf[: HEADER.size]
            else:
                break

    def finish(self) -> None:
        """End (FIN) every stream this writer opened: the peer's end of the connection, as core's pipe ends it."""
        for number in self._numbers.values():
            self._quic.send_stream_data(number * 4 + self._kind, b"", end_stream=True)

    def _emit(self, channel: int, kind: int, data: bytes) -> None:
        number = self._numbers.get(channel)
        if number is None:
            number = self._numbers[channel] = len(self._numbers)
            data = PREFIX.pack(kind, max(channel, 0)) + data
        self._quic.send_stream_data(number * 4 + self._kind, data)


class _RawProtocol(QuicConnectionProtocol):
    """aioquic's protocol, recording the party's streams and the end of the connection."""

    def __init__(self, quic: QuicConnection, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self.reader = StreamsReader()
        self.writer = NativeWriter(quic, 0)
        self.fin = False
        self.terminated: ConnectionTerminated | None = None
        self.changed = asyncio.Event()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            self.reader.feed(event.stream_id, event.data)
            self.fin = self.fin or event.end_stream
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
        self.changed.set()


def client_configuration(tls: TLSConfig | None, alpn: str) -> QuicConfiguration:
    """A dialer's QUIC settings as the transport builds them (no CA check: core pins), presenting `tls` if given."""
    config = QuicConfiguration(
        is_client=True, alpn_protocols=[alpn], verify_mode=ssl.CERT_NONE, server_name="stoffelnet"
    )
    if tls is not None:
        config.load_cert_chain(tls.cert, tls.key)
    return config


class RawQuicPeer:
    """One QUIC connection to a party, with core's native streams and codec written by hand."""

    def __init__(self, transport: asyncio.DatagramTransport, protocol: _RawProtocol) -> None:
        self.transport = transport
        self.protocol = protocol

    @classmethod
    async def connect(cls, address: Address, tls: TLSConfig | None, alpn: str = ALPN_PARTY) -> RawQuicPeer:
        """Complete the QUIC handshake with `address` (the party's key is proven; ours is not asked for)."""
        loop = asyncio.get_running_loop()
        connection = QuicConnection(configuration=client_configuration(tls, alpn))
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _RawProtocol(connection), local_addr=(HOST, 0)
        )
        try:
            protocol.connect((address.host, address.port))
            async with asyncio.timeout(TIMEOUT):
                await protocol.wait_connected()
        except BaseException:
            transport.close()
            raise
        return cls(transport, protocol)

    @property
    def port(self) -> int:
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    @property
    def control(self) -> list[Envelope]:
        """Control envelopes the party wrote to us, in order."""
        return self.protocol.reader.control

    def send(self, data: bytes) -> None:
        """Mux frames (`testing.hostile`'s helpers), written as core writes its native streams."""
        self.protocol.writer.write(data)
        self.protocol.transmit()

    def finish(self) -> None:
        """End every stream we opened (a clean goodbye: the party then ends its own and closes)."""
        self.protocol.writer.finish()
        self.protocol.transmit()

    async def read_handshake(self) -> Handshake:
        """The party's Handshake (its reply to ours, carrying the nonce a proof must sign)."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                found = [e for e in self.control if isinstance(e, Handshake)]
                if found:
                    return found[0]
                assert self.protocol.terminated is None, f"closed before answering: {self.protocol.terminated}"
                self.protocol.changed.clear()
                await self.protocol.changed.wait()

    async def expect_closed(self) -> ConnectionTerminated | None:
        """Wait until the party ends the connection (CONNECTION_CLOSE, or the FIN of a stream); then hang up."""
        async with asyncio.timeout(TIMEOUT):
            while self.protocol.terminated is None and not self.protocol.fin:
                self.protocol.changed.clear()
                await self.protocol.changed.wait()
        terminated = self.protocol.terminated
        await self.close()
        return terminated

    async def close(self) -> None:
        """Close the QUIC connection and wait (briefly) for aioquic to finish its closing period."""
        self.protocol.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self.protocol.wait_closed()
        self.transport.close()


# -- a raw QUIC listener ------------------------------------------------------------------------------------------
class _AnsweringProtocol(QuicConnectionProtocol):
    """One connection to a `FakeQuicListener`."""

    def __init__(self, quic: QuicConnection, listener: FakeQuicListener, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self._listener = listener
        self._reader = StreamsReader()
        self._writer = NativeWriter(quic, 1)
        self._seen = 0
        self._answered = False

    def quic_event_received(self, event: QuicEvent) -> None:
        if not isinstance(event, StreamDataReceived):
            return
        self._reader.feed(event.stream_id, event.data)
        listener = self._listener
        for envelope in self._reader.control[self._seen :]:
            if isinstance(envelope, Handshake):
                listener.claims.append(envelope)
            elif isinstance(envelope, Proof):
                listener.proofs.append(envelope)
        self._seen = len(self._reader.control)
        if listener.answer is not None and listener.claims and not self._answered:
            self._answered = True
            self._writer.write(control_frame(listener.answer))
            self.transmit()


class FakeQuicListener:
    """An aioquic server presenting `tls`'s certificate; it counts dials (new QUIC connections), records every claim
    and proof a dialer sends, and answers the first Handshake of each connection with `answer`."""

    def __init__(self, tls: TLSConfig, answer: Handshake | None) -> None:
        self._tls = tls
        self.answer = answer
        self.dials = 0
        self.claims: list[Handshake] = []
        self.proofs: list[Proof] = []

    def _protocol(self, quic: QuicConnection, **kwargs: Any) -> QuicConnectionProtocol:
        self.dials += 1
        return _AnsweringProtocol(quic, self, **kwargs)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Address]:
        config = QuicConfiguration(is_client=False, alpn_protocols=[ALPN_PARTY, ALPN_CLIENT])
        config.load_cert_chain(self._tls.cert, self._tls.key)
        loop = asyncio.get_running_loop()
        transport, server = await loop.create_datagram_endpoint(
            lambda: QuicServer(configuration=config, create_protocol=self._protocol), local_addr=(HOST, 0)
        )
        try:
            yield Address(HOST, transport.get_extra_info("sockname")[1])
        finally:
            server.close()


# -- bare transport pipes -----------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def pipe_pair(dialer: str, acceptor: str, **options: Any) -> AsyncIterator[tuple[QuicPipe, QuicPipe]]:
    """A dialed and an accepted `QuicPipe` on 127.0.0.1, the dialer on engine `dialer` and the listener on
    `acceptor` (both with `options`), and no core on top: nobody reads them unless the test does."""
    with tempfile.TemporaryDirectory(prefix="stoffelnet-quic-pipes-") as folder:
        k = make_keys(Path(folder), 2)

        def transport(i: int, engine: str) -> QuicTransport:
            context = TransportContext(
                options={"engine": engine, **options}, credentials=Credentials(k.certs[i], k.keys[i])
            )
            return QuicTransport(context)

        accepted: asyncio.Future[BytePipe] = asyncio.get_running_loop().create_future()
        listener = await transport(1, acceptor).listen(Address(HOST, 0), accepted.set_result)
        try:
            async with asyncio.timeout(TIMEOUT):
                dialed = await transport(0, dialer).dial(listener.address, role=ClientType.SERVER)
            try:
                async with asyncio.timeout(TIMEOUT):
                    other = await accepted
                assert isinstance(dialed, QuicPipe)
                assert isinstance(other, QuicPipe)
                yield dialed, other
            finally:
                dialed.abort()
        finally:
            await listener.close()


# -- fixtures ------------------------------------------------------------------------------------------------------
# Every engine the transport offers, for modules that run their tests on each: ``pytestmark = ON_EVERY_ENGINE``.
# qh3 is optional for users (``stoffelnet-quic[qh3]``) but part of the workspace install: here it is required.
ENGINES = ["aioquic", "qh3"]
ON_EVERY_ENGINE = pytest.mark.parametrize("engine", ENGINES, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    """The QUIC engine of the `victim` (and of the dialers built from its config): ``aioquic`` unless the test is
    parametrized over engines (`ON_EVERY_ENGINE`)."""
    return str(getattr(request, "param", "aioquic"))


@pytest.fixture
async def victim(tmp_path: Path, engine: str) -> AsyncIterator[Victim]:
    """Three parties and client 0 over quic on 127.0.0.1, on `engine`; client 1 is allowlisted but not connected."""
    async with start_victim(tmp_path, "quic", transport_options={"quic": {"engine": engine}}) as v:
        yield v
