"""The QUIC engines the transport can run on: aioquic (the default) and qh3 (optional, ``stoffelnet-quic[qh3]``).

Both are sans-IO: the transport feeds a `QuicConnection` datagrams and timer ticks and sends what it returns (see
`transport`). An `Engine` is the handful of things that differ between them: how a configuration is built, how a
listener routes datagrams to connections (each engine's own ``QuicServer``, used as a plain object), which event
classes it emits, and the two private or engine-specific reads the transport relies on:

- the certificate whose key the acceptor proved in the TLS handshake (`peer_certificate`): aioquic keeps it in the
  private ``tls._peer_certificate``; qh3 exposes it as ``QuicConnection.get_peercert()``;
- the bytes a stream holds that were never sent (`unsent`), for the transport's backpressure: qh3 exposes them as
  ``get_send_buffer_size(stream)``; aioquic only through its private stream sender;
- on aioquic, when its pending acknowledgement is due (`delay_acks`): its ack delay (``_ack_delay``) and the 1-RTT
  packet space's ``ack_at``, both private, for the transport's delayed acknowledgements. qh3 acknowledges in its
  compiled core, as it sees fit.

The listener also reads its ``QuicServer``'s connection-id table (``_protocols``, private in both) to route
short-header packets itself, without the server's header parse.

tests/quic pins each of them, so an engine upgrade that moves one fails loudly instead of refusing every peer or
letting a send buffer grow without bound.
"""

from __future__ import annotations

import abc
import functools
import importlib
import ipaddress
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stoffelnet_core import errors
from stoffelnet_core.errors import ConfigError

__all__ = ["ENGINES", "Engine", "QuicServerLike", "load_engine"]

ENGINES = ("aioquic", "qh3")


class QuicServerLike(Protocol):
    """What the transport uses of an engine's ``QuicServer``: connection-id routing, Retry and version negotiation
    for one UDP socket (the transport owns the socket and hands it each datagram)."""

    _protocols: dict[bytes, Any]

    def connection_made(self, transport: Any) -> None: ...

    def datagram_received(self, data: bytes, addr: Any) -> None: ...

    def close(self) -> None: ...


class Engine(abc.ABC):
    """One QUIC engine, behind the calls the transport makes."""

    name: ClassVar[str]
    # Run a timer due in under a millisecond on the next loop turn instead of at its time (see `_Protocol.transmit`).
    # Measured: qh3's pacing timers made a quarter of its round trips 1-5 ms slow without it; aioquic batches more
    # per datagram when its timers wait, and gets slower (+10% CPU per message, +40% round trip) with it.
    early_timers: ClassVar[bool] = False
    # Event classes (each engine has its own): the transport dispatches on ``type(event)``.
    HandshakeCompleted: type[Any]
    StreamDataReceived: type[Any]
    ConnectionTerminated: type[Any]
    ConnectionIdIssued: type[Any]
    ConnectionIdRetired: type[Any]
    StreamReset: type[Any]
    StopSendingReceived: type[Any]

    package: ClassVar[str]  # the engine's top-level module: both have aioquic's layout
    congestion_control: ClassVar[bool] = True  # whether its configuration takes a congestion control algorithm

    def __init__(self) -> None:
        server = importlib.import_module(f"{self.package}.asyncio.server")
        events = importlib.import_module(f"{self.package}.quic.events")
        self._configuration_class = importlib.import_module(f"{self.package}.quic.configuration").QuicConfiguration
        self._connection_class = importlib.import_module(f"{self.package}.quic.connection").QuicConnection
        self._server_class = server.QuicServer
        self.HandshakeCompleted = events.HandshakeCompleted
        self.StreamDataReceived = events.StreamDataReceived
        self.ConnectionTerminated = events.ConnectionTerminated
        self.ConnectionIdIssued = events.ConnectionIdIssued
        self.ConnectionIdRetired = events.ConnectionIdRetired
        self.StreamReset = events.StreamReset
        self.StopSendingReceived = events.StopSendingReceived

    def configuration(
        self,
        *,
        client: bool,
        alpn: list[str],
        idle_timeout: float,
        max_datagram_size: int,
        congestion_control: str | None,
        max_data: int,
        max_stream_data: int,
        cert: str,
        key: str,
    ) -> Any:
        """A ``QuicConfiguration``: TLS 1.3 with our certificate, and no CA check of the peer's (core pins it; the
        engine still checks the acceptor's CertificateVerify signature, i.e. possession of its key)."""
        extra: dict[str, Any] = {}
        if self.congestion_control:
            extra["congestion_control_algorithm"] = congestion_control or "reno"
        config = self._configuration_class(
            is_client=client,
            alpn_protocols=alpn,
            idle_timeout=idle_timeout,
            max_datagram_size=max_datagram_size,
            max_data=max_data,
            max_stream_data=max_stream_data,
            verify_mode=ssl.CERT_NONE,
            server_name="stoffelnet",
            **extra,
        )
        config.load_cert_chain(cert, key)
        return config

    def connection(self, configuration: Any) -> Any:
        """A dialer's ``QuicConnection``."""
        return self._connection_class(configuration=configuration)

    @abc.abstractmethod
    def server(self, *, configuration: Any, create_protocol: Callable[..., Any], retry: bool) -> QuicServerLike:
        """The engine's ``QuicServer`` (call inside the event loop; then ``connection_made(transport)``)."""

    @abc.abstractmethod
    def peer_certificate(self, quic: Any) -> bytes | None:
        """DER of the certificate whose key the peer proved in the handshake (the dialer's view of the acceptor)."""

    @abc.abstractmethod
    def unsent(self, quic: Any, stream: int) -> int:
        """Bytes written to `stream` and never sent yet (in flight and acknowledged bytes do not count)."""

    def delay_acks(self, quic: Any, delay: float) -> Any | None:
        """Let `quic`, whose handshake is complete, wait `delay` seconds before it acknowledges (instead of the
        engine's own delay), and return its pending acknowledgement's state: an object whose ``ack_at`` is when
        the engine will send it (None: nothing to acknowledge), which the transport may move earlier. None: the
        engine decides when it acknowledges (see `transport._Protocol.count_acks`)."""
        return None

    def receive(self, quic: Any, datagrams: list[tuple[bytes, Any]], now: float) -> None:
        """Feed `quic` the datagrams read from its socket in one wakeup."""
        for data, addr in datagrams:
            quic.receive_datagram(data, addr, now=now)

    def warm_up(self) -> None:  # noqa: B027 - optional hook with a do-nothing default
        """Pay one-time costs now, at transport creation, rather than on the first connection."""


class _Aioquic(Engine):
    name = "aioquic"
    package = "aioquic"

    def server(self, *, configuration: Any, create_protocol: Callable[..., Any], retry: bool) -> QuicServerLike:
        server: QuicServerLike = self._server_class(
            configuration=configuration, create_protocol=create_protocol, retry=retry
        )
        return server

    def peer_certificate(self, quic: Any) -> bytes | None:
        from cryptography.hazmat.primitives import serialization

        cert = getattr(quic.tls, "_peer_certificate", None)  # private: pinned by tests/quic
        if cert is None:
            return None
        der: bytes = cert.public_bytes(serialization.Encoding.DER)
        return der

    def unsent(self, quic: Any, stream: int) -> int:
        found = quic._streams.get(stream)  # private: pinned by tests/quic
        if found is None:
            return 0
        sender = found.sender
        size: int = sender._buffer_stop - sender.highest_offset
        return size

    def delay_acks(self, quic: Any, delay: float) -> Any | None:
        # Private, pinned by tests/quic: aioquic sets ``ack_at = now + _ack_delay`` when an ack-eliciting packet
        # arrives and nothing is pending yet, writes the ACK into the first packet it builds once ``ack_at`` has
        # passed, and arms its timer for it (``get_timer``).
        space = quic._spaces.get(self._one_rtt)
        if space is None or not hasattr(quic, "_ack_delay") or not hasattr(space, "ack_at"):
            return None
        quic._ack_delay = delay
        return space

    @functools.cached_property
    def _one_rtt(self) -> Any:
        return importlib.import_module(f"{self.package}.tls").Epoch.ONE_RTT


class _Qh3(Engine):
    name = "qh3"
    package = "qh3"
    early_timers = True
    congestion_control = False  # its native core has its own controller: `options` refuses congestion_control

    def server(self, *, configuration: Any, create_protocol: Callable[..., Any], retry: bool) -> QuicServerLike:
        # qh3's own Retry tokens are RSA-2048: a new key per server (~0.1-0.3 s at every listen) and an RSA
        # decryption per token presented (~1 ms of CPU an attacker can ask for with every datagram). Its server
        # takes any object with the same two methods: ours is AES-GCM, bound to the address, valid 30 s.
        server = self._server_class(configuration=configuration, create_protocol=create_protocol, retry=False)
        if retry:
            if "_retry" not in vars(server):  # private: pinned by tests/quic; never run without the Retry asked for
                raise errors.PluginError("qh3's QuicServer no longer has _retry: cannot install Retry tokens")
            server._retry = _RetryTokens()  # same two methods, not its class
        typed: QuicServerLike = server
        return typed

    def peer_certificate(self, quic: Any) -> bytes | None:
        cert = quic.get_peercert()
        if cert is None:
            return None
        der: bytes = cert.public_bytes()
        return der

    def unsent(self, quic: Any, stream: int) -> int:
        size: int = quic.get_send_buffer_size(stream)
        return size

    def receive(self, quic: Any, datagrams: list[tuple[bytes, Any]], now: float) -> None:
        if len(datagrams) > 1 and all(addr == datagrams[0][1] for _, addr in datagrams):
            quic.receive_many_datagrams([data for data, _ in datagrams], datagrams[0][1], now=now)
        else:
            super().receive(quic, datagrams, now)

    def warm_up(self) -> None:
        logging.getLogger("quic").addFilter(_quiet_clean_close)
        # qh3's first ClientHello in a process costs ~20 ms (its first X25519MLKEM768 key share initialises the
        # native library); a throw-away connection that never touches a socket pays it here instead.
        self.connection(self._configuration_class(is_client=True)).connect(("127.0.0.1", 9), now=0.0)


class _RetryTokens:
    """Retry tokens for qh3's server, as aioquic makes them: AES-GCM under a key of this process, sealing the
    client's address, both connection ids and the time; valid for `LIFETIME` seconds from that address only."""

    LIFETIME = 30.0

    def __init__(self) -> None:
        self._aead = AESGCM(AESGCM.generate_key(bit_length=128))

    @staticmethod
    def _address(addr: Any) -> bytes:
        return ipaddress.ip_address(addr[0]).packed + int(addr[1]).to_bytes(2, "big")

    def create_token(
        self, addr: Any, original_destination_connection_id: bytes, retry_source_connection_id: bytes
    ) -> bytes:
        odcid, rscid = original_destination_connection_id, retry_source_connection_id
        plain = bytes([len(odcid)]) + odcid + bytes([len(rscid)]) + rscid + int(time.time() * 1000).to_bytes(8, "big")
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plain, self._address(addr))

    def validate_token(self, addr: Any, token: bytes) -> tuple[bytes, bytes]:
        """``(original destination cid, retry source cid)``; ValueError for any token we did not issue to `addr`
        in the last `LIFETIME` seconds (qh3's server then drops the datagram)."""
        try:
            plain = self._aead.decrypt(token[:12], token[12:], self._address(addr))
        except (InvalidTag, ValueError) as exc:
            raise ValueError("invalid Retry token") from exc
        odcid_end = 1 + plain[0]
        odcid, rscid_end = plain[1:odcid_end], odcid_end + 1 + plain[odcid_end]
        rscid, issued = plain[odcid_end + 1 : rscid_end], int.from_bytes(plain[rscid_end:], "big") / 1000
        if not 0 <= time.time() - issued <= self.LIFETIME:
            raise ValueError("expired Retry token")
        return odcid, rscid


def _quiet_clean_close(record: logging.LogRecord) -> bool:
    """qh3 logs every close by the peer at WARNING on the ``quic`` logger, a normal end (error 0) too: drop those
    unless that logger is enabled for DEBUG (errors, and everything else, pass unchanged)."""
    native = record.args[0] if isinstance(record.args, tuple) and record.args else None
    if record.msg == "Native peer close: %r" and isinstance(native, tuple) and len(native) > 2 and native[2] == 0:
        return logging.getLogger("quic").isEnabledFor(logging.DEBUG)
    return True


@functools.cache
def load_engine(name: str) -> Engine:
    """The engine called `name`; `ConfigError` naming ``transport_options.quic.engine`` when it is unknown or not
    installed."""
    key = "transport_options.quic.engine"
    if name not in ENGINES:
        raise ConfigError(f"{key} must be one of {ENGINES}, got {name!r}", key=key, value=name)
    try:
        engine: Engine = _Qh3() if name == "qh3" else _Aioquic()
    except ImportError as exc:
        extra = "stoffelnet-quic[qh3]" if name == "qh3" else "stoffelnet-quic"
        raise ConfigError(
            f"{key} is {name!r}, but {name} is not installed: pip install '{extra}' ({exc})",
            key=key,
            value=name,
        ) from exc
    engine.warm_up()
    return engine
