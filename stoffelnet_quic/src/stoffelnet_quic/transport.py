"""QUIC on aioquic: TLS 1.3 inside QUIC, with both sides' keys proven.

The acceptor proves its key in the QUIC handshake: aioquic checks the server's CertificateVerify signature on
every connection, and core's `identity.verify_peer` pins the certificate it came with. aioquic cannot ask the
dialer for a certificate (only through a private, test-only flag, and even then without checking it), so the
dialer proves its key in core's handshake instead (`LinkInfo.dialer_proof`): it signs the acceptor's fresh nonce
together with the acceptor's proven key. Either way nothing is delivered before both keys are proven.

This version carries core's stream multiplexer over one bidirectional QUIC stream (stream 0, opened by the
dialer), so every stoffelnet stream keeps its own credit-based flow control. Mapping stoffelnet streams onto
native QUIC streams is the next step. This module only moves bytes: framing, identity and retries are core's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent, StreamDataReceived
from cryptography.hazmat.primitives import serialization

from stoffelnet_core import errors, keys
from stoffelnet_core.ids import Address, ClientType
from stoffelnet_core.transport import (
    ALPN_CLIENT,
    ALPN_PARTY,
    BytePipe,
    LinkInfo,
    Listener,
    PipeReceiver,
    Transport,
    TransportContext,
)

from .options import QuicOptions

__all__ = ["ALPN", "QuicListener", "QuicPipe", "QuicTransport"]

log = logging.getLogger("stoffelnet.quic")

ALPN = {ClientType.SERVER: ALPN_PARTY, ClientType.CLIENT: ALPN_CLIENT}
STREAM = 0  # the dialer's first bidirectional stream carries core's multiplexer


def peer_certificate(quic: QuicConnection) -> bytes | None:
    """The DER certificate whose key the peer proved in the QUIC handshake.

    aioquic keeps it in a private attribute; tests/quic pin that it is still there, so an aioquic upgrade that
    moves it fails loudly instead of silently refusing every peer.
    """
    cert = getattr(quic.tls, "_peer_certificate", None)
    if cert is None:
        return None
    der: bytes = cert.public_bytes(serialization.Encoding.DER)
    return der


def _address(value: object) -> Address | None:
    if isinstance(value, tuple) and len(value) >= 2:
        host = str(value[0])
        if host.startswith("::ffff:"):
            host = host[7:]
        return Address(host, int(value[1]))
    return None


class QuicPipe(BytePipe):
    """Core's byte pipe over QUIC stream 0 of one connection."""

    def __init__(self, protocol: _Protocol, info: LinkInfo, keepalive: float = 0.0) -> None:
        self.info = info
        self._protocol = protocol
        self._keepalive = keepalive
        self._ping: asyncio.TimerHandle | None = None
        self._pings = 0
        if keepalive > 0:
            self._ping = asyncio.get_running_loop().call_later(keepalive, self._send_ping)
        self._receiver: PipeReceiver | None = None
        self._held: list[bytes] = []
        self._eof_held = False
        self._lost: tuple[BaseException | None] | None = None
        self._closing = False
        self._sent_fin = False
        self._got_fin = False
        self.on_lost: Callable[[], None] | None = None  # the dialer releases its socket here

    # -- from the protocol ---------------------------------------------------------------------------------------------
    def stream_data(self, data: bytes, end_stream: bool) -> None:
        if data:
            if self._receiver is not None:
                self._receiver.data_received(data)
            else:
                self._held.append(data)
        if end_stream:
            self._got_fin = True
            if self._receiver is not None:
                self._receiver.eof_received()
            else:
                self._eof_held = True
            # The peer finished its side: finish ours (if not yet) and end the connection now. Everything before
            # each FIN has arrived in order, so nothing is lost, and QUIC's draining period is not waited for.
            self._finish_stream()
            self._terminate()

    def _send_ping(self) -> None:
        if self._lost is not None:
            return
        self._pings += 1
        self._protocol._quic.send_ping(self._pings)
        self._protocol.transmit()
        self._ping = asyncio.get_running_loop().call_later(self._keepalive, self._send_ping)

    def terminated(self, exc: BaseException | None) -> None:
        if self._lost is not None:
            return
        if self._ping is not None:
            self._ping.cancel()
        self._lost = (exc,)
        self._closing = True
        if self._receiver is not None:
            self._receiver.connection_lost(exc)
        if self.on_lost is not None:
            self.on_lost()

    # -- BytePipe --------------------------------------------------------------------------------------------------
    def set_receiver(self, receiver: PipeReceiver) -> None:
        self._receiver = receiver
        held, self._held = self._held, []
        if held:
            receiver.data_received(b"".join(held))
        if self._eof_held:
            receiver.eof_received()
        if self._lost is not None:
            receiver.connection_lost(self._lost[0])

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writelines((data,))

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        if self._closing or self._sent_fin:
            return
        data = b"".join(chunks)
        if data:
            self._protocol._quic.send_stream_data(STREAM, data)
            self._protocol.transmit()

    def pause_reading(self) -> None:
        """Nothing to do: core's per-stream credit already bounds what the peer may send."""

    def resume_reading(self) -> None:
        """See `pause_reading`."""

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._finish_stream()
        if self._got_fin:
            self._terminate()

    def _finish_stream(self) -> None:
        if not self._sent_fin and self._lost is None:
            self._sent_fin = True
            self._protocol._quic.send_stream_data(STREAM, b"", end_stream=True)
            self._protocol.transmit()

    def _terminate(self) -> None:
        """Both sides finished the stream: close the connection (everything was sent and acknowledged in order)."""
        if self._lost is None:
            self._protocol._quic.close(error_code=0, reason_phrase="done")
            self._protocol.transmit()
            self.terminated(None)

    def abort(self) -> None:
        if self._lost is not None:
            return
        self._closing = True
        self._protocol._quic.close(error_code=1, reason_phrase="aborted")
        self._protocol.transmit()
        self.terminated(ConnectionAbortedError("QUIC connection aborted locally"))

    def is_closing(self) -> bool:
        return self._closing or self._lost is not None


_BATCH = 64  # datagrams read per wakeup at most


def _drain(transport: asyncio.BaseTransport | None, first: tuple[bytes, Any]) -> list[tuple[bytes, Any]]:
    """`first` and the datagrams already waiting on the socket: asyncio reads one per event-loop turn, and each turn
    costs a full receive pass; reading what is there at once (then transmitting once) is several times cheaper."""
    batch = [first]
    sock = getattr(transport, "_sock", None)  # asyncio's datagram transport; absent elsewhere, then no batching
    if sock is None:
        return batch
    for _ in range(_BATCH - 1):
        try:
            batch.append(sock.recvfrom(65536))
        except OSError:  # BlockingIOError (nothing more waiting), or anything the next normal read will report
            break
    return batch


class _BatchingServer(QuicServer):
    """aioquic's server, draining its socket per wakeup and transmitting once per connection that was touched."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batching = False
        self.touched: set[_Protocol] = set()

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        assert isinstance(data, bytes)
        self.batching = True
        try:
            for datagram, source in _drain(self._transport, (data, addr)):
                self.dispatch(datagram, source)
        finally:
            self.batching = False
            touched, self.touched = self.touched, set()
        for protocol in touched:
            protocol.transmit()

    def dispatch(self, data: bytes, addr: Any) -> None:
        """One datagram to the connection it belongs to (aioquic's server logic), inside a batch."""
        QuicServer.datagram_received(self, data, addr)


class _Protocol(QuicConnectionProtocol):
    """aioquic's protocol, turning QUIC events into calls on one `QuicPipe`."""

    server: _BatchingServer | None = None  # a listener's connections share its socket and its batches

    def __init__(
        self, quic: QuicConnection, *, on_ready: Callable[[_Protocol], None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(quic, **kwargs)
        self.pipe: QuicPipe | None = None
        self._on_ready = on_ready
        self.completed = False
        self.terminated: ConnectionTerminated | None = None  # why the connection ended, before or after the pipe
        self.on_end: Callable[[], None] | None = None

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        assert isinstance(data, bytes)
        quic, now = self._quic, self._loop.time()
        if quic.configuration.is_client:  # the dialer owns its socket: read what is there, then transmit once
            for datagram, source in _drain(self._transport, (data, addr)):
                quic.receive_datagram(datagram, source, now=now)
            self._process_events()
            self.transmit()
        elif self.server is not None and self.server.batching:  # the server transmits after its batch
            quic.receive_datagram(data, addr, now=now)
            self._process_events()
            self.server.touched.add(self)
        else:
            super().datagram_received(data, addr)

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self.completed = True
            if self._on_ready is not None:
                self._on_ready(self)
        elif isinstance(event, StreamDataReceived):
            if event.stream_id == STREAM and self.pipe is not None:
                self.pipe.stream_data(event.data, event.end_stream)
            elif event.stream_id != STREAM:
                # Nothing else speaks on other streams in this version: a peer that does is refused.
                self._quic.close(error_code=0x0A, reason_phrase="unexpected stream")
                self.transmit()
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
            if self.on_end is not None:
                self.on_end()
            if self.pipe is not None:
                clean = event.error_code == 0
                self.pipe.terminated(
                    None
                    if clean
                    else ConnectionResetError(f"QUIC connection closed: {event.reason_phrase or event.error_code}")
                )


class QuicListener(Listener):
    def __init__(self, address: Address, transport: asyncio.DatagramTransport, server: QuicServer) -> None:
        self.address = address
        self._transport = transport
        self._server = server

    async def close(self) -> None:
        self._server.close()


class QuicTransport(Transport):
    """QUIC on aioquic; see the module docstring."""

    name: ClassVar[str] = "quic"

    def __init__(self, context: TransportContext) -> None:
        super().__init__(context)
        self.options = QuicOptions.from_mapping(context.options)
        creds = context.credentials
        if creds is None:
            raise errors.ConfigError("the quic transport needs [tls] cert and key", key="tls")
        keys.load_identity(creds.cert, creds.key)  # clear errors now: missing, mismatched, expired
        self._creds = creds
        self._keepalive = min(self.options.keepalive_interval_ms, self.options.idle_timeout_ms // 2) / 1000

    def _configuration(self, *, client: bool, alpn: list[str], host: str) -> QuicConfiguration:
        opts = self.options
        config = QuicConfiguration(
            is_client=client,
            alpn_protocols=alpn,
            idle_timeout=opts.idle_timeout_ms / 1000,
            max_datagram_size=opts.datagram_size_for(host),
            congestion_control_algorithm=opts.congestion_control,
            max_data=opts.max_data,
            max_stream_data=opts.max_stream_data,
            # The acceptor's certificate is pinned by core, not verified against a CA: aioquic still checks its
            # CertificateVerify signature (possession of the key) on every connection.
            verify_mode=ssl.CERT_NONE,
            server_name="stoffelnet",
        )
        config.load_cert_chain(self._creds.cert, self._creds.key)
        return config

    def _info(self, protocol: _Protocol, transport: asyncio.BaseTransport | None, alpn: str | None) -> LinkInfo:
        quic = protocol._quic
        remote = _address(quic._network_paths[0].addr) if quic._network_paths else None
        local = _address(transport.get_extra_info("sockname")) if transport is not None else None
        return LinkInfo(
            self.name,
            remote_address=remote,
            local_address=local,
            peer_certificate=peer_certificate(quic) if quic.configuration.is_client else None,
            alpn=alpn,
            dialer_proof=True,
        )

    async def listen(self, address: Address, on_pipe: Callable[[BytePipe], None]) -> Listener:
        loop = asyncio.get_running_loop()
        configuration = self._configuration(client=False, alpn=list(ALPN.values()), host=address.host)
        holder: dict[str, asyncio.DatagramTransport] = {}
        holder_server: dict[str, _BatchingServer] = {}

        def ready(protocol: _Protocol) -> None:
            pending.discard(protocol)
            alpn = protocol._quic.tls.alpn_negotiated
            pipe = QuicPipe(protocol, self._info(protocol, holder.get("t"), alpn), self._keepalive)
            protocol.pipe = pipe
            on_pipe(pipe)

        pending: set[_Protocol] = set()
        timeout = self.options.handshake_timeout_ms / 1000

        def refuse(protocol: _Protocol, why: str) -> None:
            pending.discard(protocol)
            if not protocol.completed and protocol.terminated is None:
                log.warning("AuthenticationError: refused a QUIC connection: %s", why)
                protocol._quic.close(error_code=0x2, reason_phrase=why)  # CONNECTION_REFUSED
                protocol.transmit()

        def create_protocol(quic: QuicConnection, **kwargs: Any) -> _Protocol:
            protocol = _Protocol(quic, on_ready=ready, **kwargs)
            protocol.server = holder_server.get("s")
            if len(pending) >= self.options.max_pending_handshakes:
                loop.call_soon(refuse, protocol, "too many QUIC handshakes in progress")
                return protocol
            pending.add(protocol)
            protocol.on_end = lambda: pending.discard(protocol)
            loop.call_later(timeout, refuse, protocol, "its QUIC handshake did not complete in time")
            return protocol

        try:
            transport, server = await loop.create_datagram_endpoint(
                lambda: _BatchingServer(
                    configuration=configuration,
                    create_protocol=create_protocol,
                    retry=self.options.address_validation,
                ),
                local_addr=(address.host, address.port),
            )
        except OSError as exc:
            raise errors.InitializationFailed(f"cannot listen on {address} (UDP): {exc.strerror or exc}") from exc
        holder["t"] = transport
        holder_server["s"] = server
        bound = _address(transport.get_extra_info("sockname")) or address
        return QuicListener(Address(address.host, bound.port), transport, server)

    async def dial(self, address: Address, *, role: ClientType) -> BytePipe:
        loop = asyncio.get_running_loop()
        configuration = self._configuration(client=True, alpn=[ALPN[role]], host=address.host)
        try:
            infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise errors.InitializationFailed(f"cannot resolve {address}: {exc}") from exc
        family, _, _, _, addr = infos[0]
        local = _local_bind(family, str(addr[0]))
        connection = QuicConnection(configuration=configuration)
        ready = loop.create_future()

        def on_ready(protocol: _Protocol) -> None:
            if not ready.done():
                ready.set_result(None)

        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _Protocol(connection, on_ready=on_ready), local_addr=local, family=family
            )
        except OSError as exc:
            raise errors.InitializationFailed(f"cannot open a UDP socket for {address}: {exc}") from exc
        try:
            protocol.connect(addr, transmit=True)
            closed = asyncio.ensure_future(protocol.wait_closed())
            try:
                async with asyncio.timeout(self.context.connect_timeout):
                    await asyncio.wait({ready, closed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()  # only needed while connecting; the pipe learns of the end by its own event
            if not ready.done():
                end = protocol.terminated
                code = end.error_code if end is not None else None
                reason = f"{end.reason_phrase or 'no reason'} (QUIC error {code:#x})" if end is not None else "closed"
                if code is not None and 0x100 <= code <= 0x1FF:  # a TLS alert: the handshake's proof failed
                    raise errors.AuthenticationError(
                        f"QUIC handshake with {address} failed its TLS checks: {reason}; the listener does not hold "
                        f"the key of the certificate it showed, or refused ours"
                    )
                raise errors.InitializationFailed(f"QUIC handshake with {address} failed: {reason}")
        except TimeoutError:
            transport.close()
            raise errors.InitializationFailed(
                f"QUIC handshake with {address} timed out after {self.context.connect_timeout:.1f}s"
            ) from None
        except BaseException:
            transport.close()
            raise
        pipe = QuicPipe(protocol, self._info(protocol, transport, ALPN[role]), self._keepalive)
        pipe.on_lost = transport.close
        protocol.pipe = pipe
        return pipe


def _local_bind(family: int, host: str) -> tuple[str, int]:
    """Bind the dialer's UDP socket to loopback when dialing loopback, else to the family's wildcard."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if family == socket.AF_INET6:
        return ("::1" if loopback else "::", 0)
    return ("127.0.0.1" if loopback else "0.0.0.0", 0)
