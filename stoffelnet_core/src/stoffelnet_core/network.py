"""`Network` (a party) and `Client`: the public API, written once over the transport plugin interface.

A party listens, dials every party with a higher id (the lower id dials: one connection per pair, never a
duplicate) and accepts the lower ones and any clients. Received messages wait in one `Inbox` per kind of sender
(parties, clients) until the application takes them; taking a message returns its flow-control credit to the
sender, so an application that stops reading stops its senders instead of growing memory. Messages to oneself go
through memory, bounded the same way.

Receive waiters are futures woken when something arrives or a connection changes; a waiter takes nothing until it
runs, so cancelling a receive (e.g. by `asyncio.wait_for`) never loses a message.

Resume: when a connection drops unexpectedly, its `PeerConnection` waits up to `resume_ms` for the same peer (same
key, same session id) to come back; the side that dialed it dials again with backoff. Sends meanwhile go into the
peer's resend buffer and receives simply wait. A peer that comes back as a new process is `PeerRestarted`; one
that does not come back in time is `ConnectionLost` for every waiter on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import os
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from itertools import repeat
from typing import Any, Self

import attrs

from . import codec, errors, identity, keys, session
from .config import Config
from .frames import Tag
from .ids import Address, ClientId, ClientType, Node, PartyId
from .inbox import Inbox
from .peer import ConnectionState, CreditSource, PeerConnection
from .resume import Ledger
from .transport import BytePipe, Credentials, Listener, StreamPipe, Transport, TransportContext

__all__ = ["Client", "Network", "NetworkManager", "NetworkStats", "PeerStats", "open_client", "open_network"]

log = logging.getLogger("stoffelnet.network")

_BACKOFF_INITIAL = 0.05  # seconds before the first retry of a failed dial
_BACKOFF_MAX = 5.0  # retries never wait longer than this: with max_retries 12, parties may start ~30 s apart


@attrs.frozen
class PeerStats:
    """Counters for one peer (`Network.stats`)."""

    messages_sent: int
    bytes_sent: int
    messages_received: int
    bytes_received: int
    send_buffered: int
    receive_buffered: int
    state: ConnectionState
    reconnects: int = 0  # times this peer connected again after its connection was lost
    last_rtt: float | None = None  # seconds: the round trip of the last handshake this side dialed


@attrs.frozen
class NetworkStats:
    peers: Mapping[int, PeerStats]
    clients: Mapping[int, PeerStats]


MAX_HANDSHAKING = 256  # incoming connections awaiting their Handshake at once; past it the oldest is dropped
MAX_STREAM = 0xFFFFFFFE  # stream s travels on channel s + 1, a 32-bit number
_BYTES_LIKE = (bytes, bytearray, memoryview)


def _deadline(timeout: float | None) -> contextlib.AbstractAsyncContextManager[object]:
    """A timer only when there is a timeout: most waits have none, and a timer costs on every call."""
    return asyncio.timeout(timeout) if timeout is not None else contextlib.nullcontext()


def _check_args(stream: object, tag: object = None, data: object = b"") -> None:
    """Raise `InvalidArgument` for a bad stream id, tag or payload, before anything is queued or taken."""
    if type(stream) is not int or not 0 <= stream <= MAX_STREAM:
        raise errors.InvalidArgument(f"stream must be an int in 0..{MAX_STREAM}, got {stream!r:.40}")
    if tag is not None:
        try:
            codec.check_tag(tag)
        except ValueError as exc:
            raise errors.InvalidArgument(str(exc)) from None
    if type(data) not in _BYTES_LIKE:
        raise errors.InvalidArgument(f"data must be bytes, bytearray or memoryview, got {type(data).__name__}")


_STREAM, _TAG, _PAYLOAD, _CREDIT = (operator.itemgetter(i) for i in (0, 2, 3, 4))  # of a session.MessageReceived
_Item = tuple[bytes, int, Any]  # payload, flow-control credit, source (has .consumed(stream, credit))
_PARTY = "party"
_CLIENT = "client"


class _SelfSource:
    """Self-delivery's stand-in for a connection: bounded by bytes held per stream."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: dict[int, int] = {}
        self.waiters: list[asyncio.Future[None]] = []
        self.messages = 0
        self.bytes = 0

    def consumed(self, stream: int, credit: int) -> None:
        self.held[stream] -= credit
        if self.waiters:
            waiters, self.waiters = self.waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)


class _Member:
    """What parties and clients share: connections, inboxes, waiting, receiving."""

    def __init__(self, config: Config, transport: Transport) -> None:
        self.config = config
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._session_id = os.urandom(16)
        self._parties: dict[int, PeerConnection] = {}
        self._clients: dict[int, PeerConnection] = {}
        self._inboxes: dict[str, Inbox[_Item]] = {_PARTY: Inbox(), _CLIENT: Inbox()}
        self._waiters: list[asyncio.Future[None]] = []  # woken by anything: a message, a connection change
        # Receivers waiting for one sender's messages, by (inbox, sender, stream): woken only by those (or by any
        # change of state), so that a party waiting for one peer is not woken by every other peer's message.
        self._rx_waiters: dict[tuple[str, int, int], list[asyncio.Future[None]]] = {}
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # Our own key, for transports whose TLS does not authenticate the dialer (core's Proof signs with it).
        self._identity = keys.load_identity(config.tls.cert, config.tls.key) if config.tls is not None else None
        self._listener: Listener | None = None
        self._reconnects: dict[tuple[ClientType, int], int] = {}
        self._session_ids: dict[int, bytes] = {}  # each party's session id, as first seen: a new one is a restart
        self._restarted: dict[int, errors.PeerRestarted] = {}
        self._resume_s = config.resume_ms / 1000  # how long a lost peer may take to come back (0: never)
        self._resumers: dict[PeerConnection, asyncio.Task[None]] = {}
        self._handshaking: dict[PeerConnection, None] = {}  # incoming, oldest first, until their handshake ends

    # -- sink (called by connections) ------------------------------------------------------------------------------
    def _admit(self, peer: session.PeerIdentity) -> Ledger:
        """Called the moment a peer is proven, before any of its data is read: refuse it, resume it, or start it.

        Returns the ledger the connection uses: the one of the connection it resumes (same peer, same session
        id, that connection waiting to resume or not yet known to be dead), or a new one.
        """
        what = "party" if peer.role is ClientType.SERVER else "client"
        table = self._parties if peer.role is ClientType.SERVER else self._clients
        old = table.get(peer.id)
        live = old is not None and old.state in (
            ConnectionState.CONNECTED,
            ConnectionState.CLOSING,
            ConnectionState.RECONNECTING,
        )
        same_session = old is not None and old.peer is not None and old.peer.session_id == peer.session_id
        if old is not None and live and same_session and self._resume_s > 0 and old.ledger is not None:
            return old.ledger  # the same process is back: resume
        if old is not None and old.state is ConnectionState.CONNECTED:
            # The member is connected: a second connection claiming it is refused, whatever its session says
            # (a live member is never taken for restarted on the word of another connection).
            raise errors.AuthenticationError(
                f"{what} {peer.id} is already connected; refusing a second connection that claims it", peer=peer.id
            )
        if self._closed:
            raise errors.InvalidState(f"{type(self).__name__.lower()} is closing: not admitting {what} {peer.id}")
        if peer.role is ClientType.SERVER and peer.session_id:
            known = self._session_ids.setdefault(peer.id, peer.session_id)
            if known != peer.session_id or peer.id in self._restarted:
                restarted = errors.PeerRestarted(
                    f"party {peer.id} restarted (a new session): its old state is lost, and its new connection is "
                    f"refused so that old and new messages are never mixed",
                    peer=peer.id,
                )
                self._restarted.setdefault(peer.id, restarted)
                if old is not None:
                    old.give_up(restarted)
                self._wake()
                raise restarted
        if old is not None and old.state is ConnectionState.RECONNECTING:  # a client back as a new session
            old.give_up(errors.ConnectionLost(f"{what} {peer.id} came back as a new session", peer=peer.id))
        return Ledger(self.config.resend_buffer_bytes, self.config.max_frame_size)

    def handshake_completed(self, conn: PeerConnection) -> None:
        peer = conn.peer
        assert peer is not None
        table = self._parties if peer.role is ClientType.SERVER else self._clients
        old = table.get(peer.id)
        key = (peer.role, peer.id)
        if old is not None and old is not conn and old.ledger is conn.ledger:
            old.adopt(conn)  # admitted as a resume: the old connection carries on over the new pipe
            self._reconnects[key] = self._reconnects.get(key, 0) + 1
            log.info("%s %d resumed (reconnect %d)", peer.role.value, peer.id, self._reconnects[key])
            self._wake()
            return
        if old is not None and old is not conn and old.state is ConnectionState.DISCONNECTED:
            self._reconnects[key] = self._reconnects.get(key, 0) + 1
            log.info("%s %d connected again (reconnect %d)", peer.role.value, peer.id, self._reconnects[key])
        table[peer.id] = conn
        self._wake()

    def messages_received(
        self, conn: PeerConnection, events: list[session.MessageReceived], source: CreditSource
    ) -> None:
        peer = conn.peer
        assert peer is not None
        kind = _PARTY if peer.role is ClientType.SERVER else _CLIENT
        inbox = self._inboxes[kind]
        sender = peer.id
        first = events[0]  # (stream, seq, tag, payload, credit): a MessageReceived
        streams: Iterable[int]
        if len(events) == 1:
            inbox.push(sender, first[0], first[2], (first[3], first[4], source))
            streams = (first[0],)
        elif len(streams := set(map(_STREAM, events))) == 1 and list(map(_TAG, events)).count(None) == len(events):
            # the common batch: one stream, no tags -- queued at C speed, as one run of arrival order
            inbox.push_untagged(sender, first[0], zip(map(_PAYLOAD, events), map(_CREDIT, events), repeat(source)))
        else:
            push = inbox.push
            for event in events:
                push(sender, event[0], event[2], (event[3], event[4], source))  # stream, tag, (payload, credit, ...)
        if self._rx_waiters:
            for stream in streams:
                self._wake_receivers(kind, sender, stream)
        if self._waiters:
            self._wake_all()

    def connection_changed(self, conn: PeerConnection) -> None:
        self._wake()

    def connection_interrupted(self, conn: PeerConnection) -> bool:
        peer = conn.peer
        if self._resume_s <= 0 or peer is None or self._closed:
            return False
        table = self._parties if peer.role is ClientType.SERVER else self._clients
        if table.get(peer.id) is not conn:
            return False
        if conn not in self._resumers:  # else the running task sees the new loss and goes on
            self._resumers[conn] = self._spawn(self._resume(conn, self._redials(peer)))
        return True

    def _redials(self, peer: session.PeerIdentity) -> Node | None:
        """The node to dial again when the connection to `peer` drops, or None when the peer dials us."""
        return None

    async def _resume(self, conn: PeerConnection, node: Node | None) -> None:
        """Bring `conn` back within `resume_ms` of its loss: dial again (with backoff) if we dial this peer, else
        wait for it. One task per connection: it goes on while the connection is RECONNECTING, however often."""
        peer = conn.peer
        assert peer is not None
        what = f"{'party' if peer.role is ClientType.SERVER else 'client'} {peer.id}"
        delay = _BACKOFF_INITIAL
        try:
            while conn.state is ConnectionState.RECONNECTING:
                remaining = conn.interrupted_at + self._resume_s - self._loop.time()
                if remaining <= 0:
                    lost = errors.ConnectionLost(
                        f"connection to {what} lost and not resumed within {self._resume_s:g}s: {conn.error}",
                        peer=peer.id,
                    )
                    lost.__cause__ = conn.error.__cause__ if conn.error is not None else None  # e.g. FramingError
                    conn.give_up(lost)
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        if node is None:
                            await self._wait()
                            continue
                        try:
                            await self._dial_once(node, self._local_identity()[0])  # resumes `conn` on success
                        except (errors.AuthenticationError, errors.PeerRestarted) as exc:
                            conn.give_up(exc)
                            return
                        except (errors.ConnectionError, errors.Timeout, errors.InvalidState, OSError) as exc:
                            log.debug("resuming %s: dial failed: %s", what, exc)
                            await asyncio.sleep(delay * (0.5 + random.random()))
                            delay = min(delay * 2, _BACKOFF_MAX)
        finally:
            self._resumers.pop(conn, None)  # no await since the state check: a new loss starts a new task

    async def receive_on(self, conn: PeerConnection, stream: int, tag: Tag | None, timeout: float | None) -> bytes:
        peer = conn.peer
        assert peer is not None
        kind = _PARTY if peer.role is ClientType.SERVER else _CLIENT
        return await self._receive_one(kind, peer.id, stream, tag, timeout)

    def _wake(self) -> None:
        """Something changed (a connection, closing): wake every waiter, whatever it waits for."""
        self._wake_all()
        if self._rx_waiters:
            lists = list(self._rx_waiters.values())
            self._rx_waiters.clear()
            for waiters in lists:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    def _wake_all(self) -> None:
        """Wake the waiters that wait for anything (not those waiting for one sender: see `_wake_receivers`)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _wake_receivers(self, kind: str, sender: int, stream: int) -> None:
        """A message from `sender` on `stream` arrived: wake whoever waits for that sender's messages."""
        waiters = self._rx_waiters.pop((kind, sender, stream), None)
        if waiters is not None:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if not waiter.done():
                waiter.cancel()

    def _forget_waiter(self, key: tuple[str, int, int], waiter: asyncio.Future[None]) -> None:
        waiters = self._rx_waiters.get(key)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._rx_waiters[key]

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise errors.InvalidState(f"{type(self).__name__.lower()} is closed")

    def _party_conn(self, party: int) -> PeerConnection:
        self._check_party(party)
        conn = self._parties.get(party)
        if conn is None:
            raise errors.ConnectionLost(f"party {party} is not connected", peer=party)
        return conn

    def _check_party(self, party: int) -> None:
        if type(party) is not int or not 0 <= party < len(self.config.parties):
            raise errors.PartyNotFound(party)

    @staticmethod
    def _take(stream: int, item: _Item) -> bytes:
        payload, credit, source = item
        source.consumed(stream, credit)
        return payload

    def _dead_sender_error(
        self, table: dict[int, PeerConnection], sender: int, what: str
    ) -> errors.StoffelnetError | None:
        if table is self._parties and sender in self._restarted:
            return self._restarted[sender]
        conn = table.get(sender)
        if conn is None:
            return None
        if conn.state is ConnectionState.DISCONNECTED:
            return conn.error or errors.ConnectionLost(f"connection to {what} {sender} lost", peer=sender)
        if conn.state in (ConnectionState.CLOSING, ConnectionState.CLOSED) and conn._session.received_close:
            return errors.StreamClosed(f"{what} {sender} closed the connection", peer=sender)
        return None

    async def _receive_any(self, kind: str, stream: int, timeout: float | None) -> tuple[int, bytes]:
        inbox = self._inboxes[kind]
        if not self._closed:  # fast path: a message is waiting, no timer needed
            found = inbox.pop_any(stream)
            if found is not None:
                sender, (payload, credit, source) = found
                source.consumed(stream, credit)
                return sender, payload
        _check_args(stream)
        try:
            async with _deadline(timeout):
                while True:
                    self._check_open()
                    found = inbox.pop_any(stream)
                    if found is not None:
                        sender, item = found
                        return sender, self._take(stream, item)
                    await self._wait()
        except TimeoutError:
            raise errors.Timeout(f"no message on stream {stream} within {timeout}s", timeout=timeout) from None

    async def _receive_one(self, kind: str, sender: int, stream: int, tag: Tag | None, timeout: float | None) -> bytes:
        inbox = self._inboxes[kind]
        if not self._closed:  # fast path: a message is waiting, no timer needed
            item = inbox.pop_from(sender, stream, tag)
            if item is not None:
                payload, credit, source = item
                source.consumed(stream, credit)
                return payload
        return await self._receive_wait(kind, sender, stream, tag, timeout)

    async def _receive_wait(self, kind: str, sender: int, stream: int, tag: Tag | None, timeout: float | None) -> bytes:
        """`_receive_one` once no message was waiting."""
        _check_args(stream, tag)
        if timeout is None:  # no timer, no context manager: the common wait
            return await self._await_one(kind, sender, stream, tag)
        try:
            async with asyncio.timeout(timeout):
                return await self._await_one(kind, sender, stream, tag)
        except TimeoutError:
            raise errors.Timeout(
                f"no message from {kind} {sender} on stream {stream}"
                + (f" with tag {tag!r}" if tag is not None else "")
                + f" within {timeout}s",
                timeout=timeout,
            ) from None

    async def _await_one(self, kind: str, sender: int, stream: int, tag: Tag | None) -> bytes:
        """Wait for the next message from `sender` (the caller found none waiting)."""
        self._check_open()
        inbox = self._inboxes[kind]
        table = self._parties if kind == _PARTY else self._clients
        key = (kind, sender, stream)
        while True:
            conn = table.get(sender)
            if conn is None or conn.state is not ConnectionState.CONNECTED or sender in self._restarted:
                error = self._dead_sender_error(table, sender, kind)
                if error is not None:
                    raise error
            # wait until a message from `sender` on `stream` arrives (`_wake_receivers`), or anything changes
            waiter = self._loop.create_future()
            waiters = self._rx_waiters.get(key)
            if waiters is None:
                self._rx_waiters[key] = [waiter]
            else:
                waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():  # cancelled: take it out, so that cancelled receives leave nothing behind
                    waiter.cancel()
                    self._forget_waiter(key, waiter)
            self._check_open()
            item = inbox.pop_from(sender, stream, tag)
            if item is not None:
                payload, credit, source = item
                source.consumed(stream, credit)
                return payload

    async def _send_on(
        self,
        conn: PeerConnection,
        data: bytes | bytearray | memoryview,
        stream: int,
        tag: Tag | None,
        timeout: float | None,
    ) -> None:
        self._check_open()
        if timeout is None and len(data) <= conn.max_payload():
            await conn.send(data, stream=stream, tag=tag)  # fast path: no timer
            return
        if len(data) > conn.max_payload():
            raise errors.SendError(
                f"message of {len(data)} bytes exceeds the maximum of {conn.max_payload()} bytes "
                f"(max_frame_size {self.config.max_frame_size})"
            )
        try:
            async with _deadline(timeout):
                await conn.send(data, stream=stream, tag=tag)
        except TimeoutError:
            raise errors.Timeout(
                f"send to {conn.peer.role.value if conn.peer else 'peer'} {conn.remote_party_id} on stream "
                f"{stream} waited {timeout}s for buffer space",
                timeout=timeout,
            ) from None

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _new_connection(self, pipe: BytePipe, *, dialer: bool, expect: identity.Expectation) -> PeerConnection:
        info = pipe.info

        def verify(handshake: Any, proven: str | None) -> session.PeerIdentity:
            return identity.verify_peer(handshake, info, expect, proven)

        own = self._identity
        prover = (lambda message: keys.sign_proof(own, message)) if own is not None else None
        role, local_id = self._local_identity()
        sess = session.Session(
            role=role,
            local_id=local_id,
            dialer=dialer,
            verify=verify,
            session_id=self._session_id,
            nonce=os.urandom(16),
            max_frame_size=self.config.max_frame_size,
            dialer_proof=info.dialer_proof and not info.trusted,
            prover=prover,
            proof_verifier=keys.verify_proof if own is not None else None,
            local_fingerprint=own.fingerprint if own is not None else "",
            admit=self._admit,
            resend_limit=self.config.resend_buffer_bytes,
            unordered=isinstance(pipe, StreamPipe),  # channels on independent native streams
        )
        return PeerConnection(
            pipe,
            sess,
            window=self.config.receive_window_bytes,
            send_limit=self.config.send_buffer_bytes,
            sink=self,
            keepalive=self.config.keepalive_ms / 1000,
        )

    def _local_identity(self) -> tuple[ClientType, int]:
        raise NotImplementedError

    def _handshake_incoming(self, conn: PeerConnection, then: Callable[[PeerConnection], None] | None = None) -> None:
        """Run an incoming connection's handshake in a task, at most `MAX_HANDSHAKING` at once.

        The transport proved a key, or nothing yet (QUIC lets anyone finish its handshake before core's Proof):
        a flood of connections that never send their Handshake must not pile up until their timeout. Past the
        bound the oldest is dropped, so a legitimate newcomer always gets its turn.
        """
        if len(self._handshaking) >= MAX_HANDSHAKING:
            oldest = next(iter(self._handshaking))
            del self._handshaking[oldest]  # now: more may arrive before its task sees the abort
            log.warning("dropped %s: %d connections already awaiting their Handshake", str(oldest), MAX_HANDSHAKING)
            oldest.abort(errors.AuthenticationError("dropped: too many connections awaiting their Handshake"))
        self._handshaking[conn] = None
        self._spawn(self._accept(conn, then))

    async def _accept(self, conn: PeerConnection, then: Callable[[PeerConnection], None] | None) -> None:
        try:
            peer = await conn.handshake(self.config.timeout)
        except errors.StoffelnetError as exc:
            # str(exc), not exc: a log record that kept the exception would keep its frames and the connection
            role, me = self._local_identity()
            log.warning(
                "%s %d refused a connection from %s: %s: %s",
                "party" if role is ClientType.SERVER else "client",
                me,
                conn.remote_address,
                type(exc).__name__,
                str(exc),
            )
            return
        finally:
            self._handshaking.pop(conn, None)
        log.debug("accepted %s %d", peer.role.value, peer.id)
        if then is not None:
            then(conn)

    def _expectation(self, **kwargs: Any) -> identity.Expectation:
        """What this member accepts on one connection: the config's parties, clients and pinned keys."""
        config = self.config
        return identity.Expectation(
            party_count=len(config.parties),
            client_count=len(config.clients.allow) or None,
            party_pins=tuple(n.fingerprint for n in config.parties),
            client_pins=config.clients.allow,
            **kwargs,
        )

    async def _dial(self, node: Node, role: ClientType) -> PeerConnection:
        """Dial `node` with retries (exponential backoff with jitter) until connected and authenticated."""
        if node.address is None:
            raise errors.InitializationFailed(f"party {node.id} has no address to dial", peer=node.id)
        attempts = self.config.max_retries + 1
        delay = _BACKOFF_INITIAL
        last: BaseException | None = None
        expect = self._expectation(party=node.id)
        for attempt in range(attempts):
            if self._closed:
                break
            try:
                return await self._dial_once(node, role, expect)
            except errors.AuthenticationError:
                raise
            except (errors.InitializationFailed, errors.ConnectionError, errors.Timeout, OSError) as exc:
                last = exc
                log.debug(
                    "dial party %d at %s failed (attempt %d/%d): %s",
                    node.id,
                    node.address,
                    attempt + 1,
                    attempts,
                    exc,
                )
                if attempt + 1 < attempts:
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, _BACKOFF_MAX)
        raise errors.InitializationFailed(
            f"could not connect to party {node.id} at {node.address} after {attempts} attempts: {last}",
            peer=node.id,
        ) from last

    async def _dial_once(
        self, node: Node, role: ClientType, expect: identity.Expectation | None = None
    ) -> PeerConnection:
        """One dial and handshake; the connection is registered (or resumes the one it replaces) on success."""
        assert node.address is not None
        pipe = await self._transport.dial(node.address, role=role)
        conn = self._new_connection(pipe, dialer=True, expect=expect or self._expectation(party=node.id))
        await conn.handshake(self.config.timeout)
        return conn

    async def close(self) -> None:
        """Close gracefully: flush what was accepted, tell every peer, release the transport. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        self._closing()
        await self._close_connections()  # the listener stays up meanwhile: a peer resuming may still get through
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        await self._cancel_tasks()
        await self._transport.aclose()

    def _closing(self) -> None:
        """Hook: wake what only a subclass knows about."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _close_connections(self) -> None:
        conns = [*self._parties.values(), *self._clients.values()]
        await asyncio.gather(*(c.close(self.config.timeout) for c in conns), return_exceptions=True)

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _peer_stats(self, table: dict[int, PeerConnection], role: ClientType) -> dict[int, PeerStats]:
        out: dict[int, PeerStats] = {}
        for pid, conn in sorted(table.items()):
            c = conn.stats
            out[pid] = PeerStats(
                c.messages_sent,
                c.bytes_sent,
                c.messages_received,
                c.bytes_received,
                conn.send_buffered(),
                conn.receive_buffered(),
                conn.state,
                self._reconnects.get((role, pid), 0),
                c.last_rtt,
            )
        return out


class Network(_Member):
    """One party's view of the network. Use `open_network`; it returns once every party is connected."""

    def __init__(self, config: Config, transport: Transport) -> None:
        if config.party_id is None:
            raise errors.ConfigError("a party's config needs party_id", key="party_id")
        super().__init__(config, transport)
        self._me = config.party_id
        self._self = _SelfSource(config.send_buffer_bytes + config.receive_window_bytes)
        self._party_inbox = self._inboxes[_PARTY]
        self._max_payload = config.max_frame_size - 40
        self._accepting = 0

    def _local_identity(self) -> tuple[ClientType, int]:
        return ClientType.SERVER, self._me

    def _redials(self, peer: session.PeerIdentity) -> Node | None:
        # the lower id dials: we dial the parties above us again; the ones below and the clients dial us
        return self.config.node(peer.id) if peer.role is ClientType.SERVER and peer.id > self._me else None

    # -- properties ------------------------------------------------------------------------------------------------
    @property
    def local_party_id(self) -> PartyId:
        return PartyId(self._me)

    @property
    def party_count(self) -> int:
        """Number of parties, this one included."""
        return len(self.config.parties)

    @property
    def max_message_size(self) -> int:
        """The largest payload `send` accepts with this configuration."""
        return self._max_payload

    @property
    def listen_address(self) -> Address | None:
        """Where this party listens (the real port when the config said 0)."""
        return self._listener.address if self._listener is not None else None

    def parties(self) -> list[PartyId]:
        """Every party id, this one included."""
        return [PartyId(n.id) for n in self.config.parties]

    def clients(self) -> list[ClientId]:
        """Ids of the clients connected now."""
        return [ClientId(c) for c, conn in sorted(self._clients.items()) if conn.state is ConnectionState.CONNECTED]

    def connection(self, party: int) -> PeerConnection:
        """The connection to `party` (the seed's `get_connection`); raises `PartyNotFound`."""
        self._check_party(party)
        if party == self._me:
            raise errors.PartyNotFound(party, f"party {party} is this party: messages to itself go through memory")
        return self._party_conn(party)

    get_connection = connection

    def client_connection(self, client: int) -> PeerConnection:
        conn = self._clients.get(client)
        if conn is None:
            raise errors.ClientNotFound(client)
        return conn

    def stats(self) -> NetworkStats:
        peers = self._peer_stats(self._parties, ClientType.SERVER)
        peers[self._me] = PeerStats(
            self._self.messages,
            self._self.bytes,
            self._self.messages,
            self._self.bytes,
            0,
            sum(self._self.held.values()),
            ConnectionState.CLOSED if self._closed else ConnectionState.CONNECTED,
        )
        return NetworkStats(dict(sorted(peers.items())), self._peer_stats(self._clients, ClientType.CLIENT))

    # -- sending ---------------------------------------------------------------------------------------------------
    async def send(
        self,
        party: int,
        data: bytes | bytearray | memoryview,
        *,
        stream: int = 0,
        tag: Tag | None = None,
        timeout: float | None = None,
    ) -> None:
        """Send one message to `party` (itself included); returns once it is accepted into bounded buffers.

        Waits while that stream's buffer is full (backpressure). Raises `PartyNotFound`, `SendError` (too large),
        `Timeout`, `InvalidState` (closed), or the connection's error (`ConnectionLost`).
        """
        if type(stream) is not int or not 0 <= stream <= MAX_STREAM or tag is not None or type(data) is not bytes:
            _check_args(stream, tag, data)
        if party == self._me:
            src = self._self
            held = src.held.get(stream, 0)
            if held < src.limit and timeout is None and tag is None and not self._closed:
                payload = data if type(data) is bytes else bytes(data)
                size = len(payload)
                if size <= self._max_payload:  # fast path: straight into the inbox
                    src.held[stream] = held + size
                    src.messages += 1
                    src.bytes += size
                    self._party_inbox.push(party, stream, None, (payload, size, src))
                    if self._rx_waiters:
                        self._wake_receivers(_PARTY, party, stream)
                    if self._waiters:
                        self._wake_all()
                    return
        conn = self._parties.get(party) if party != self._me else None
        if conn is not None and timeout is None and not self._closed and len(data) <= self._max_payload:
            if not conn.send_nowait(data, stream=stream, tag=tag):  # fast path: no coroutine when there is room
                await conn.send(data, stream=stream, tag=tag)
            return
        if conn is None:
            self._check_party(party)
            if party == self._me:
                await self._send_self(data, stream, tag, timeout)
                return
            conn = self._party_conn(party)
        await self._send_on(conn, data, stream, tag, timeout)

    async def broadcast(
        self,
        data: bytes | bytearray | memoryview,
        *,
        stream: int = 0,
        tag: Tag | None = None,
        timeout: float | None = None,
    ) -> None:
        """Send one message to every party, this one included."""
        _check_args(stream, tag, data)
        self._check_open()
        if len(data) > self.max_message_size:
            raise errors.SendError(f"message of {len(data)} bytes exceeds the maximum of {self.max_message_size}")
        payload = bytes(data)
        try:
            async with _deadline(timeout):
                for party in range(len(self.config.parties)):
                    if party == self._me:
                        await self._send_self(payload, stream, tag, None)
                        continue
                    conn = self._party_conn(party)
                    if not conn.send_nowait(payload, stream=stream, tag=tag):  # fast path: room, no coroutine
                        await self._send_on(conn, payload, stream, tag, None)
        except TimeoutError:
            raise errors.Timeout(f"broadcast waited {timeout}s for buffer space", timeout=timeout) from None

    async def _send_self(
        self, data: bytes | bytearray | memoryview, stream: int, tag: Tag | None, timeout: float | None
    ) -> None:
        self._check_open()
        if len(data) > self.max_message_size:
            raise errors.SendError(f"message of {len(data)} bytes exceeds the maximum of {self.max_message_size}")
        src = self._self
        try:
            async with _deadline(timeout):
                while src.held.get(stream, 0) >= src.limit:
                    waiter = self._loop.create_future()
                    src.waiters.append(waiter)
                    await waiter
                    self._check_open()
        except TimeoutError:
            raise errors.Timeout(f"send to self waited {timeout}s for buffer space", timeout=timeout) from None
        payload = bytes(data)
        src.held[stream] = src.held.get(stream, 0) + len(payload)
        src.messages += 1
        src.bytes += len(payload)
        self._inboxes[_PARTY].push(self._me, stream, tag, (payload, len(payload), src))
        if self._rx_waiters:
            self._wake_receivers(_PARTY, self._me, stream)
        if self._waiters:
            self._wake_all()

    async def send_to_client(
        self,
        client: int,
        data: bytes | bytearray | memoryview,
        *,
        stream: int = 0,
        timeout: float | None = None,
    ) -> None:
        """Send one message to a connected client; raises `ClientNotFound`."""
        _check_args(stream, None, data)
        conn = self._clients.get(client)
        if conn is None:
            raise errors.ClientNotFound(client)
        await self._send_on(conn, data, stream, None, timeout)

    # -- receiving -------------------------------------------------------------------------------------------------
    async def receive(self, *, stream: int = 0, timeout: float | None = None) -> tuple[PartyId, bytes]:
        """The next untagged message on `stream` from any party (itself included), as ``(sender, data)``."""
        if not self._closed:  # fast path: a message is waiting
            found = self._party_inbox.pop_any(stream)
            if found is not None:
                sender, (payload, credit, source) = found
                source.consumed(stream, credit)
                return PartyId(sender), payload
        sender, data = await self._receive_any(_PARTY, stream, timeout)
        return PartyId(sender), data

    async def receive_from(
        self, party: int, *, stream: int = 0, tag: Tag | None = None, timeout: float | None = None
    ) -> bytes:
        """The next message from `party` on `stream`; with `tag`, the one carrying that tag.

        Raises `PartyNotFound`, `Timeout`, `StreamClosed` (the party closed and everything it sent was taken) or
        `ConnectionLost` naming the party.
        """
        if tag is not None:
            _check_args(stream, tag)
        if not self._closed:  # fast path: a message is waiting
            item = self._party_inbox.pop_from(party, stream, tag)
            if item is not None:
                payload, credit, source = item
                source.consumed(stream, credit)
                return payload
        if party not in self._parties and party != self._me:
            self._check_party(party)
        if timeout is None and tag is None and type(stream) is int and 0 <= stream <= MAX_STREAM:
            return await self._await_one(_PARTY, party, stream, None)  # `_receive_wait`'s common case, directly
        return await self._receive_wait(_PARTY, party, stream, tag, timeout)

    async def receive_from_client(
        self, client: int | None = None, *, stream: int = 0, timeout: float | None = None
    ) -> tuple[ClientId, bytes]:
        """The next message from `client`, or from any client when None, as ``(client_id, data)``."""
        if client is None:
            sender, data = await self._receive_any(_CLIENT, stream, timeout)
            return ClientId(sender), data
        return ClientId(client), await self._receive_one(_CLIENT, client, stream, None, timeout)

    async def wait_for_clients(self, count: int, *, timeout: float | None = None) -> list[ClientId]:
        """Wait until at least `count` clients are connected; returns their ids."""
        try:
            async with _deadline(timeout):
                while len(self.clients()) < count:
                    self._check_open()
                    await self._wait()
        except TimeoutError:
            raise errors.Timeout(
                f"{len(self.clients())} of {count} clients connected within {timeout}s", timeout=timeout
            ) from None
        return self.clients()

    # -- lifecycle -------------------------------------------------------------------------------------------------
    async def _start(self) -> None:
        node = self.config.node(self._me)
        bind = node.bind_address
        if bind is None:
            raise errors.ConfigError(f"party {self._me} has no address to listen on", key="parties.address")
        self._listener = await self._transport.listen(bind, self._on_pipe)
        log.info("party %d listening on %s (%s)", self._me, self._listener.address, self._transport.name)
        higher = [n for n in self.config.parties if n.id > self._me]
        dials = [self._spawn(self._dial(n, ClientType.SERVER)) for n in higher]
        try:
            async with asyncio.timeout(self.config.timeout * (self.config.max_retries + 1)):
                for task in dials:
                    await task
                while missing := self._missing_parties():
                    del missing
                    await self._wait()
        except TimeoutError:
            raise errors.InitializationFailed(
                f"party {self._me}: parties {self._missing_parties()} did not connect in time"
            ) from None

    def _missing_parties(self) -> list[int]:
        return [
            n.id
            for n in self.config.parties
            if n.id != self._me and (n.id not in self._parties or not self._parties[n.id].is_connected())
        ]

    def _on_pipe(self, pipe: BytePipe) -> None:
        # Even while closing: a peer resuming may still deliver what we wait for (new peers are refused on admission).
        expect = self._expectation(accept_clients=True, accept_parties_below=self._me)
        self._handshake_incoming(self._new_connection(pipe, dialer=False, expect=expect))

    def _closing(self) -> None:
        for waiter in self._self.waiters:
            if not waiter.done():
                waiter.set_result(None)


class Client(_Member):
    """A client's view: connected to every party. Use `open_client`."""

    def __init__(self, config: Config, transport: Transport) -> None:
        if config.client_id is None:
            raise errors.ConfigError("a client's config needs client_id", key="client_id")
        super().__init__(config, transport)
        self.client_id = ClientId(config.client_id)

    def _local_identity(self) -> tuple[ClientType, int]:
        return ClientType.CLIENT, self.client_id

    def _redials(self, peer: session.PeerIdentity) -> Node | None:
        return self.config.node(peer.id)  # a client dials every party

    @property
    def party_count(self) -> int:
        return len(self.config.parties)

    def parties(self) -> list[PartyId]:
        return [PartyId(n.id) for n in self.config.parties]

    def connection(self, party: int) -> PeerConnection:
        return self._party_conn(party)

    get_connection = connection

    async def send(
        self,
        party: int,
        data: bytes | bytearray | memoryview,
        *,
        stream: int = 0,
        timeout: float | None = None,
    ) -> None:
        """Send one message to `party`."""
        _check_args(stream, None, data)
        await self._send_on(self._party_conn(party), data, stream, None, timeout)

    async def receive(self, *, stream: int = 0, timeout: float | None = None) -> tuple[PartyId, bytes]:
        """The next message from any party, as ``(party, data)``."""
        sender, data = await self._receive_any(_PARTY, stream, timeout)
        return PartyId(sender), data

    async def receive_from(self, party: int, *, stream: int = 0, timeout: float | None = None) -> bytes:
        self._check_party(party)
        return await self._receive_one(_PARTY, party, stream, None, timeout)

    def stats(self) -> NetworkStats:
        return NetworkStats(self._peer_stats(self._parties, ClientType.SERVER), {})

    async def _start(self) -> None:
        conns = await asyncio.gather(
            *(self._dial(n, ClientType.CLIENT) for n in self.config.parties), return_exceptions=True
        )
        failures = [c for c in conns if isinstance(c, BaseException)]
        if failures:
            raise failures[0]


class NetworkManager(_Member):
    """The seed's lower-level API: listen, dial and accept single connections, and look them up.

    Most applications want `Network` (a whole mesh with `receive` across parties); this is for programs that
    manage connections themselves. Identities are checked exactly as in `Network`.
    """

    def __init__(self, config: Config, transport: Transport | None = None) -> None:
        if (config.party_id is None) == (config.client_id is None):
            raise errors.ConfigError("a NetworkManager needs exactly one of party_id or client_id", key="party_id")
        super().__init__(config, transport if transport is not None else _make_transport(config))
        self._accepted: asyncio.Queue[PeerConnection] = asyncio.Queue()
        self._resume_s = 0.0  # the application manages these connections itself: a loss is final

    def _local_identity(self) -> tuple[ClientType, int]:
        if self.config.party_id is not None:
            return ClientType.SERVER, self.config.party_id
        assert self.config.client_id is not None
        return ClientType.CLIENT, self.config.client_id

    @property
    def listen_address(self) -> Address | None:
        return self._listener.address if self._listener is not None else None

    async def listen(self, address: Address | None = None) -> Address:
        """Bind `address` (default: this party's listen address) and start accepting; returns the bound address."""
        self._check_open()
        if address is None:
            party = self.config.party_id
            if party is None or self.config.node(party).bind_address is None:
                raise errors.ConfigError("listen needs an address: this member has none configured", key="parties")
            address = self.config.node(party).bind_address
            assert address is not None
        self._listener = await self._transport.listen(address, self._on_pipe)
        return self._listener.address

    def _on_pipe(self, pipe: BytePipe) -> None:
        if self._closed:
            pipe.abort()
            return
        me = self.config.party_id
        expect = self._expectation(accept_clients=True, accept_parties_below=me if me is not None else 0)
        self._handshake_incoming(self._new_connection(pipe, dialer=False, expect=expect), self._accepted.put_nowait)

    async def accept(self, *, timeout: float | None = None) -> PeerConnection:
        """The next authenticated incoming connection (party or client)."""
        try:
            async with _deadline(timeout):
                return await self._accepted.get()
        except TimeoutError:
            raise errors.Timeout(f"no connection accepted within {timeout}s", timeout=timeout) from None

    async def connect(self, party: int) -> PeerConnection:
        """Dial `party` as a party (the seed's `connect_as_server`), with retries; returns the connection."""
        self._check_party(party)
        return await self._dial(self.config.node(party), self._local_identity()[0])

    connect_as_server = connect

    async def connect_as_client(self, party: int) -> PeerConnection:
        """Dial `party` as a client."""
        self._check_party(party)
        return await self._dial(self.config.node(party), ClientType.CLIENT)

    def get_connection(self, party: int) -> PeerConnection:
        """The connection to `party`; raises `PartyNotFound` or `ConnectionLost`."""
        return self._party_conn(party)

    def get_client_connection(self, client: int) -> PeerConnection:
        conn = self._clients.get(client)
        if conn is None:
            raise errors.ClientNotFound(client)
        return conn


def _make_transport(config: Config) -> Transport:
    from .plugins import default_plugins

    cls = default_plugins().get(config.transport)
    credentials = Credentials(str(config.tls.cert), str(config.tls.key)) if config.tls is not None else None
    context = TransportContext(
        options=dict(config.transport_options.get(config.transport, {})),
        credentials=credentials,
        connect_timeout=config.timeout,
        party_certificates=tuple(str(n.cert) for n in config.parties if n.cert is not None),
        client_certificates=tuple(str(p) for p in config.clients.certs),
    )
    return cls(context)


@contextlib.asynccontextmanager
async def open_network(config: Config, *, transport: Transport | None = None) -> AsyncIterator[Network]:
    """Join the network as the party `config.party_id`; yields once every party is connected, closes on exit."""
    net = Network(config, transport if transport is not None else _make_transport(config))
    try:
        await net._start()
    except BaseException:
        await net.close()
        raise
    try:
        yield net
    finally:
        await net.close()


@contextlib.asynccontextmanager
async def open_client(config: Config, *, transport: Transport | None = None) -> AsyncIterator[Client]:
    """Connect as the client `config.client_id` to every party; closes on exit."""
    cli = Client(config, transport if transport is not None else _make_transport(config))
    try:
        await cli._start()
    except BaseException:
        await cli.close()
        raise
    try:
        yield cli
    finally:
        await cli.close()
