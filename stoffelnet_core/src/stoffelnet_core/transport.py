"""The transport plugin interface: what a transport implements, and what core gives it.

A transport only moves bytes. It dials and listens, runs TLS where it has it, and hands core a `BytePipe`: one
ordered, reliable byte pipe per connection, with what the transport proved about the peer in `LinkInfo`. Framing,
streams (core's multiplexer), handshakes, identity policy, retries, queues and logging setup are core's.

The shape follows asyncio's Transport/Protocol pair because that is what socket transports already have: core's
`PipeReceiver` is called with the bytes, the transport's `BytePipe` is written to. Callbacks run on the event loop.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar

import attrs

from .ids import Address, ClientType

__all__ = [
    "ALPN_CLIENT",
    "ALPN_PARTY",
    "PLUGIN_API_VERSION",
    "BytePipe",
    "Credentials",
    "LinkInfo",
    "Listener",
    "PipeReceiver",
    "StreamPipe",
    "Transport",
    "TransportContext",
    "read_options",
]

ALPN_PARTY = "stoffelnet/1-party"  # what a TLS transport negotiates for a party's connection
ALPN_CLIENT = "stoffelnet/1-client"  # ... and for a client's; core checks it against the Handshake's role

PLUGIN_API_VERSION = 1
"""Version of this interface; a plugin declaring another major version is listed as broken, never loaded."""


@attrs.frozen
class LinkInfo:
    """What the transport proved about one connection (typed, instead of ``get_extra_info("...")`` strings)."""

    transport: str
    remote_address: Address | None = None
    local_address: Address | None = None
    peer_certificate: bytes | None = None  # DER of the certificate the peer proved possession of in TLS
    alpn: str | None = None
    trusted: bool = False  # True only for in-process transports: the claimed identity is taken as proven
    dialer_proof: bool = False  # the transport does not authenticate the dialer: core's handshake makes it sign


class PipeReceiver(Protocol):
    """Core's side of a byte pipe; the transport calls these on the event loop."""

    def data_received(self, data: bytes | memoryview) -> None:
        """The next bytes of the pipe. A memoryview is valid only during the call (the transport may read into the
        same buffer next): core copies what it keeps, so a transport may pass either."""

    def eof_received(self) -> None: ...

    def connection_lost(self, exc: BaseException | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...

    def stream_data_received(self, index: int, data: bytes | memoryview) -> None:
        """For a `StreamPipe`: the next bytes of the peer's native stream number `index` (same validity as
        `data_received`)."""


class BytePipe(abc.ABC):
    """One ordered, reliable byte pipe to a peer (a TCP+TLS connection, an in-memory pair, a Unix socket).

    Until `set_receiver` is called, bytes that arrive are held (bounded by the transport's own read buffer).
    """

    info: LinkInfo

    @abc.abstractmethod
    def set_receiver(self, receiver: PipeReceiver) -> None:
        """Start delivering to `receiver`; anything held so far is delivered first."""

    @abc.abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes for sending; never blocks. The transport calls `pause_writing` when its buffer is high."""

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Queue several chunks at once (one system call where the transport can)."""
        for chunk in chunks:
            self.write(chunk)

    @abc.abstractmethod
    def pause_reading(self) -> None:
        """Stop calling `data_received` until `resume_reading`."""

    @abc.abstractmethod
    def resume_reading(self) -> None:
        """Undo `pause_reading`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush what was written, then close; `connection_lost(None)` follows."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Close at once, dropping unsent bytes; `connection_lost` follows."""

    @abc.abstractmethod
    def is_closing(self) -> bool:
        """True once `close` or `abort` was called or the connection ended."""


class StreamPipe(BytePipe):
    """A connection with native, independent, ordered streams (QUIC): core writes each of its channels, and its
    flow-control credit, to a native stream of its own, so that a stream held up (unread, or waiting for a lost
    packet) never holds up another.

    Core numbers its native streams 0, 1, 2 ... in order of first use, in each direction, and says in each stream's
    first bytes what it carries (`mux.StreamMultiplexer`); the transport maps our numbers to its own stream ids and the
    peer's ids back to numbers (QUIC: our direction of a bidirectional stream, see `stoffelnet_quic.QuicPipe`). It calls
    the receiver's `stream_data_received` for arriving bytes, and `eof_received` once every stream of the peer ended.
    Nothing is written through `write`/`writelines`.
    """

    @abc.abstractmethod
    def write_streams(self, writes: list[tuple[int, list[bytes | bytearray | memoryview]]]) -> None:
        """Queue each ``(number, chunks)``: the chunks go, in order, to our native stream `number` (one call per
        flush of core's, so that the transport can send once). Never blocks; `pause_writing` as for `write`."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError("a StreamPipe is written per stream: write_streams")


class Listener(abc.ABC):
    """A listening endpoint; `address` is the bound address (the real port when 0 was asked for)."""

    address: Address

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop accepting; connections already handed to core are not affected."""


@attrs.frozen
class Credentials:
    """Our certificate and key (PEM files), for transports that run TLS; verification policy stays in core."""

    cert: str
    key: str


@attrs.frozen
class TransportContext:
    """What core gives a transport when it creates it."""

    options: Mapping[str, Any] = attrs.field(factory=dict)  # the config's [transport_options.<name>] table
    credentials: Credentials | None = None
    connect_timeout: float = 30.0  # seconds, for one dial attempt (core retries)
    party_certificates: tuple[str, ...] = ()  # PEM files of every party: what a dialer may reach
    client_certificates: tuple[str, ...] = ()  # PEM files of every allowed client: what a party may also accept


OptionsT = TypeVar("OptionsT")


def read_options(cls: type[OptionsT], transport: str, options: Mapping[str, Any]) -> OptionsT:
    """Build a transport's frozen options class from its ``[transport_options.<transport>]`` table.

    Unknown keys and non-positive integers are refused with a `ConfigError` naming the key; a field whose default
    is a string takes a string, one whose default is a bool takes true or false. The transport checks ranges and
    choices after this.
    """
    from . import errors

    fields = {f.name: f for f in attrs.fields(cls)}  # type: ignore[arg-type]
    for key, value in options.items():
        where = f"transport_options.{transport}.{key}"
        if key not in fields:
            raise errors.ConfigError(f"unknown key {where}; known keys: {', '.join(sorted(fields))}", key=where)
        if isinstance(fields[key].default, bool):
            if not isinstance(value, bool):
                raise errors.ConfigError(f"{where} must be true or false, got {value!r}", key=where, value=value)
        elif isinstance(fields[key].default, str):
            if not isinstance(value, str):
                raise errors.ConfigError(f"{where} must be a string, got {value!r}", key=where, value=value)
        elif type(value) is not int or value <= 0:
            raise errors.ConfigError(f"{where} must be a positive integer, got {value!r}", key=where, value=value)
    return cls(**dict(options))


class Transport(abc.ABC):
    """A way to move bytes between members. Subclasses set `name` and implement `listen` and `dial`.

    Both methods try once and raise: core owns retries, backoff and identity checks. Native errors (OSError,
    ssl.SSLError) are translated to `errors.InitializationFailed` (with ``from exc``).
    """

    name: ClassVar[str]
    uvloop: ClassVar[bool] = False
    """Whether this transport runs at least as fast on uvloop as on asyncio's own loop (measured): only then does
    ``event_loop = "uvloop"`` use uvloop for it. False by default: never slower by surprise."""

    def __init__(self, context: TransportContext) -> None:
        self.context = context

    @abc.abstractmethod
    async def listen(self, address: Address, on_pipe: Callable[[BytePipe], None]) -> Listener:
        """Bind `address` and call `on_pipe` for each accepted connection (after TLS, before any data)."""

    @abc.abstractmethod
    async def dial(self, address: Address, *, role: ClientType) -> BytePipe:
        """Connect once to `address`, within `context.connect_timeout`, announcing `role` (e.g. by ALPN)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook with a do-nothing default
        """Release transport-wide resources (shared sockets, engines); the default has none."""
