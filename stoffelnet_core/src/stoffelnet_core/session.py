"""The per-peer session state machine: handshake and identity check, sequence numbers, close. No I/O here.

A session sits on top of numbered channels (core's mux streams or a transport's native streams). Channel 0
carries control envelopes (Handshake, Ack, Close); application stream ``s`` travels on channel ``s + 1``.

The rules, all enforced here:
- the dialer speaks first with its Handshake; the acceptor verifies it (the `verify` hook checks the claim against
  what the transport proved) and answers with its own, which the dialer verifies in turn;
- nothing but a Handshake may arrive before the handshake completed, and a second Handshake is an error;
- Data on stream ``s`` arrives only on channel ``s + 1``, numbered 0, 1, 2... per stream (the numbers live in
  the peer's `resume.Ledger`, which outlives the connection: a resumed connection first carries again what was
  not acknowledged, and such a resent duplicate is dropped here, only before the first new message of a stream);
- an Ack acknowledges only what was sent;
- after the peer's Close nothing more may arrive (over native streams only on the control channel: data of other
  channels may still be on the way, and the acceptor's first data may overtake its Handshake, so the dialer holds
  it until the acceptor is proven).
Any violation raises `FramingError` (or `AuthenticationError` from `verify`) and the session is failed.

Flow-control credit: a message's bytes are returned to the peer when the application consumes the message
(`consumed`). Bytes of a frame still incomplete are returned at once while no message of that channel waits to be
consumed, so a frame larger than the window can complete, yet a reader that stops holds at most one window plus
one frame.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple

import attrs

from . import codec, errors
from .frames import PROTOCOL_VERSION, Accepted, Ack, Close, Data, Handshake, Ping, Proof, Tag
from .ids import ClientType
from .proof import proof_message
from .resume import DEFAULT_RESEND_LIMIT, Ledger, Receiving

__all__ = [
    "CONTROL_CHANNEL",
    "Acknowledged",
    "CloseReceived",
    "CreditReturned",
    "HandshakeCompleted",
    "MessageReceived",
    "PeerIdentity",
    "Session",
    "SessionState",
    "Verifier",
    "channel_for",
]

CONTROL_CHANNEL = 0


def channel_for(stream: int) -> int:
    """The channel that carries application stream `stream`."""
    return stream + 1


@attrs.frozen
class PeerIdentity:
    """Who the peer proved to be."""

    role: ClientType
    id: int  # party id, or client id
    session_id: bytes = b""
    fingerprint: str | None = None


Admitter = Callable[[PeerIdentity], Ledger]
"""Called once the peer is proven: returns the ledger to use (a new one, or the one of the connection this one
resumes), or raises `AuthenticationError` / `PeerRestarted` to refuse the peer before anything is delivered."""

Verifier = Callable[[Handshake, str | None], PeerIdentity]
"""Checks a peer's Handshake against the key it proved: the transport's, or (when not None) the fingerprint a
verified `Proof` established. Raises `AuthenticationError` on a mismatch."""

Prover = Callable[[bytes], tuple[bytes, bytes]]
"""Signs a proof message with our key: returns (our certificate DER, signature)."""

ProofVerifier = Callable[[bytes, bytes, bytes], str]
"""(certificate DER, signature, message) -> fingerprint of the key that signed; raises `AuthenticationError`."""


class SessionState(enum.Enum):
    HANDSHAKING = "handshaking"
    OPEN = "open"
    CLOSED = "closed"  # both sides sent Close, or we did and the peer is gone
    FAILED = "failed"


@attrs.frozen
class HandshakeCompleted:
    peer: PeerIdentity


class MessageReceived(NamedTuple):
    """An application message; hand `credit` to `Session.consumed` once the application took it.

    A NamedTuple for the same reason as `frames.Data`: one per message, on the hot path.
    """

    stream: int
    seq: int
    tag: Tag | None
    payload: bytes
    credit: int


@attrs.frozen
class CloseReceived:
    reason: str


@attrs.frozen
class CreditReturned:
    """Bytes of `channel` consumed inside the session (control frames, partial frames): return them now."""

    channel: int
    amount: int


@attrs.frozen
class Acknowledged:
    """The peer acknowledged `freed` bytes of our messages: senders waiting for resend-buffer room may go on."""

    freed: int


Event = HandshakeCompleted | MessageReceived | CloseReceived | CreditReturned | Acknowledged


class _Channel:
    __slots__ = ("decoder", "held", "link_next", "partial_returned", "pending", "rx")

    def __init__(self, max_frame_size: int) -> None:
        self.decoder = codec.FrameDecoder(max_frame_size)
        self.held = 0  # messages delivered and not yet consumed
        self.partial_returned = 0  # bytes of the incomplete frame already returned as credit
        self.rx: Receiving | None = None  # the stream's numbering, from the ledger (once the peer is admitted)
        self.link_next = -1  # the number due next on this connection; -1 before the first Data
        self.pending = 0  # credit of consumed messages not yet returned (batched)


_new_tuple = tuple.__new__  # builds a MessageReceived without the NamedTuple's Python-level __new__
_CREDIT_BATCH = 8192  # credit returned at once; far below the smallest window, so it never stalls a sender


def _joined(channel: int, first: list[Event], then: list[Event]) -> list[Event]:
    """Two parts' events as one read's: the messages in order, then their credit returns added up in one."""
    returned = 0
    if first and type(first[-1]) is CreditReturned:
        returned += first.pop().amount  # type: ignore[union-attr]
    if then and type(then[-1]) is CreditReturned:
        returned += then.pop().amount  # type: ignore[union-attr]
    events = first + then
    if returned:
        events.append(CreditReturned(channel, returned))
    return events


class Session:
    """One end of one authenticated peer connection."""

    def __init__(
        self,
        *,
        role: ClientType,
        local_id: int | None,
        dialer: bool,
        verify: Verifier,
        dialer_proof: bool = False,
        prover: Prover | None = None,
        proof_verifier: ProofVerifier | None = None,
        local_fingerprint: str = "",
        session_id: bytes = b"",
        nonce: bytes = b"",
        max_frame_size: int = codec.DEFAULT_MAX_FRAME_SIZE,
        admit: Admitter | None = None,
        resend_limit: int = DEFAULT_RESEND_LIMIT,
        unordered: bool = False,
    ) -> None:
        self.role = role
        self.local_id = local_id
        self.dialer = dialer
        self.state = SessionState.HANDSHAKING
        self.peer: PeerIdentity | None = None
        self.sent_close = False
        self.received_close = False
        self._verify = verify
        self._dialer_proof = dialer_proof  # the transport did not authenticate the dialer: a Proof must
        self._prover = prover
        self._proof_verifier = proof_verifier
        self._local_fingerprint = local_fingerprint
        self._awaiting_proof: Handshake | None = None  # acceptor: the dialer's claim, until its Proof verifies
        self._awaiting_acceptance: PeerIdentity | None = None  # dialer: the proven acceptor, until it accepts us
        self._handshake = Handshake(role.value, local_id, PROTOCOL_VERSION, session_id, nonce)
        self._max_frame_size = max_frame_size
        self._channels: dict[int, _Channel] = {}
        self._admit = admit
        self._resend_limit = resend_limit
        self.ledger: Ledger | None = None  # set when the peer is proven (see `Admitter`)
        self._outgoing: list[tuple[int, bytes]] = []
        self._initiated = False
        # Channels on independent native streams (QUIC) keep no order between them: the acceptor's first data may
        # overtake its Handshake or Accepted (the dialer holds it, unread, until the acceptor is proven), and the
        # peer's data may arrive after its Close (which orders only the control channel).
        self._unordered = unordered
        self._early: list[tuple[int, bytes]] = []

    # -- outgoing ------------------------------------------------------------------------------------------------
    def initiate(self) -> None:
        """The dialer queues its Handshake; call once, right after the connection is up."""
        if not self.dialer or self.state is not SessionState.HANDSHAKING:
            raise errors.InvalidState("only a dialer in the handshaking state initiates", state=self.state)
        self._outgoing.append((CONTROL_CHANNEL, codec.encode(self._handshake)))
        self._initiated = True

    @property
    def has_outgoing(self) -> bool:
        return bool(self._outgoing)

    def data_to_send(self) -> list[tuple[int, bytes]]:
        """Control frames queued by the session, as ``(channel, frame)``; write them in order."""
        out, self._outgoing = self._outgoing, []
        return out

    def max_payload(self) -> int:
        """The largest payload whose frame fits in the maximum frame size (tag and seq at their largest)."""
        return self._max_frame_size - 40

    def send_data(self, stream: int, payload: bytes | bytearray | memoryview, tag: Tag | None = None) -> bytes:
        """Frame one application message for channel ``stream + 1``; raises `InvalidState` unless open."""
        if self.state is not SessionState.OPEN or self.sent_close:
            raise errors.InvalidState(f"cannot send: session is {self.state.value}", state=self.state)
        assert self.ledger is not None  # attached before the session opens
        return self.ledger.frame(stream, payload, tag)

    def queue_acks(self) -> None:
        """Queue an Ack for every stream that received messages since the last one (only while open)."""
        if self.state is SessionState.OPEN and not self.sent_close and self.ledger is not None:
            for ack in self.ledger.acks():
                self._outgoing.append((CONTROL_CHANNEL, codec.encode(ack)))

    def ping(self) -> None:
        """Queue a keep-alive Ping (only while open: before that the handshake itself is the traffic)."""
        if self.state is SessionState.OPEN and not self.sent_close:
            self._outgoing.append((CONTROL_CHANNEL, codec.encode(Ping())))

    def close(self, reason: str = "") -> None:
        """Queue our Close; nothing more may be sent afterwards."""
        if self.sent_close or self.state in (SessionState.FAILED, SessionState.CLOSED):
            return
        self.sent_close = True
        self._outgoing.append((CONTROL_CHANNEL, codec.encode(Close(reason))))
        if self.received_close:
            self.state = SessionState.CLOSED

    def fail(self) -> None:
        """The connection broke; the session accepts nothing more."""
        self.state = SessionState.FAILED

    # -- incoming ------------------------------------------------------------------------------------------------
    def receive_data(self, channel: int, data: bytes | memoryview) -> list[Event]:
        """Bytes arrived on `channel`; returns events, raises `FramingError`/`AuthenticationError` on a fault.

        `data` is not kept (a memoryview of a reused read buffer is fine). On a data channel the events are only
        `MessageReceived`, in order, and at most one `CreditReturned` last.
        """
        if self.state is SessionState.FAILED:
            raise errors.InvalidState("session has failed", state=self.state)
        if self._unordered and self.dialer and channel != CONTROL_CHANNEL and self.state is SessionState.HANDSHAKING:
            self._early.append((channel, bytes(data)))  # bounded by the credit the peer had: nothing is returned
            return []
        ch = self._channels.get(channel)
        if ch is None:
            ch = self._channels[channel] = _Channel(self._max_frame_size)
        rx = ch.rx
        if rx is None or type(data) is not memoryview or self.state is not SessionState.OPEN or self.received_close:
            received = self._receive(channel, ch, data)
            if self._early and self.state is SessionState.OPEN:
                early, self._early = self._early, []
                for held_channel, held in early:
                    received += self.receive_data(held_channel, memoryview(held))
            return received
        # An open data channel: the run of whole, in-order Data frames takes few steps (`codec.read_messages`); a
        # frame cut by the previous read is completed first, and what the run does not cover goes the usual way,
        # exactly as if each part had come in a read of its own.
        events: list[Event] = []
        missing = ch.decoder.missing
        if missing:
            if missing >= len(data) or ch.decoder.buffered < codec.HEADER_SIZE:  # (a cut header: the usual way)
                return self._receive(channel, ch, data)
            events = self._receive(channel, ch, data[:missing])
            data = data[missing:]
            if ch.partial_returned or (events and type(events[-1]) is CreditReturned):
                return _joined(channel, events, self._receive(channel, ch, data))  # a resent duplicate...
        messages, taken = codec.read_messages(
            data, 0, len(data), channel - 1, rx.next, self._max_frame_size, MessageReceived
        )
        if messages:
            count = len(messages)
            rx.next += count
            ch.link_next = rx.next
            ch.held += count
            assert self.ledger is not None  # open, so admitted
            self.ledger.ack_due += taken
            events += messages
            if taken == len(data):
                return events
            data = data[taken:]
        return events + self._receive(channel, ch, data) if events else self._receive(channel, ch, data)

    def _receive(self, channel: int, ch: _Channel, data: bytes | memoryview) -> list[Event]:
        """`receive_data`, the general way: every frame through `FrameDecoder.feed` and the checks below."""
        try:
            events: list[Event] = []
            append = events.append
            already = ch.partial_returned
            immediate = 0
            frames = ch.decoder.feed(data)
            if frames:
                ch.partial_returned = 0
            stream_no = channel - 1
            rx = ch.rx
            if rx is None and self.ledger is not None and channel != CONTROL_CHANNEL:
                rx = ch.rx = self.ledger.receiver(stream_no)
            seq = rx.next if rx is not None else 0
            accepting = self._accepting()  # changes only on control frames
            held = 0
            for envelope, size in frames:
                credit = size - already
                already = 0
                if type(envelope) is Data:
                    if not accepting:
                        self._refuse_data()
                    if envelope[0] != stream_no:
                        raise errors.FramingError(f"Data for stream {envelope[0]} arrived on channel {channel}")
                    if envelope[1] != seq:
                        self._out_of_order(ch, stream_no, envelope[1], seq, held)  # raises unless a resent duplicate
                        immediate += credit
                        continue
                    seq += 1
                    held += 1
                    append(_new_tuple(MessageReceived, (stream_no, envelope[1], envelope[2], envelope[3], credit)))
                    continue
                ch.held += held
                held = 0
                immediate += credit
                if channel != CONTROL_CHANNEL:
                    raise errors.FramingError(f"control envelope {type(envelope).__name__} on data channel {channel}")
                if type(envelope) is Handshake:
                    completed = self._on_handshake(envelope)
                    if completed is not None:
                        events.append(completed)
                elif type(envelope) is Proof:
                    events.append(self._on_proof(envelope))
                elif type(envelope) is Accepted:
                    events.append(self._on_accepted())
                elif self.state is not SessionState.OPEN:
                    raise errors.FramingError(f"{type(envelope).__name__} before the handshake completed")
                elif type(envelope) is Close:
                    if self.received_close:
                        raise errors.FramingError("a second Close")
                    self.received_close = True
                    if self.sent_close:
                        self.state = SessionState.CLOSED
                    events.append(CloseReceived(envelope.reason))
                elif type(envelope) is Ack:
                    assert self.ledger is not None  # open, so admitted
                    freed = self.ledger.acknowledged(envelope.stream, envelope.seq)
                    if freed:
                        events.append(Acknowledged(freed))
                # a Ping is only proof of life
                accepting = self._accepting()
            if rx is not None:
                if held:
                    rx.next = seq
                    ch.link_next = seq
                assert self.ledger is not None
                self.ledger.ack_due += len(data)
            ch.held += held
            if ch.held == 0:
                newly = ch.decoder.buffered - ch.partial_returned
                if newly > 0:
                    ch.partial_returned += newly
                    immediate += newly
            if immediate:
                events.append(CreditReturned(channel, immediate))
            return events
        except (errors.FramingError, errors.AuthenticationError):
            self.state = SessionState.FAILED
            raise

    def receive_whole(self, channel: int, data: memoryview, start: int, end: int) -> list[MessageReceived] | None:
        """`receive_data` for the common case, in fewer steps: ``data[start:end]`` is whole Data frames of the
        channel's stream, each the next in order, on an open session whose channel holds no partial frame.

        Returns the messages -- exactly the events `receive_data` would return for these bytes (no
        `CreditReturned` can follow them) -- or None, having changed nothing, when the bytes or the state are
        anything else; the caller then hands the same bytes to `receive_data`.
        """
        ch = self._channels.get(channel)
        if ch is None or self.state is not SessionState.OPEN or self.received_close:
            return None
        rx = ch.rx
        if rx is None or ch.partial_returned or ch.decoder.buffered:
            return None
        messages, stop = codec.read_messages(
            data, start, end, channel - 1, rx.next, self._max_frame_size, MessageReceived
        )
        if stop != end or not messages:
            return None
        count = len(messages)
        rx.next += count
        ch.link_next = rx.next
        ch.held += count
        assert self.ledger is not None  # open, so admitted
        self.ledger.ack_due += end - start
        return messages

    def _out_of_order(self, ch: _Channel, stream: int, got: int, expected: int, held: int) -> None:
        """A Data frame with another number than expected: a resent duplicate is dropped, anything else refused.

        Duplicates are legitimate only where a resumed connection starts: before any new message of this stream
        on this connection, and in unbroken order. A replay later on is a protocol violation.
        """
        if got < expected and not held and (ch.link_next < 0 or got == ch.link_next):
            ch.link_next = got + 1
            assert self.ledger is not None
            self.ledger.duplicates += 1
            return
        raise errors.FramingError(f"stream {stream}: expected sequence number {expected}, got {got}")

    def _admitted(self, peer: PeerIdentity) -> PeerIdentity:
        """Attach the peer's ledger (or refuse it) the moment it is proven, before any of its data is read."""
        if self._admit is not None:
            self.ledger = self._admit(peer)
        else:
            self.ledger = Ledger(self._resend_limit, self._max_frame_size)
        return peer

    def _accepting(self) -> bool:
        """Whether Data may arrive now."""
        if self._unordered:
            return self.state is SessionState.OPEN or (self.state is SessionState.CLOSED and self.peer is not None)
        return self.state is SessionState.OPEN and not self.received_close

    def _refuse_data(self) -> None:
        if self.state is SessionState.CLOSED or self.received_close:
            raise errors.FramingError("data frame after the peer's Close")
        raise errors.FramingError("data frame before the handshake completed")

    def _on_handshake(self, handshake: Handshake) -> HandshakeCompleted | None:
        if (
            self.state is not SessionState.HANDSHAKING
            or self._awaiting_proof is not None
            or self._awaiting_acceptance is not None
        ):
            raise errors.FramingError("a second Handshake on this connection")
        if self.dialer and not self._initiated:
            raise errors.FramingError("the acceptor spoke first: a dialer's Handshake must come first")
        if handshake.version != PROTOCOL_VERSION:
            raise errors.FramingError(
                f"peer speaks protocol version {handshake.version}, this side speaks {PROTOCOL_VERSION}"
            )
        if not self.dialer and self._dialer_proof:
            # Answer with our Handshake (its nonce is what the dialer must sign); nothing is accepted until the
            # Proof verifies against the key pinned for the claim.
            if self._proof_verifier is None:
                raise errors.AuthenticationError("this side cannot verify a dialer's proof (no keys configured)")
            self._awaiting_proof = handshake
            self._outgoing.append((CONTROL_CHANNEL, codec.encode(self._handshake)))
            return None
        peer = self._admitted(self._verify(handshake, None))
        if self.dialer and self._dialer_proof:
            if self._prover is None or peer.fingerprint is None:
                raise errors.AuthenticationError("this side cannot prove its key (no keys configured)")
            own = self._handshake
            assert own.id is not None
            message = proof_message(handshake.nonce, peer.fingerprint, own.role, own.id, own.nonce)
            certificate, signature = self._prover(message)
            self._outgoing.append((CONTROL_CHANNEL, codec.encode(Proof(certificate, signature))))
            self._awaiting_acceptance = peer  # open only once the acceptor says the proof verified
            return None
        self.peer = peer
        self.state = SessionState.OPEN
        if not self.dialer:
            self._outgoing.append((CONTROL_CHANNEL, codec.encode(self._handshake)))
        return HandshakeCompleted(peer)

    def _on_proof(self, proof: Proof) -> HandshakeCompleted:
        claim = self._awaiting_proof
        if claim is None or self.state is not SessionState.HANDSHAKING:
            raise errors.FramingError("a Proof that nobody asked for")
        assert self._proof_verifier is not None  # checked when the claim arrived
        if claim.id is None:
            raise errors.AuthenticationError(f"a {claim.role} claimed no id")
        message = proof_message(self._handshake.nonce, self._local_fingerprint, claim.role, claim.id, claim.nonce)
        proven = self._proof_verifier(proof.certificate, proof.signature, message)
        peer = self._admitted(self._verify(claim, proven))
        self._awaiting_proof = None
        self.peer = peer
        self.state = SessionState.OPEN
        self._outgoing.append((CONTROL_CHANNEL, codec.encode(Accepted())))
        return HandshakeCompleted(peer)

    def _on_accepted(self) -> HandshakeCompleted:
        peer = self._awaiting_acceptance
        if peer is None or self.state is not SessionState.HANDSHAKING:
            raise errors.FramingError("an Accepted that answers no Proof")
        self._awaiting_acceptance = None
        self.peer = peer
        self.state = SessionState.OPEN
        return HandshakeCompleted(peer)

    def consumed(self, channel: int, credit: int) -> int:
        """The application took a message worth `credit`; returns the bytes of credit to grant the peer now.

        Credit is batched (`_CREDIT_BATCH`) while messages of the channel are still held; once none is held,
        everything consumed is returned, together with the bytes of a frame still incomplete.
        """
        ch = self._channels.get(channel)
        if ch is None:
            return credit
        ch.held -= 1
        pending = ch.pending + credit
        if ch.held:
            if pending < _CREDIT_BATCH:
                ch.pending = pending
                return 0
            ch.pending = 0
            return pending
        ch.pending = 0
        newly = ch.decoder.buffered - ch.partial_returned
        if newly > 0:
            ch.partial_returned += newly
            pending += newly
        return pending

    def eof(self) -> None:
        """The peer's byte stream ended; raises `FramingError` if it ended inside a frame."""
        for ch in self._channels.values():
            ch.decoder.eof()
