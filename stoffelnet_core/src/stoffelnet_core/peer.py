"""`PeerConnection`: drives one `Session` over one transport `BytePipe` through core's `Multiplexer`.

Shaped like aioquic's asyncio protocol: bytes in -> mux and session events -> deliveries; writes are queued and
flushed once per event-loop turn (many small messages become one ``writelines``). Waiters are futures woken by
events, and all of them are failed when the connection ends.

A `PeerConnection` outlives its transport connection: when the pipe drops unexpectedly and the owner allows it
(`MessageSink.connection_interrupted`), it goes RECONNECTING, keeps accepting sends into the peer's resend buffer
(`resume.Ledger`), and when the same peer comes back on a new pipe it takes that pipe over (`adopt`) and sends
again what was not acknowledged. Each pipe is watched through its own `_Link`, so a dead pipe's late callbacks
and a dead connection's flow-control credit are ignored.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import operator
from typing import Protocol, cast

from . import errors, mux, session
from .frames import Tag
from .ids import Address, ClientType
from .resume import Ledger
from .transport import BytePipe, LinkInfo, StreamPipe

__all__ = ["ConnectionState", "MessageSink", "PeerConnection"]

log = logging.getLogger("stoffelnet.peer")

_PAYLOAD = operator.itemgetter(3)  # of a session.MessageReceived
_ACK_DELAY = 0.01  # seconds: received messages are acknowledged within this (or at once past the ledger's threshold)


class ConnectionState(enum.Enum):
    """``CONNECTED -> CLOSING -> CLOSED``, and ``CONNECTED -> DISCONNECTED`` on an unexpected loss."""

    CONNECTED = "connected"
    RECONNECTING = "reconnecting"  # the pipe dropped; waiting for the same peer to come back (resume)
    CLOSING = "closing"
    CLOSED = "closed"
    DISCONNECTED = "disconnected"


class MessageSink(Protocol):
    """Where a connection delivers what it receives (the owning `Network` or `Client`)."""

    def handshake_completed(self, conn: PeerConnection) -> None:
        """Register the newly identified connection; raise `AuthenticationError` to refuse it."""

    def messages_received(
        self, conn: PeerConnection, events: list[session.MessageReceived], source: CreditSource
    ) -> None:
        """Application messages from `conn`, in order (one call per batch of received bytes); hand each one's
        credit to ``source.consumed`` when the application takes it."""

    async def receive_on(self, conn: PeerConnection, stream: int, tag: Tag | None, timeout: float | None) -> bytes:
        """The next message that arrived on `conn` (for `PeerConnection.receive`)."""
        ...

    def connection_changed(self, conn: PeerConnection) -> None: ...

    def connection_interrupted(self, conn: PeerConnection) -> bool:
        """The pipe dropped unexpectedly: True to wait for the peer to come back (and redial if we dial it)."""
        ...


class CreditSource(Protocol):
    def consumed(self, stream: int, credit: int) -> None: ...


class _Link:
    """One pipe under a `PeerConnection`: forwards the pipe's callbacks while it is the connection's current one."""

    __slots__ = ("conn", "mux", "pipe", "session")

    def __init__(self, conn: PeerConnection, pipe: BytePipe, sess: session.Session, mx: mux.Multiplexer) -> None:
        self.conn = conn
        self.pipe = pipe
        self.session = sess
        self.mux = mx

    def data_received(self, data: bytes | memoryview) -> None:
        conn = self.conn
        if conn._link is self:
            conn._data_received(data)

    def stream_data_received(self, index: int, data: bytes | memoryview) -> None:
        conn = self.conn
        if conn._link is self:
            conn._data_received(data, index)

    def eof_received(self) -> None:
        if self.conn._link is self:
            self.conn._eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.conn._link is self:
            self.conn._connection_lost(exc)

    def pause_writing(self) -> None:
        if self.conn._link is self:
            self.conn._write_paused = True

    def resume_writing(self) -> None:
        if self.conn._link is self:
            self.conn._write_paused = False
            self.conn._schedule_flush()

    def consumed(self, stream: int, credit: int) -> None:
        """Credit for a message this pipe delivered; a replaced pipe's credit is void (its window died with it).

        `PeerConnection.consumed`, inlined: it runs once per message taken."""
        conn = self.conn
        if conn._link is self and (conn.state is ConnectionState.CONNECTED or conn.state is ConnectionState.CLOSING):
            channel = stream + 1
            amount = self.session.consumed(channel, credit)
            if amount and self.mux.acknowledge(channel, amount):
                conn._schedule_flush()


class PeerConnection:
    """One authenticated connection to a party or client.

    Sending waits while the stream's queued bytes exceed `send_limit` (backpressure); receiving happens through
    the owning network's inbox (`Network.receive_from`), so this class delivers rather than reads.
    """

    def __init__(
        self,
        pipe: BytePipe,
        sess: session.Session,
        *,
        window: int,
        send_limit: int,
        sink: MessageSink | None = None,
        keepalive: float = 0.0,
    ) -> None:
        self._pipe = pipe
        self._session = sess
        self._window = window
        self._native = isinstance(pipe, StreamPipe)  # core's channels on the transport's own streams (QUIC)
        self._mux = mux.StreamMultiplexer(window=window) if self._native else mux.Multiplexer(window=window)
        self._link = _Link(self, pipe, sess, self._mux)
        self._ledger: Ledger | None = None  # the peer's sequence state, once it is proven
        self._closing = False  # close() began: a resumed connection goes on closing
        self._adopted_by: PeerConnection | None = None  # this connection's pipe now serves that one
        self._send_limit = send_limit
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._answering = False  # the application sent since the last arrival of messages (native streams)
        self._reply_due = False  # ... and then some came: its next send writes at once (`_replying`)
        self._handshake_started = 0.0
        self._write_paused = False
        self._send_waiters: list[asyncio.Future[None]] = []
        self._handshake: asyncio.Future[session.PeerIdentity] = self._loop.create_future()
        self._closed_event = asyncio.Event()
        self.state = ConnectionState.CONNECTED
        self.error: errors.StoffelnetError | None = None  # why the connection ended, when it was not a clean close
        self.stats = _PeerCounters()
        # Keep-alive: a Ping after `keepalive` seconds of sending nothing; a peer heard from for 3x that is gone,
        # even if no FIN or RST ever comes (a cut cable, a silent middlebox, a frozen process).
        self._keepalive = keepalive
        self._last_in = self._last_out = self._loop.time()
        self._keepalive_timer = self._loop.call_later(keepalive, self._keepalive_tick) if keepalive > 0 else None
        self._ack_timer: asyncio.TimerHandle | None = None
        self.interrupted_at = 0.0  # loop time of the last unexpected loss (resume is timed from it)
        pipe.set_receiver(self._link)

    # -- identity --------------------------------------------------------------------------------------------------
    @property
    def info(self) -> LinkInfo:
        return self._pipe.info

    @property
    def peer(self) -> session.PeerIdentity | None:
        return self._session.peer

    @property
    def role(self) -> ClientType | None:
        """The peer's role (the seed's `get_connection_role`)."""
        return self._session.peer.role if self._session.peer else None

    @property
    def remote_party_id(self) -> int | None:
        peer = self._session.peer
        return peer.id if peer is not None and peer.role is ClientType.SERVER else None

    @property
    def remote_address(self) -> Address | None:
        return self._pipe.info.remote_address

    def is_connected(self) -> bool:
        return self.state is ConnectionState.CONNECTED and self._session.state is session.SessionState.OPEN

    @property
    def ledger(self) -> Ledger | None:
        """The peer's sequence numbers and resend buffer (None until the peer is proven)."""
        return self._session.ledger

    def set_sink(self, sink: MessageSink) -> None:
        self._sink = sink

    async def handshake(self, timeout: float) -> session.PeerIdentity:
        """Run the handshake (the dialer speaks first); returns the verified peer identity.

        Raises `AuthenticationError`, `FramingError`, `ConnectionLost` or `Timeout`; on any of them the pipe is
        aborted.
        """
        if self._session.dialer:
            self._handshake_started = self._loop.time()
            self._session.initiate()
            self._schedule_flush()
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self._handshake)
        except TimeoutError:
            exc = errors.Timeout(
                f"handshake with {self.remote_address} timed out after {timeout:.1f}s", timeout=timeout
            )
            self._fail(exc)
            raise exc from None
        except BaseException:
            if not self._handshake.done():
                self._fail(errors.ConnectionLost("handshake cancelled"))
            raise

    # -- sending ---------------------------------------------------------------------------------------------------
    def max_payload(self) -> int:
        return self._session.max_payload()

    def send_nowait(self, data: bytes | bytearray | memoryview, *, stream: int = 0, tag: Tag | None = None) -> bool:
        """Queue one message if the stream has room; False (nothing queued) when `send` would have to wait."""
        channel = stream + 1
        mx = self._mux
        if mx.queued(channel) >= self._send_limit:
            return False
        ledger = self._ledger
        if ledger is not None and ledger.unacked_bytes >= ledger.limit:
            return False  # the resend buffer is full: wait for the peer's acks
        if self.state is not ConnectionState.CONNECTED:
            self._check_sendable()  # raises the connection's own error (e.g. ConnectionLost naming the party)
            if self.state is ConnectionState.RECONNECTING:
                assert ledger is not None
                ledger.frame(stream, data, tag)  # kept, and sent when the peer is back
                self.stats.messages_sent += 1
                self.stats.bytes_sent += len(data)
                return True
        sess = self._session
        if ledger is None or sess.state is not session.SessionState.OPEN or sess.sent_close:
            mx.send(channel, sess.send_data(stream, data, tag))  # raises InvalidState unless open
        else:
            head, payload = ledger.frame_parts(stream, data, tag)  # numbered, and kept until acknowledged
            mx.send_frame(channel, head, payload)
        counters = self.stats
        counters.messages_sent += 1
        counters.bytes_sent += len(data)
        self._answering = True
        if self._reply_due:
            self._reply_due = False
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return True

    async def send(self, data: bytes | bytearray | memoryview, *, stream: int = 0, tag: Tag | None = None) -> None:
        """Queue one message on `stream`; waits while that stream's queued bytes are over the limit.

        A cancellation while waiting leaves nothing queued.
        """
        while not self.send_nowait(data, stream=stream, tag=tag):
            self._check_sendable()
            waiter = self._loop.create_future()
            self._send_waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._send_waiters:
                    self._send_waiters.remove(waiter)

    async def send_on_stream(self, stream: int, data: bytes | bytearray | memoryview) -> None:
        """The seed's name for `send` on a given stream."""
        await self.send(data, stream=stream)

    async def receive(self, *, stream: int = 0, tag: Tag | None = None, timeout: float | None = None) -> bytes:
        """The next message from this peer on `stream` (the same queue as `Network.receive_from`)."""
        if self._sink is None or self._session.peer is None:
            raise errors.InvalidState("connection is not established", state=self.state)
        return await self._sink.receive_on(self, stream, tag, timeout)

    async def receive_from_stream(self, stream: int, *, timeout: float | None = None) -> bytes:
        """The seed's name for `receive` on a given stream."""
        return await self.receive(stream=stream, timeout=timeout)

    def _check_sendable(self) -> None:
        """Raise what a send on this connection must raise now: the peer's doing, or our own misuse."""
        if self.state is ConnectionState.RECONNECTING:
            if self._closing:
                raise errors.InvalidState("connection is closing", state=self.state, peer=self._peer_id())
            return
        if self.state is ConnectionState.CONNECTED and self._session.state is session.SessionState.OPEN:
            if self._session.sent_close:
                raise errors.InvalidState("connection is closing", state=self.state, peer=self._peer_id())
            return
        if self.error is not None:
            raise self.error
        if self._session.received_close and not self._session.sent_close:
            raise errors.StreamClosed(f"{self._peer_label()} closed the connection", peer=self._peer_id())
        raise errors.InvalidState(
            f"cannot send to {self._peer_label()}: connection is {self.state.value}",
            state=self.state,
            peer=self._peer_id(),
        )

    def send_buffered(self) -> int:
        """Bytes accepted for sending and not yet handed to the transport."""
        return sum(self._mux.queued(ch) for ch in list(self._mux._out))

    def receive_buffered(self) -> int:
        """Bytes received and not yet consumed by the application."""
        return sum(self._mux.buffered(ch) for ch in list(self._mux._in))

    def unacknowledged(self) -> int:
        """Bytes sent (or accepted for sending) that the peer has not acknowledged yet."""
        ledger = self._session.ledger
        return ledger.unacked_bytes if ledger is not None else 0

    def consumed(self, stream: int, credit: int) -> None:
        """The application took a message worth `credit` bytes of `stream`: return the credit to the peer."""
        if self.state is not ConnectionState.CONNECTED and self.state is not ConnectionState.CLOSING:
            return
        channel = stream + 1
        amount = self._session.consumed(channel, credit)
        if amount and self._mux.acknowledge(channel, amount):
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._adopted_by is not None:
            self._adopted_by._schedule_flush()
            return
        if self._pipe.is_closing():
            return
        sess = self._session
        if sess.has_outgoing:
            for channel, frame in sess.data_to_send():
                self._mux.send(channel, frame)
        if self._write_paused:
            return
        if self._native:
            writes = cast(mux.StreamMultiplexer, self._mux).streams_to_send()
            if not writes:
                return
            cast(StreamPipe, self._pipe).write_streams(writes)
        else:
            chunks = self._mux.data_to_send()
            if not chunks:
                return
            self._pipe.writelines(chunks)
        self._last_out = self._loop.time()
        if self._send_waiters:
            self._wake_senders()

    def _keepalive_tick(self) -> None:
        if self.state in (ConnectionState.CLOSED, ConnectionState.DISCONNECTED) or self._adopted_by is not None:
            return
        now = self._loop.time()
        silent = now - self._last_in
        if self.state is ConnectionState.RECONNECTING:
            pass  # the pipe is gone already; the owner's resume timer decides
        elif silent >= 3 * self._keepalive:
            self._interrupted(
                errors.ConnectionLost(
                    f"{self._peer_label()} was silent for {silent:.1f}s (keep-alive every {self._keepalive:g}s)",
                    peer=self._peer_id(),
                )
            )
            if self._ended():
                return
        if now - self._last_out >= self._keepalive:
            self._session.ping()
            self._schedule_flush()
        self._keepalive_timer = self._loop.call_later(self._keepalive / 2, self._keepalive_tick)

    def _ended(self) -> bool:
        return self.state is ConnectionState.CLOSED or self.state is ConnectionState.DISCONNECTED

    def _wake_senders(self) -> None:
        waiters, self._send_waiters = self._send_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _ack_tick(self) -> None:
        """Acknowledge what arrived since the last Ack (a delayed ack: one per interval, not one per message)."""
        self._ack_timer = None
        if self.state is ConnectionState.CONNECTED or self.state is ConnectionState.CLOSING:
            self._session.queue_acks()
            self._schedule_flush()

    # -- from the current _Link ------------------------------------------------------------------------------------
    def _data_received(self, data: bytes | memoryview, index: int = -1) -> None:
        """Bytes of the pipe, or (`index` >= 0) of the peer's native stream `index`."""
        self._last_in = self._loop.time()
        try:
            if index < 0:
                self._receive(data)
            else:
                self._receive_stream(index, data)
        except errors.StoffelnetError as exc:
            self._protocol_error(exc)
        except Exception as exc:  # a bug: never let it take down the event loop's other connections
            log.exception("internal error while handling data from %s", self._peer_label())
            self._protocol_error(errors.ReceiveFailed(f"internal error: {exc!r}"))

    def _receive_stream(self, index: int, data: bytes | memoryview) -> None:
        """Bytes of the peer's native stream `index`.

        While the application answers the messages that arrive (`_replying`), its next send writes at once, from
        the task the messages woke: the transport sends the answer together with whatever the arrival calls for
        (QUIC: its acknowledgement), one loop turn sooner than a flush the answer scheduled itself, and without a
        callback of its own. Acknowledgements or credit arriving at a sender schedule one flush on the next turn
        instead, so that everything it sends then is written together. A receiver that only reads is not flushed
        for nothing."""
        events = cast(mux.StreamMultiplexer, self._mux).receive_stream(index, data)
        event = events[0] if len(events) == 1 else None
        if type(event) is mux.StreamDataReceived and event[0] != session.CONTROL_CHANNEL:
            # The common arrival: bytes of one data channel -- `_process`, for that one event.
            received = self._channel_messages(event[0], event[1])
            if received:
                self._deliver(received, self._link)
            self._acknowledge_due()
            if self._mux.wants_write or self._session.has_outgoing:  # as `_process` ends
                self._schedule_flush()
            delivered = bool(received)
        else:
            delivered = self._process(events, [])
        if delivered:
            self._replying()
        elif self._answering:  # acknowledgements or credit for a sender: its next turn's sends go out together
            self._answering = False
            self._schedule_flush()

    def _replying(self) -> None:
        """Messages arrived: if the application answers them (it sent since the last arrival: a round trip, a
        round), its next send writes at once."""
        if self._answering:
            self._answering = False
            self._reply_due = True

    def _channel_messages(self, channel: int, data: bytes | memoryview) -> list[session.MessageReceived]:
        """The messages of bytes that arrived on data channel `channel`; the credit the session returns for bytes
        it consumed itself goes back to the mux at once."""
        received = self._session.receive_data(channel, data)  # messages, and at most one CreditReturned last
        if received:
            returned = received[-1]
            if type(returned) is session.CreditReturned:
                received.pop()
                self._mux.acknowledge(returned.channel, returned.amount)
        return received  # type: ignore[return-value]

    def _receive(self, data: bytes | memoryview) -> None:
        # Whole data frames first, in few steps (the common read); the rest, if any, through the full path.
        view = data if type(data) is memoryview else memoryview(data)
        consumed, batch = self._mux.receive_whole(view, self._session.receive_whole)
        # No `_replying` here: over a byte pipe an answer written at once measured no faster (tcp-tls: round trip
        # 7% faster, rounds 3-5% slower, in one process and across processes, from acknowledgements no longer
        # written together with the data).
        self._process(self._mux.receive_data(view[consumed:]) if consumed < len(view) else [], batch)

    def _process(self, mux_events: list[mux.Event], batch: list[session.MessageReceived]) -> bool:
        """The mux's events, after the messages in `batch`: through the session, then delivered in order. True
        when messages were delivered."""
        delivered = bool(batch)
        sess = self._session
        sink = self._sink
        link = self._link
        mx = self._mux
        owner = self  # after a resume handshake, the connection this pipe now serves
        for event in mux_events:
            if type(event) is mux.StreamDataReceived:
                if event.stream != session.CONTROL_CHANNEL:
                    got = self._channel_messages(event.stream, event.data)
                    if got:
                        batch += got
                        delivered = True
                    continue
                for sev in sess.receive_data(event.stream, event.data):
                    if type(sev) is session.MessageReceived:
                        batch.append(sev)
                        delivered = True
                        continue
                    if batch:  # what arrived before a control event is delivered before it
                        owner._deliver(batch, link)
                        batch = []
                    if type(sev) is session.CreditReturned:
                        mx.acknowledge(sev.channel, sev.amount)
                    elif type(sev) is session.Acknowledged:
                        owner._wake_senders()
                    elif type(sev) is session.HandshakeCompleted:
                        self._ledger = sess.ledger
                        if sess.dialer:  # our Handshake out, theirs back: one round trip
                            self.stats.last_rtt = self._loop.time() - self._handshake_started
                        if sink is not None:
                            sink.handshake_completed(self)  # may hand this pipe to the connection it resumes
                            owner = link.conn
                        if not self._handshake.done():
                            self._handshake.set_result(sev.peer)
                    elif type(sev) is session.CloseReceived:
                        owner._remote_closed(sev.reason)
                if sess.has_outgoing:
                    # Control frames (the acceptor's Handshake reply) enter the mux now, before the application
                    # can queue data: the mux keeps the order in which streams became ready.
                    for channel, frame in sess.data_to_send():
                        mx.send(channel, frame)
            # CreditAvailable: the flush below sends what the new credit allows
        if batch:
            owner._deliver(batch, link)
        owner._acknowledge_due()
        if mx.wants_write or sess.has_outgoing:
            owner._schedule_flush()
        return delivered

    def _acknowledge_due(self) -> None:
        """Acknowledge what arrived: at once past the ledger's threshold, else within `_ACK_DELAY`."""
        sess = self._session
        ledger = sess.ledger
        if ledger is not None and ledger.ack_due:
            if ledger.ack_due >= ledger.ack_threshold:
                sess.queue_acks()
            elif self._ack_timer is None:
                self._ack_timer = self._loop.call_later(_ACK_DELAY, self._ack_tick)

    def _deliver(self, batch: list[session.MessageReceived], source: CreditSource) -> None:
        counters = self.stats
        counters.messages_received += len(batch)
        counters.bytes_received += sum(map(len, map(_PAYLOAD, batch)))
        if self._sink is not None:
            self._sink.messages_received(self, batch, source)

    def _remote_closed(self, reason: str) -> None:
        log.debug("%s closed the connection: %s", self._peer_label(), reason or "no reason given")
        if self.state is ConnectionState.CONNECTED:
            self.state = ConnectionState.CLOSING
        self._wake_senders()
        self._notify()

    def _eof_received(self) -> None:
        try:
            self._mux.eof()
            self._session.eof()
        except errors.FramingError as exc:
            # The peer vanished mid-message: for the application that is a lost connection; the log says how.
            log.warning("connection to %s ended inside a frame: %s", self._peer_label(), exc)
            lost = errors.ConnectionLost(
                f"connection to {self._peer_label()} lost in the middle of a message", peer=self._peer_id()
            )
            lost.__cause__ = exc
            self._interrupted(lost)

    def _connection_lost(self, exc: BaseException | None) -> None:
        if self._session.received_close or (self._session.sent_close and exc is None):
            self._finish(ConnectionState.CLOSED, None)
            return
        if self.state in (ConnectionState.DISCONNECTED, ConnectionState.RECONNECTING):
            return
        reason = f": {exc}" if exc else ""
        self._interrupted(
            errors.ConnectionLost(f"connection to {self._peer_label()} lost{reason}", peer=self._peer_id())
        )

    # -- resume ----------------------------------------------------------------------------------------------------
    def _interrupted(self, exc: errors.StoffelnetError) -> None:
        """The pipe failed (not the peer's protocol): wait for the peer to come back if the owner allows it."""
        sess = self._session
        if (
            self.state in (ConnectionState.CONNECTED, ConnectionState.CLOSING)
            and sess.state is session.SessionState.OPEN
            and not sess.sent_close
            and not sess.received_close
            and self._adopted_by is None
            and self._sink is not None
            and self._sink.connection_interrupted(self)
        ):
            log.info("%s: %s; waiting for it to come back", self._peer_label(), exc)
            self.error = exc  # why, if it never comes back
            self.interrupted_at = self._loop.time()
            self.state = ConnectionState.RECONNECTING
            sess.fail()
            if self._ack_timer is not None:
                self._ack_timer.cancel()
                self._ack_timer = None
            self._pipe.abort()
            self._wake_senders()
            self._notify()
            return
        self._fail(exc)

    def adopt(self, other: PeerConnection) -> None:
        """Resume on `other`'s pipe: the same peer (same key and session id) came back on a new connection.

        `other` was admitted with this connection's ledger. Everything not yet acknowledged is sent again first;
        the peer drops what it already had.
        """
        if self.state in (ConnectionState.CLOSED, ConnectionState.DISCONNECTED):
            raise errors.InvalidState(f"cannot resume a {self.state.value} connection", state=self.state)
        old = self._link
        link = other._link
        other._adopted_by = self
        if other._keepalive_timer is not None:
            other._keepalive_timer.cancel()
        link.conn = self
        self._link = link
        self._pipe, self._session, self._mux = link.pipe, link.session, link.mux
        self._ledger = link.session.ledger
        self._write_paused = other._write_paused
        self.stats.last_rtt = other.stats.last_rtt or self.stats.last_rtt
        if not old.pipe.is_closing():
            old.pipe.abort()  # a half-open pipe we had not noticed yet; its callbacks are now ignored
        assert self._ledger is not None
        for channel, frame in self._session.data_to_send():  # the acceptor's Handshake reply goes first
            self._mux.send(channel, frame)
        for stream, frame in self._ledger.unacknowledged():
            self._mux.send(stream + 1, frame)
        self.state = ConnectionState.CLOSING if self._closing else ConnectionState.CONNECTED
        self.error = None
        self._last_in = self._last_out = self._loop.time()
        self._schedule_flush()
        self._wake_senders()
        self._notify()

    def give_up(self, error: errors.StoffelnetError) -> None:
        """The peer did not come back (or came back as a new process): fail every waiter with `error`."""
        if self.state is ConnectionState.RECONNECTING:
            self._finish(ConnectionState.DISCONNECTED, error)

    # -- ending ----------------------------------------------------------------------------------------------------
    async def close(self, timeout: float = 10.0) -> None:
        """Graceful close: flush what was accepted, send Close, close the pipe; abort if that takes too long."""
        if self.state in (ConnectionState.CLOSED, ConnectionState.DISCONNECTED):
            return
        resuming = self.state is ConnectionState.RECONNECTING
        if resuming or (self._session.state is session.SessionState.OPEN and not self._session.sent_close):
            self._closing = True
            if not resuming:
                self.state = ConnectionState.CLOSING
            try:
                # Flushed is not enough: a cut now would lose what is in flight, so wait for the peer's acks
                # (through a resume if the pipe drops meanwhile).
                async with asyncio.timeout(timeout):
                    while self._unfinished() and self.state in (ConnectionState.CLOSING, ConnectionState.RECONNECTING):
                        waiter = self._loop.create_future()
                        self._send_waiters.append(waiter)
                        await waiter
            except TimeoutError:
                log.warning(
                    "closing %s: %d bytes not acknowledged within %.1fs",
                    self._peer_label(),
                    self.unacknowledged(),
                    timeout,
                )
                self.abort()
                return
            if self.state is ConnectionState.RECONNECTING:  # nothing left to deliver, and no pipe to say so
                self._finish(ConnectionState.CLOSED, None)
                return
            if self.state is ConnectionState.CLOSING and not self._pipe.is_closing():
                self._session.queue_acks()  # the peer may be waiting for these to finish its own close
                self._session.close("closed by application")
                self._flush()
        self.state = ConnectionState.CLOSING if self.state is ConnectionState.CONNECTED else self.state
        self._pipe.close()
        if self.state is not ConnectionState.DISCONNECTED:
            try:
                async with asyncio.timeout(timeout):
                    await self._closed_event.wait()
            except TimeoutError:
                self.abort()

    def _unfinished(self) -> bool:
        """What close() waits for: bytes not yet written, or not yet acknowledged by a peer still reading."""
        if self.state is ConnectionState.RECONNECTING:
            return bool(self.unacknowledged())
        if self.send_buffered():
            return True
        return bool(self.unacknowledged()) and not self._session.received_close

    def abort(self, error: errors.StoffelnetError | None = None) -> None:
        """Drop the connection at once (unsent bytes are lost); waiters get `error` or `ConnectionLost`."""
        if error is None:
            error = errors.ConnectionLost(f"connection to {self._peer_label()} aborted", peer=self._peer_id())
        self._fail(error)

    def _protocol_error(self, exc: errors.StoffelnetError) -> None:
        if isinstance(exc, errors.ConnectionError | errors.AuthenticationError) and exc.peer is None:
            exc.peer = self._peer_id()
        log.warning("closing connection to %s: %s: %s", self._peer_label(), type(exc).__name__, exc)
        self._fail(exc)

    def _fail(self, exc: errors.StoffelnetError) -> None:
        if self.state in (ConnectionState.CLOSED, ConnectionState.DISCONNECTED):
            return
        self._session.fail()
        self._finish(ConnectionState.DISCONNECTED, exc)
        self._pipe.abort()

    def _finish(self, state: ConnectionState, exc: errors.StoffelnetError | None) -> None:
        if self.state in (ConnectionState.CLOSED, ConnectionState.DISCONNECTED):
            return
        self.state = state
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        if exc is not None:
            self.error = exc
        if not self._handshake.done():
            self._handshake.set_exception(
                exc or errors.ConnectionLost("connection closed during the handshake", peer=self._peer_id())
            )
            self._handshake.exception()  # retrieved: a failed handshake nobody awaits is not an asyncio warning
        self._wake_senders()
        self._closed_event.set()
        self._notify()

    def _notify(self) -> None:
        if self._sink is not None:
            self._sink.connection_changed(self)

    def _peer_id(self) -> int | None:
        return self._session.peer.id if self._session.peer else None

    def _peer_label(self) -> str:
        peer = self._session.peer
        if peer is None:
            return str(self.remote_address or "unidentified peer")
        return f"{'party' if peer.role is ClientType.SERVER else 'client'} {peer.id}"

    def __repr__(self) -> str:
        return f"<PeerConnection {self._peer_label()} {self.state.value}>"


class _PeerCounters:
    __slots__ = ("bytes_received", "bytes_sent", "last_rtt", "messages_received", "messages_sent")

    def __init__(self) -> None:
        self.last_rtt: float | None = None
        self.messages_sent = 0
        self.bytes_sent = 0
        self.messages_received = 0
        self.bytes_received = 0
