"""QUIC on aioquic (or qh3): TLS 1.3 inside QUIC, with both sides' keys proven.

The acceptor proves its key in the QUIC handshake: the engine checks the server's CertificateVerify signature on
every connection, and core's `identity.verify_peer` pins the certificate it came with. Neither engine can make the
dialer prove a key in TLS (aioquic only through a private, test-only flag, and even then without checking it; qh3's
server cannot ask for a client certificate at all), so the dialer proves its key in core's handshake instead
(`LinkInfo.dialer_proof`): it signs the acceptor's fresh nonce together with the acceptor's proven key. Either way
nothing is delivered before both keys are proven, on either engine.

The engine (``[transport_options.quic] engine``, see `engines`) is driven sans-IO by this module's own datagram
layer: `_Protocol` feeds one `QuicConnection` the datagrams of its socket (all those waiting, per wakeup), its timer
ticks, and sends what it returns; a listener's socket goes through the engine's ``QuicServer`` only for new
connections, Retry and version negotiation (packets of a connection that is up are routed by connection id here).
Each engine pass (``datagrams_to_send``) costs about as much as the rest of a message's work, so the layer asks for
one per write of core's, and answers what arrives with the next one instead of a pass of its own
(`_Protocol.transmit_soon`): a round trip costs the engine one pass that sends per hop, as a hand-written aioquic
program's two (one of which builds nothing).

Every stoffelnet stream travels on a QUIC stream of its own (`QuicPipe` is a `StreamPipe`: core's channels, and its
flow-control credit, each on one direction of a bidirectional QUIC stream), so a stream that is unread, or waits for a
lost packet, holds up no other. Each side writes first on the other's streams whose direction back is still unused, and
opens a stream only when there is none: half as many QUIC streams as one per channel and direction, and the engine walks
every open stream for each packet it builds or receives. Core's per-stream credit still bounds what each stream may hold
(the engines grant QUIC credit on receipt, not on consumption). The QUIC streams themselves are bounded: the engines
never refuse a write, so `QuicPipe` pauses core's writing while more than ``[transport_options.quic] send_buffer_bytes``
sit unsent in them (a peer that stops reading, a congested path). This module only moves bytes: framing, identity and
retries are core's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any, ClassVar, cast

from stoffelnet_core import errors, keys
from stoffelnet_core.ids import Address, ClientType
from stoffelnet_core.mux import MAX_STREAMS
from stoffelnet_core.transport import (
    ALPN_CLIENT,
    ALPN_PARTY,
    BytePipe,
    LinkInfo,
    Listener,
    PipeReceiver,
    StreamPipe,
    Transport,
    TransportContext,
)

from .engines import Engine, QuicServerLike, load_engine
from .options import QuicOptions

if sys.platform != "win32":  # `_drain` asks the socket what waits; elsewhere it reads until nothing is left
    from fcntl import ioctl
    from termios import FIONREAD

__all__ = ["ALPN", "QuicListener", "QuicPipe", "QuicTransport"]

log = logging.getLogger("stoffelnet.quic")

ALPN = {ClientType.SERVER: ALPN_PARTY, ClientType.CLIENT: ALPN_CLIENT}
_BIDI_CLIENT = 0  # the low two bits of a bidirectional stream id that the dialer opens (RFC 9000, 2.1)
_BIDI_SERVER = 1  # ... that the acceptor opens
_UNI = 2  # the bit of a unidirectional stream id (not used by this protocol)
_PROTOCOL_VIOLATION = 0x0A


def _address(value: object) -> Address | None:
    if isinstance(value, tuple) and len(value) >= 2:
        host = str(value[0])
        if host.startswith("::ffff:"):
            host = host[7:]
        return Address(host, int(value[1]))
    return None


class QuicPipe(StreamPipe):
    """Core's native streams (`StreamPipe`) over one QUIC connection: our stream number ``i`` is our direction of a
    bidirectional QUIC stream, the oldest the peer opened that we do not write on yet, else one we open; the peer's
    stream numbers count its directions in the order their first bytes arrive. Which stream pairs with which does
    not matter (each direction says what it carries in its first bytes); it only saves streams.

    Backpressure: at most `send_limit` bytes sit unsent in our QUIC streams together. What core writes beyond that
    waits here, in order (at most one flush of core's, which stops writing as soon as it is paused), and the pipe
    calls the receiver's `pause_writing`; once the engine has sent what it held, the rest follows, and
    `resume_writing` comes when the unsent bytes are down to half the limit.

    Closing: each side ends (FIN) its direction of every stream it wrote on once all it wrote is in them; the peer's
    end of the connection (`eof_received`) is the end of every direction it wrote on (core closes only once all it
    sent was acknowledged, so none is still on its way), and when both sides have ended theirs the
    connection closes at once (everything before each FIN arrived in order, and core waits for its acknowledgements
    before it closes, so nothing is lost and QUIC's draining period is not waited for).
    """

    def __init__(self, protocol: _Protocol, info: LinkInfo, keepalive: float = 0.0, send_limit: int = 1 << 20) -> None:
        self.info = info
        self._protocol = protocol
        self._quic = protocol.quic
        self._engine = protocol.engine
        self._keepalive = keepalive
        self._send_limit = send_limit
        self._ping: asyncio.TimerHandle | None = None
        self._pings = 0
        if keepalive > 0:
            self._ping = asyncio.get_running_loop().call_later(keepalive, self._send_ping)
        client = bool(protocol.quic.configuration.is_client)
        self._own_kind = _BIDI_CLIENT if client else _BIDI_SERVER  # the low bits of the stream ids we open
        self._peer_kind = _BIDI_SERVER if client else _BIDI_CLIENT
        self._streams: list[int] = []  # the QUIC ids of our streams (our direction of each), by number
        self._opened = 0  # QUIC streams we opened
        self._offered: collections.deque[int] = collections.deque()  # the peer's, whose direction to it is unused
        self._peer: dict[int, int] = {}  # QUIC id -> the number of the peer's stream (its direction to us)
        self._peer_ended: set[int] = set()  # the numbers of the peer's streams that ended
        self._peer_opened = 0  # QUIC streams the peer opened that we have seen
        self._peer_opened_last = -1  # the highest index among them (the peer opens its streams in order)
        self._receiver: PipeReceiver | None = None
        self._held: list[tuple[int, bytes]] = []
        self._eof_held = False
        self._lost: tuple[BaseException | None] | None = None
        self._closing = False
        self._fin_wanted = False  # close() was called: the FINs follow the backlog
        self._sent_fin = False
        self._got_fin = False
        self._ending = False  # the engine refused a write: `terminated` is on its way
        # Written by core, not yet in a QUIC stream: (stream id, bytes, offset of the first byte not yet moved).
        self._backlog: collections.deque[tuple[int, bytes | bytearray | memoryview, int]] = collections.deque()
        self.paused = False  # the receiver was told to pause writing
        # At least `unsent()`: its last value plus what was written since (the engine only ever sends bytes off, so
        # this never falls short). Summing the streams' unsent bytes is needed only when this reaches a bound.
        self._unsent_at_most = 0
        self.on_lost: Callable[[], None] | None = None  # the dialer releases its socket here

    def _send(self, stream_id: int, data: bytes | bytearray | memoryview, end_stream: bool = False) -> bool:
        """Hand `data` to the engine's stream; False if the engine refused because it already ended the connection
        (qh3 raises until its ConnectionTerminated event comes, after the closing period): the pipe is then lost."""
        try:
            self._quic.send_stream_data(stream_id, data, end_stream)
        except Exception as exc:
            self._engine_ended(exc)
            return False
        return True

    def _engine_ended(self, exc: Exception) -> None:
        if self._lost is None and not self._ending:
            self._ending = True
            self._closing = True
            self._backlog.clear()
            with contextlib.suppress(Exception):  # a write on a stream the peer stopped: end the connection too
                self.violation(f"a QUIC stream refused our data: {exc}")
            lost = ConnectionResetError(f"QUIC connection closed: {exc}")
            loop = asyncio.get_running_loop()
            loop.call_soon(self._protocol.transmit)
            loop.call_soon(self.terminated, lost)  # not inside core's own write

    def stream_id(self, number: int) -> int:
        """The QUIC id of our stream `number` (taken from the peer's, or opened, on first use)."""
        streams = self._streams
        while number >= len(streams):
            if self._offered:
                streams.append(self._offered.popleft())
            else:
                streams.append(self._opened * 4 + self._own_kind)
                self._opened += 1
        return streams[number]

    def unsent(self) -> int:
        """Bytes in our QUIC streams that the engine has not sent yet (what `send_limit` bounds)."""
        engine, quic = self._engine, self._quic
        unsent = 0
        for stream_id in self._streams:
            unsent += engine.unsent(quic, stream_id)
        self._unsent_at_most = unsent
        return unsent

    def backlog(self) -> int:
        """Bytes written by core and held here because the QUIC streams were full."""
        return sum(len(data) - start for _, data, start in self._backlog)

    # -- from the protocol ---------------------------------------------------------------------------------------------
    def stream_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        number = self._peer.get(stream_id)
        if number is None:
            if stream_id & _UNI:  # nothing in this protocol opens a unidirectional stream
                self.violation(f"unexpected QUIC stream {stream_id}")
                return
            if len(self._peer) > _MAX_PEER_STREAMS:  # core refuses this many long before, unless they are empty
                self.violation(f"more than {_MAX_PEER_STREAMS} QUIC streams")
                return
            number = self._peer[stream_id] = len(self._peer)
            if stream_id & 3 == self._peer_kind:
                self._offered.append(stream_id)
                self._peer_opened += 1
                self._peer_opened_last = max(self._peer_opened_last, stream_id >> 2)
        if data:
            if self._receiver is not None:
                self._receiver.stream_data_received(number, data)
                self._protocol.got_data = True
            else:
                self._held.append((number, data))
        if end_stream:
            self._peer_ended.add(number)
            if self._peer_ended_all() and not self._got_fin:
                self._got_fin = True
                if self._receiver is not None:
                    self._receiver.eof_received()
                else:
                    self._eof_held = True
                # The peer finished its side: finish ours (if not yet) and end the connection now.
                self._fin_wanted = True
                self._finish_streams()
                if self._sent_fin:
                    self._terminate()

    def _peer_ended_all(self) -> bool:
        """Every direction the peer wrote on has ended: every one seen, and no stream it opened is still unseen (it
        opens them in order, each to write on it; one whose first packet is still being resent is not)."""
        return len(self._peer_ended) == len(self._peer) and self._peer_opened == self._peer_opened_last + 1

    def violation(self, why: str) -> None:
        """The peer broke this protocol's use of QUIC: close the connection (PROTOCOL_VIOLATION)."""
        self._quic.close(error_code=_PROTOCOL_VIOLATION, reason_phrase=why)

    def _send_ping(self) -> None:
        if self._lost is not None:
            return
        self._pings += 1
        try:
            self._quic.send_ping(self._pings)
        except Exception as exc:
            self._engine_ended(exc)
            return
        self._protocol.transmit()
        self._ping = asyncio.get_running_loop().call_later(self._keepalive, self._send_ping)

    def refill(self) -> bool:
        """Called after the engine sent datagrams while core is paused: move held bytes into the QUIC streams (then
        the FINs, if close() waits for them), and let core write again once the streams are down to half the limit.
        True if anything was added to a stream: the caller sends again."""
        moved = self._fill() if self._backlog else False
        if self._backlog:
            return moved
        if self._fin_wanted and not self._sent_fin and self._lost is None:
            if not self._end_streams():
                return False
            if self._got_fin:
                asyncio.get_running_loop().call_soon(self._terminate)
            moved = True
        if self.paused and self._lost is None and self.unsent() <= self._send_limit // 2:
            self.paused = False
            if self._receiver is not None:
                self._receiver.resume_writing()  # core flushes on its next loop turn
        return moved

    def _fill(self) -> bool:
        """Move what the backlog holds into the QUIC streams, in order, up to `send_limit` unsent bytes."""
        room = self._send_limit - self.unsent()
        backlog, send = self._backlog, self._send
        moved = False
        while backlog and room > 0:
            stream_id, data, start = backlog[0]
            left = len(data) - start
            if left <= room:
                backlog.popleft()
                if not send(stream_id, data[start:] if start else data):
                    return False
                room -= left
                self._unsent_at_most += left
            else:
                if not send(stream_id, data[start : start + room]):
                    return False
                backlog[0] = (stream_id, data, start + room)
                self._unsent_at_most += room
                room = 0
            moved = True
        return moved

    def terminated(self, exc: BaseException | None) -> None:
        if self._lost is not None:
            return
        if self._ping is not None:
            self._ping.cancel()
        self._lost = (exc,)
        self._closing = True
        self._backlog.clear()
        if self._receiver is not None:
            self._receiver.connection_lost(exc)
        if self.on_lost is not None:
            self.on_lost()

    # -- StreamPipe ----------------------------------------------------------------------------------------------------
    def set_receiver(self, receiver: PipeReceiver) -> None:
        self._receiver = receiver
        held, self._held = self._held, []
        for number, data in held:
            receiver.stream_data_received(number, data)
        if self.paused:
            receiver.pause_writing()
        if self._eof_held:
            receiver.eof_received()
        if self._lost is not None:
            receiver.connection_lost(self._lost[0])

    def write_streams(self, writes: list[tuple[int, list[bytes | bytearray | memoryview]]]) -> None:
        if self._closing or self._sent_fin or self._fin_wanted:
            return
        backlog, limit, streams = self._backlog, self._send_limit, self._streams
        for number, chunks in writes:
            # One chunk goes as it is (core hands each buffer out once and never changes it again); the engine
            # copies what it is given.
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            size = len(data)
            if not size:
                continue
            stream_id = streams[number] if number < len(streams) else self.stream_id(number)
            if not backlog and (self._unsent_at_most + size <= limit or self.unsent() + size <= limit):
                if not self._send(stream_id, data):  # the common case: the streams have room
                    return
                self._unsent_at_most += size
            else:
                backlog.append((stream_id, data, 0))
        if backlog:
            self._fill()
        self._protocol.transmit()
        if not self.paused and (backlog or (self._unsent_at_most >= limit and self.unsent() >= limit)):
            self.paused = True
            if self._receiver is not None:
                self._receiver.pause_writing()

    def pause_reading(self) -> None:
        """Nothing to do: core's per-stream credit already bounds what the peer may send."""

    def resume_reading(self) -> None:
        """See `pause_reading`."""

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._fin_wanted = True
        self._finish_streams()
        if self._got_fin and self._sent_fin:
            self._terminate()

    def _finish_streams(self) -> None:
        """End our streams once everything written before is in them."""
        if not self._sent_fin and not self._backlog and self._lost is None and self._end_streams():
            self._protocol.transmit()

    def _end_streams(self) -> bool:
        """A FIN on each of our streams (on our stream 0 if we never wrote on one, so that the peer sees our end)."""
        self._sent_fin = True
        for stream_id in self._streams or [self.stream_id(0)]:
            if not self._send(stream_id, b"", end_stream=True):
                return False
        return True

    def _terminate(self) -> None:
        """Both sides ended their streams: close the connection (everything was sent and acknowledged in order)."""
        if self._lost is None:
            self._quic.close(error_code=0, reason_phrase="done")
            self._protocol.transmit()
            self.terminated(None)

    def abort(self) -> None:
        if self._lost is not None:
            return
        self._closing = True
        self._quic.close(error_code=1, reason_phrase="aborted")
        self._protocol.transmit()
        self.terminated(ConnectionAbortedError("QUIC connection aborted locally"))

    def is_closing(self) -> bool:
        return self._closing or self._lost is not None


_BATCH = 64  # datagrams read per wakeup at most
_READ_SIZE = 65536  # bytes read per datagram: more than any UDP datagram holds
_NOTHING = bytes(4)  # FIONREAD's answer when no datagram waits
_SOON = 0.001  # seconds: an engine timer due sooner than this runs on the next loop turn (see `_Protocol.transmit`)
# Loop turns a transmit after received datagrams waits at most, beyond the next one (see `_Protocol.transmit_soon`):
_DEFER = 1  # after acknowledgements (a sender waiting for them may send more at once)
_DEFER_DATA = 3  # after stream data (its acknowledgement waits for the engine's ack delay anyway)
_ENGINE_ACK_DELAY = 0.001  # seconds: aioquic's own (its K_GRANULARITY), for traffic that is not sparse
_FULL_DATAGRAM = 1200  # bytes: a full-sized datagram, for `count_acks` (the size every QUIC path carries)
_MAX_PEER_STREAMS = MAX_STREAMS + 2  # the peer's directions: core's channels, its control and its credit


def _socket(transport: asyncio.BaseTransport) -> socket.socket | None:
    """The socket under asyncio's datagram transport (for `_drain`); None elsewhere: then no batching."""
    sock = getattr(transport, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _drain(sock: socket.socket | None, first: tuple[bytes, Any]) -> list[tuple[bytes, Any]]:
    """`first` and the datagrams already waiting on the socket: asyncio reads one per event-loop turn, and each turn
    costs a full receive pass; reading what is there at once (then transmitting once) is several times cheaper.

    Where it can, it asks the socket whether a datagram waits (FIONREAD) before reading one: a read that finds
    nothing raises, and the exception costs more than the question (one per wakeup, i.e. per datagram in a round
    trip)."""
    batch = [first]
    if sock is None:
        return batch
    if sys.platform == "win32":
        for _ in range(_BATCH - 1):
            try:
                batch.append(sock.recvfrom(_READ_SIZE))
            except OSError:  # BlockingIOError (nothing more waiting), or anything the next normal read will report
                break
    else:
        fd = sock.fileno()
        waiting = bytearray(4)
        for _ in range(_BATCH - 1):
            try:
                ioctl(fd, FIONREAD, waiting)
                if waiting == _NOTHING:  # nothing waiting (or an empty datagram: the next normal read takes it)
                    break
                batch.append(sock.recvfrom(_READ_SIZE))
            except OSError:  # anything the next normal read will report
                break
    return batch


def _small_reads(transport: asyncio.BaseTransport) -> None:
    """Make asyncio read each datagram into a buffer of `_READ_SIZE` bytes rather than its default 256 KiB: glibc
    serves an allocation that large with mmap (and a munmap after it), which costs 5-8 µs per datagram read until
    the process happens to free a large block; 64 KiB come from the heap (under 1 µs)."""
    if getattr(transport, "max_size", 0) > _READ_SIZE:
        with contextlib.suppress(AttributeError):  # a transport class that does not let us change it
            setattr(transport, "max_size", _READ_SIZE)  # noqa: B010 - not in the typed interface


def _ignore(_cid: bytes) -> None:
    """Default connection-id handler (a dialer has no server routing by connection id)."""


class _Protocol(asyncio.DatagramProtocol):
    """One QUIC connection driven sans-IO: datagrams and timer ticks in, events to one `QuicPipe`, datagrams out.

    A dialer's protocol owns its UDP socket; an acceptor's shares its listener's (`_Endpoint`), which creates it
    through the engine's server. Either way what arrived is answered by one deferred transmit (`transmit_soon`).
    """

    def __init__(
        self,
        engine: Engine,
        quic: Any,
        *,
        endpoint: _Endpoint | None = None,
        on_ready: Callable[[_Protocol], None] | None = None,
        ack_delay: float = 0.0,
    ) -> None:
        self.engine = engine
        self.quic = quic
        self._ack_delay = ack_delay  # see `count_acks` (`_ENGINE_ACK_DELAY` or less: the engine's own is kept)
        self.acks: Any = None  # the engine's pending acknowledgement, once delayed (`Engine.delay_acks`)
        self._ack_since = 0.0  # when it became pending
        self._ack_full = 0  # full-sized datagrams arrived since then
        self.endpoint = endpoint
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None  # a dialer's own socket, read by `_drain`
        self._timer: asyncio.Handle | None = None
        self._timer_at: float | None = None
        self._owed = False  # datagrams arrived since the last transmit: one is due (see `transmit_soon`)
        self.got_data = False  # the datagrams being handled brought stream data (`QuicPipe.stream_data`)
        self._clock = 0.0  # the last time given to the engine
        self._on_ready = on_ready
        self.pipe: QuicPipe | None = None
        self.remote: Any = None  # the peer's socket address (the first datagram's source, or the dialled address)
        self.completed = False
        self.alpn: str | None = None
        self.terminated: Any = None  # the engine's ConnectionTerminated: why the connection ended
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.on_end: Callable[[], None] | None = None
        self.deadline: asyncio.TimerHandle | None = None  # an acceptor's handshake timeout
        # Set by the engine's server to route datagrams by connection id.
        self._connection_id_issued_handler: Callable[[bytes], None] = _ignore
        self._connection_id_retired_handler: Callable[[bytes], None] = _ignore
        self._connection_terminated_handler: Callable[[], None] = lambda: None

    # -- what the engine's server calls ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # asyncio's is not a subclass of it in 3.11
        _small_reads(transport)
        self._sock = _socket(transport)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        assert isinstance(data, bytes)
        if self.remote is None:
            self.remote = addr
        now = self.now()
        acks = self.acks
        waiting = acks is not None and acks.ack_at is not None
        full = int(len(data) >= _FULL_DATAGRAM)
        if self.endpoint is None:  # the dialer owns its socket: read what is there, then answer once
            batch = _drain(self._sock, (data, addr))
            if len(batch) > 1:
                full = sum(len(datagram) >= _FULL_DATAGRAM for datagram, _ in batch)
            try:
                self.engine.receive(self.quic, batch, now)
            except Exception as exc:  # an engine bug on a datagram: reported, and this wakeup's events still run
                self._loop.call_exception_handler(
                    {"message": "QUIC engine failed on a datagram", "exception": exc, "protocol": self}
                )
        else:  # one datagram of the listener's socket, routed here by its endpoint
            self.quic.receive_datagram(data, addr, now=now)
        if acks is not None:
            self.count_acks(acks, waiting, full, now)
        self._process_events()
        if not self._owed:
            self.transmit_soon(_DEFER_DATA if self.got_data else _DEFER)

    def close(self) -> None:
        self.quic.close()
        self.transmit()

    def count_acks(self, acks: Any, waiting: bool, full: int, now: float) -> None:
        """Datagrams arrived, `full` of them full-sized; the engine's acknowledgement was pending before (`waiting`)
        or not.

        Delayed acknowledgements: once the handshake is done the engine waits ``ack_delay_ms`` (`Engine.delay_acks`)
        instead of its own 1 ms before it acknowledges. The engine writes a due ACK into the next packet it builds,
        so sparse traffic (a ping-pong, rounds of small messages) is acknowledged about once per delay, mostly by a
        data packet, instead of once per millisecond, mostly by an ACK-only packet of its own sent while the side
        waits for an answer: each such packet costs both ends a whole engine pass (10% of a ping-pong's time,
        measured). Two full-sized datagrams since the acknowledgement became pending make it due at the engine's
        own pace, 1 ms after the first, as TCP acknowledges every second full segment: a bulk sender keeps the ACKs
        its congestion window grows on."""
        if acks.ack_at is None:
            return
        if waiting:
            self._ack_full += full
        else:
            self._ack_since = now
            self._ack_full = full
        if self._ack_full >= 2:
            due = self._ack_since + _ENGINE_ACK_DELAY
            if acks.ack_at > due:
                acks.ack_at = due

    # -- driving the connection --------------------------------------------------------------------------------
    def now(self, at_least: float | None = None) -> float:
        """The time to tell the engine: the loop's, or `at_least` (a timer run early), and never less than last
        time (qh3 closes a connection whose clock goes back)."""
        now = self._loop.time()
        if at_least is not None and at_least > now:
            now = at_least
        if now < self._clock:
            now = self._clock
        self._clock = now
        return now

    def connect(self, addr: Any) -> None:
        self.remote = addr
        self.quic.connect(addr, now=self.now())
        self.transmit()

    def _send_datagrams(self, now: float) -> None:
        transport = self._transport
        try:
            datagrams = self.quic.datagrams_to_send(now=now)
        except Exception as exc:  # an engine fault on one connection: its timers retry; the others go on
            log.warning("QUIC engine could not build datagrams for %s: %r", _address(self.remote), exc)
            return
        if transport is None or transport.is_closing():
            return
        sendto = transport.sendto
        for data, addr in datagrams:
            sendto(data, addr)

    def transmit_soon(self, turns: int = _DEFER) -> None:
        """Transmit after received datagrams: what they call for (acknowledgements, flow-control updates, a
        handshake's next flight, data the engine may now send) goes out within `turns` + 1 loop turns, or with the
        next transmit if one comes first.

        Received data usually wakes a task that answers it: the task runs on the next loop turn, and core writes the
        answer on that same turn (it flushes after every arrival, after the tasks the arrival woke), so the answer's
        transmit carries what the arrival called for. A transmit right after the datagrams, as aioquic's own
        protocol does, would mostly build nothing (the engine delays its acknowledgements) at the cost of one that
        sends: a ping-pong paid one such engine pass per hop. After stream data the transmit waits longer (its
        acknowledgement waits for the engine's ack delay anyway, and an answer may take a few turns); after
        acknowledgements alone it goes on the turn after next (a sender they free may send more at once)."""
        if not self._owed:
            self._owed = True
            self._loop.call_soon(self._transmit_owed, turns)

    def _transmit_owed(self, turns: int) -> None:
        if not self._owed:
            return  # another transmit came first
        if turns:
            self._loop.call_soon(self._transmit_owed, turns - 1)
        else:
            self.transmit()

    def transmit(self, now: float | None = None) -> None:
        """Send what the connection has to send, top its stream up from the pipe's backlog, and re-arm the timer.

        `now` is the loop's time unless a timer runs early (see below): then it is the timer's time."""
        self._owed = False
        now = self.now(now)
        self._send_datagrams(now)
        pipe = self.pipe
        if pipe is not None and pipe.paused and pipe.refill():
            self._send_datagrams(now)
        timer_at = self.quic.get_timer()
        if self._timer is not None and self._timer_at != timer_at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and timer_at is not None:
            if timer_at - now < _SOON and self.engine.early_timers:
                # qh3 paces its datagrams: its timer is often due in well under a millisecond, and the event loop's
                # timers wake at millisecond granularity (epoll), which added 1-5 ms to a quarter of all round trips.
                # Due this soon, the timer runs on the next loop turn instead, as if its time had come (a paced
                # datagram leaves up to 1 ms early: a burst no larger than a millisecond's worth of the pace).
                self._timer = self._loop.call_soon(self._handle_timer)
            else:
                self._timer = self._loop.call_at(timer_at, self._handle_timer)
        self._timer_at = timer_at

    def _handle_timer(self) -> None:
        now = self.now(self._timer_at)
        self._timer = None
        self._timer_at = None
        self.quic.handle_timer(now=now)
        self._process_events()
        self.transmit(now)

    def _process_events(self) -> None:
        self.got_data = False
        engine, quic = self.engine, self.quic
        event = quic.next_event()
        while event is not None:
            kind = type(event)
            if kind is engine.StreamDataReceived:
                if self.pipe is not None:
                    self.pipe.stream_data(event.stream_id, event.data, event.end_stream)
            elif kind is engine.HandshakeCompleted:
                self.completed = True
                self.alpn = event.alpn_protocol
                if self._ack_delay > _ENGINE_ACK_DELAY:
                    self.acks = engine.delay_acks(quic, self._ack_delay)
                    self._ack_since = self._clock
                if self._on_ready is not None:
                    self._on_ready(self)
            elif kind is engine.ConnectionIdIssued:
                self._connection_id_issued_handler(event.connection_id)
            elif kind is engine.ConnectionIdRetired:
                self._connection_id_retired_handler(event.connection_id)
            elif kind is engine.ConnectionTerminated:
                self._ended(event)
            elif kind is engine.StreamReset or kind is engine.StopSendingReceived:
                if self.pipe is not None:  # this protocol ends streams only with a FIN
                    self.pipe.violation(f"{kind.__name__} on QUIC stream {event.stream_id}")
            event = quic.next_event()

    def _ended(self, event: Any) -> None:
        self.terminated = event
        self._connection_terminated_handler()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.closed.done():
            self.closed.set_result(None)
        if self.on_end is not None:
            self.on_end()
        if self.pipe is not None:
            clean = event.error_code == 0
            self.pipe.terminated(
                None
                if clean
                else ConnectionResetError(f"QUIC connection closed: {event.reason_phrase or event.error_code}")
            )


class _Endpoint(asyncio.DatagramProtocol):
    """A listener's UDP socket: drains it per wakeup into the engine's server (which routes each datagram to its
    connection, or answers with a Retry); each connection then answers what it got once (`transmit_soon`)."""

    def __init__(self, engine: Engine, configuration: Any, create: Callable[..., _Protocol], retry: bool) -> None:
        self.server: QuicServerLike = engine.server(configuration=configuration, create_protocol=create, retry=retry)
        self._routes = self.server._protocols  # connection id -> its protocol (the server keeps it up to date)
        self._cid_end = 1 + int(configuration.connection_id_length)  # a short header's id: data[1:_cid_end]
        self._transport: asyncio.DatagramTransport | None = None
        self._sock: socket.socket | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # asyncio's is not a subclass of it in 3.11
        _small_reads(transport)
        self._sock = _socket(transport)
        self.server.connection_made(transport)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        assert isinstance(data, bytes)
        for datagram, source in _drain(self._sock, (data, addr)):
            try:
                self.dispatch(datagram, source)
            except Exception as exc:  # an engine bug on one datagram must not stall the rest of the batch
                self._loop.call_exception_handler(
                    {"message": "QUIC engine failed on a datagram", "exception": exc, "protocol": self}
                )

    def dispatch(self, data: bytes, addr: Any) -> None:
        """One datagram to the engine's server: to the connection it belongs to, or a new one, or a Retry.

        A short-header packet (RFC 9000, 17.3: the first bit clear, the fixed bit set) is routed here, by its
        connection id, as the server would: to that connection, or nowhere (only a long-header Initial may start a
        connection). That is every packet once a connection is up, and the server's header parse costs more than
        the rest of the routing."""
        if data and data[0] & 0xC0 == 0x40:
            protocol = self._routes.get(data[1 : self._cid_end])
            if protocol is not None:
                protocol.datagram_received(data, addr)
            return
        self.server.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors (a peer's port closed): QUIC's own timers deal with a peer that is gone."""

    def close(self) -> None:
        self.server.close()


class QuicListener(Listener):
    def __init__(self, address: Address, transport: asyncio.DatagramTransport, endpoint: _Endpoint) -> None:
        self.address = address
        self._transport = transport
        self._endpoint = endpoint

    async def close(self) -> None:
        self._endpoint.close()


class QuicTransport(Transport):
    """QUIC on aioquic or qh3; see the module docstring."""

    name: ClassVar[str] = "quic"

    def __init__(self, context: TransportContext) -> None:
        super().__init__(context)
        self.options = QuicOptions.from_mapping(context.options)
        self.engine = load_engine(self.options.engine)
        creds = context.credentials
        if creds is None:
            raise errors.ConfigError("the quic transport needs [tls] cert and key", key="tls")
        keys.load_identity(creds.cert, creds.key)  # clear errors now: missing, mismatched, expired
        self._creds = creds
        self._keepalive = min(self.options.keepalive_interval_ms, self.options.idle_timeout_ms // 2) / 1000
        self._ack_delay = self.options.ack_delay_ms / 1000

    def _configuration(self, *, client: bool, alpn: list[str], host: str) -> Any:
        opts = self.options
        return self.engine.configuration(
            client=client,
            alpn=alpn,
            idle_timeout=opts.idle_timeout_ms / 1000,
            max_datagram_size=opts.datagram_size_for(host),
            congestion_control=opts.congestion_control,
            max_data=opts.max_data,
            max_stream_data=opts.max_stream_data,
            cert=self._creds.cert,
            key=self._creds.key,
        )

    def _pipe(self, protocol: _Protocol, transport: asyncio.BaseTransport | None) -> QuicPipe:
        client = protocol.quic.configuration.is_client
        local = _address(transport.get_extra_info("sockname")) if transport is not None else None
        info = LinkInfo(
            self.name,
            remote_address=_address(protocol.remote),
            local_address=local,
            peer_certificate=self.engine.peer_certificate(protocol.quic) if client else None,
            alpn=protocol.alpn,
            dialer_proof=True,
        )
        pipe = QuicPipe(protocol, info, self._keepalive, self.options.send_buffer_bytes)
        protocol.pipe = pipe
        return pipe

    async def listen(self, address: Address, on_pipe: Callable[[BytePipe], None]) -> Listener:
        loop = asyncio.get_running_loop()
        engine = self.engine
        configuration = self._configuration(client=False, alpn=list(ALPN.values()), host=address.host)
        holder: dict[str, asyncio.DatagramTransport] = {}

        def settled(protocol: _Protocol) -> None:
            """The handshake completed or the connection ended: no longer pending, and its deadline (which would
            hold the connection in memory until it fires) is cancelled."""
            pending.pop(protocol, None)
            if protocol.deadline is not None:
                protocol.deadline.cancel()
                protocol.deadline = None

        def ready(protocol: _Protocol) -> None:
            settled(protocol)
            on_pipe(self._pipe(protocol, holder.get("t")))

        pending: dict[_Protocol, None] = {}  # handshakes in progress, oldest first
        timeout = self.options.handshake_timeout_ms / 1000

        def refuse(protocol: _Protocol, why: str) -> None:
            pending.pop(protocol, None)
            if not protocol.completed and protocol.terminated is None:
                log.warning("AuthenticationError: refused a QUIC connection: %s", why)
                protocol.quic.close(error_code=0x2, reason_phrase=why)  # CONNECTION_REFUSED
                protocol.transmit()

        endpoint: _Endpoint | None = None

        def create_protocol(quic: Any, **_kwargs: Any) -> _Protocol:
            protocol = _Protocol(engine, quic, endpoint=endpoint, on_ready=ready, ack_delay=self._ack_delay)
            if len(pending) >= self.options.max_pending_handshakes:
                # Full: drop the OLDEST handshake, not the newcomer, so that a few hundred silent handshakes
                # (slow-loris) cannot lock legitimate dialers out; an honest handshake takes milliseconds.
                oldest = next(iter(pending))
                settled(oldest)
                loop.call_soon(refuse, oldest, "dropped: the oldest QUIC handshake in progress, to admit a newer one")
            pending[protocol] = None
            protocol.on_end = lambda: settled(protocol)
            protocol.deadline = loop.call_later(
                timeout, refuse, protocol, "its QUIC handshake did not complete in time"
            )
            return protocol

        endpoint = _Endpoint(engine, configuration, create_protocol, self.options.address_validation)
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: endpoint, local_addr=(address.host, address.port)
            )
        except OSError as exc:
            raise errors.InitializationFailed(f"cannot listen on {address} (UDP): {exc.strerror or exc}") from exc
        holder["t"] = transport
        bound = _address(transport.get_extra_info("sockname")) or address
        return QuicListener(Address(address.host, bound.port), transport, endpoint)

    async def dial(self, address: Address, *, role: ClientType) -> BytePipe:
        loop = asyncio.get_running_loop()
        configuration = self._configuration(client=True, alpn=[ALPN[role]], host=address.host)
        try:
            infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise errors.InitializationFailed(f"cannot resolve {address}: {exc}") from exc
        family, _, _, _, addr = infos[0]
        local = _local_bind(family, str(addr[0]))
        ready = loop.create_future()

        def on_ready(protocol: _Protocol) -> None:
            if not ready.done():
                ready.set_result(None)

        connection = self.engine.connection(configuration)
        protocol = _Protocol(self.engine, connection, on_ready=on_ready, ack_delay=self._ack_delay)
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: protocol, local_addr=local, family=family)
        except OSError as exc:
            raise errors.InitializationFailed(f"cannot open a UDP socket for {address}: {exc}") from exc
        try:
            protocol.connect(addr)
            async with asyncio.timeout(self.context.connect_timeout):
                await asyncio.wait({ready, protocol.closed}, return_when=asyncio.FIRST_COMPLETED)
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
        pipe = self._pipe(protocol, transport)
        pipe.on_lost = transport.close
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
