"""TLS 1.3 over TCP, with mutual authentication by pinned certificates.

Both sides present their certificate and both verify the peer's in the TLS handshake, before any byte of
stoffelnet is read. Trust is pinning, not a CA or a hostname: the trust anchors are exactly the configured
members' own (self-signed) certificates. A listener trusts every party and every allowed client; a dialer trusts
only parties. OpenSSL then proves that the peer holds the key of one of those certificates, and core's
`identity.verify_peer` decides which member that key is, and whether that member is who it claims to be.

The listener accepts plain TCP and runs the TLS handshake itself (`loop.start_tls`), so that a refusal (no
certificate, a key nobody pinned, not TLS at all) is logged with its reason as an `AuthenticationError` instead
of vanishing inside asyncio. Streams, framing and everything else are core's: this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, cast

from stoffelnet_core import errors, keys
from stoffelnet_core.aio import ProtocolPipe
from stoffelnet_core.ids import Address, ClientType
from stoffelnet_core.transport import ALPN_CLIENT, ALPN_PARTY, BytePipe, LinkInfo, Listener, Transport, TransportContext

from .options import TcpTlsOptions

__all__ = ["ALPN", "TcpTlsListener", "TcpTlsTransport"]

log = logging.getLogger("stoffelnet.tcp_tls")

ALPN = {ClientType.SERVER: ALPN_PARTY, ClientType.CLIENT: ALPN_CLIENT}


def _context(*, server: bool, cert: str, key: str, trusted: list[str], alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    ctx.check_hostname = False  # identity is the pinned key, never a hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a pinned self-signed certificate is its own anchor
    ctx.load_verify_locations(cadata="".join(Path(p).read_text() for p in trusted))
    ctx.set_alpn_protocols(alpn)
    return ctx


def _address(value: object) -> Address | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return Address(str(value[0]), int(value[1]))
    return None


def _configure_socket(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small MPC messages must not wait for Nagle
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # the OS notices a peer that vanished
    except OSError:
        pass


def _refusal(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its certificate is not pinned here ({exc.verify_message})"
    if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in text or "peer did not return a certificate" in text:
        return "it presented no certificate"
    if any(m in text for m in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNEXPECTED_MESSAGE", "UNSUPPORTED_PROTOCOL")):
        return "it does not speak TLS 1.3"
    # asyncio ends a handshake that outlived ssl_handshake_timeout with ConnectionAbortedError, not TimeoutError
    if isinstance(exc, TimeoutError) or "handshake is taking longer than" in text:
        return "its TLS handshake did not complete in time"
    if isinstance(exc, ConnectionError | EOFError) or "EOF" in text:
        return "it closed the connection during the TLS handshake"
    return f"TLS handshake failed: {type(exc).__name__}: {text}"


class TcpTlsListener(Listener):
    def __init__(
        self, address: Address, server: asyncio.Server, pending: dict[asyncio.Task[None], asyncio.Transport]
    ) -> None:
        self.address = address
        self._server = server
        self._pending = pending

    async def close(self) -> None:
        self._server.close()
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        await self._server.wait_closed()


class _Accepting(asyncio.Protocol):
    """A fresh TCP connection before TLS: reading paused until `start_tls` takes over."""

    def __init__(self, start: Callable[[asyncio.Transport], None]) -> None:
        self._start = start

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # not isinstance: uvloop's are no subclasses
        transport.pause_reading()
        self._start(transport)


class TcpTlsTransport(Transport):
    """Mutual TLS 1.3 over TCP; see the module docstring."""

    name: ClassVar[str] = "tcp-tls"

    def __init__(self, context: TransportContext) -> None:
        super().__init__(context)
        self.options = TcpTlsOptions.from_mapping(context.options)
        creds = context.credentials
        if creds is None:
            raise errors.ConfigError("the tcp-tls transport needs [tls] cert and key", key="tls")
        if not context.party_certificates:
            raise errors.ConfigError(
                "the tcp-tls transport verifies peers in TLS against their certificate files: give every "
                "parties[i].cert (`stoffelnet certs` writes them)",
                key="parties.cert",
            )
        keys.load_identity(creds.cert, creds.key)  # clear errors now: missing, mismatched, expired
        for path in (*context.party_certificates, *context.client_certificates):
            keys.load_certificate(path, key="parties.cert")
        parties, clients = list(context.party_certificates), list(context.client_certificates)
        self._server_ctx = _context(
            server=True, cert=creds.cert, key=creds.key, trusted=parties + clients, alpn=list(ALPN.values())
        )
        self._dial_ctx = {
            role: _context(server=False, cert=creds.cert, key=creds.key, trusted=parties, alpn=[alpn])
            for role, alpn in ALPN.items()
        }

    def _info(self, transport: asyncio.BaseTransport) -> LinkInfo:
        ssl_object = transport.get_extra_info("ssl_object")
        cert = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        return LinkInfo(
            self.name,
            remote_address=_address(transport.get_extra_info("peername")),
            local_address=_address(transport.get_extra_info("sockname")),
            peer_certificate=cert,
            alpn=alpn,
        )

    async def listen(self, address: Address, on_pipe: Callable[[BytePipe], None]) -> Listener:
        loop = asyncio.get_running_loop()
        # Connections still in their TLS handshake, oldest first (dicts keep insertion order), with their sockets.
        pending: dict[asyncio.Task[None], asyncio.Transport] = {}
        handshake_timeout = self.options.handshake_timeout_ms / 1000

        async def upgrade(raw: asyncio.Transport) -> None:
            peer = _address(raw.get_extra_info("peername"))
            _configure_socket(raw)
            pipe = ProtocolPipe(self._info)
            try:
                tls = await loop.start_tls(
                    raw, pipe, self._server_ctx, server_side=True, ssl_handshake_timeout=handshake_timeout
                )
            except (OSError, TimeoutError, ConnectionError) as exc:
                refused = errors.AuthenticationError(f"refused a connection from {peer}: {_refusal(exc)}")
                log.warning("AuthenticationError: %s", refused)
                raw.abort()
                return
            if tls is None:
                raw.abort()
                return
            pipe.connection_made(tls)
            on_pipe(pipe)

        def start(raw: asyncio.Transport) -> None:
            if len(pending) >= self.options.max_pending_handshakes:
                # Full: drop the OLDEST handshake, not the newcomer. Refusing newcomers would let a few hundred
                # silent connections (slow-loris) lock every legitimate peer out until they time out, and then
                # again; an honest handshake takes milliseconds, so it is never the oldest unless the flood
                # outpaces `max_pending_handshakes` new connections in that time.
                oldest, sock = next(iter(pending.items()))
                del pending[oldest]
                log.warning(
                    "dropped the TLS handshake of %s, the oldest of %d in progress, to admit %s",
                    _address(sock.get_extra_info("peername")),
                    self.options.max_pending_handshakes,
                    _address(raw.get_extra_info("peername")),
                )
                oldest.cancel()
                sock.abort()
            task = loop.create_task(upgrade(raw))
            pending[task] = raw
            task.add_done_callback(lambda done: pending.pop(done, None))

        try:
            server = await loop.create_server(lambda: _Accepting(start), address.host, address.port)
        except OSError as exc:
            raise errors.InitializationFailed(f"cannot listen on {address}: {exc.strerror or exc}") from exc
        bound = _address(server.sockets[0].getsockname()) or address
        return TcpTlsListener(Address(address.host, bound.port), server, pending)

    async def dial(self, address: Address, *, role: ClientType) -> BytePipe:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.context.connect_timeout):
                transport, pipe = await loop.create_connection(
                    lambda: ProtocolPipe(self._info),
                    address.host,
                    address.port,
                    ssl=self._dial_ctx[role],
                    server_hostname="stoffelnet",  # SNI only; verification is by pinned key, not by name
                    ssl_handshake_timeout=self.context.connect_timeout,
                )
        except ssl.SSLCertVerificationError as exc:
            raise errors.AuthenticationError(
                f"{address} presented a certificate that is not pinned here ({exc.verify_message})"
            ) from exc
        except TimeoutError as exc:
            raise errors.InitializationFailed(
                f"connecting to {address} timed out after {self.context.connect_timeout:.1f}s"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise errors.InitializationFailed(f"cannot connect to {address}: {exc}") from exc
        _configure_socket(transport)
        return pipe
