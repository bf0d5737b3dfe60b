"""What one peer relationship remembers across connections: sequence numbers, the resend buffer, acks. No I/O.

A `Ledger` outlives the connection it started on. Every data frame we send is kept, numbered per stream, until
the peer acknowledges it (a cumulative `Ack`: everything up to and including ``seq`` arrived). When a connection
drops and the same peer (same key, same session id) comes back, the new connection takes over the ledger and
first sends again everything not yet acknowledged; the receiver drops what it already has (by sequence number), so
each message reaches the application exactly once and in order per (sender, stream).

Acknowledgement is on *receipt* (the message is in the receiver's memory), not on consumption: flow control, not
the ledger, bounds what a slow reader holds. The resend buffer is bounded by `limit` bytes: a sender waits while it
is full (the caller checks `full`).
"""

from __future__ import annotations

from collections import deque

from . import codec, errors
from .frames import Ack, Tag

__all__ = ["Ledger", "Receiving", "Sending"]

DEFAULT_RESEND_LIMIT = 8 * 1024 * 1024
_MAX_CHANNEL = 0xFFFFFFFF


class Sending:
    """One stream's outbound side: the next sequence number and the frames sent but not yet acknowledged.

    A frame is kept as its head (length prefix and envelope up to the payload, `codec.data_head`) and its payload,
    so that a payload is never copied to be framed.
    """

    __slots__ = ("base", "frames", "seq")

    def __init__(self) -> None:
        self.seq = 0  # the next message's number
        self.base = 0  # the number of frames[0]
        self.frames: deque[tuple[bytes, bytes]] = deque()


class Receiving:
    """One stream's inbound side: the next number expected, and how far we told the peer."""

    __slots__ = ("acked", "next")

    def __init__(self) -> None:
        self.next = 0
        self.acked = 0  # the peer was told about every message below this


class Ledger:
    """One peer relationship's sequence state, kept across reconnects (see the module docstring)."""

    def __init__(self, limit: int = DEFAULT_RESEND_LIMIT, max_frame_size: int = codec.DEFAULT_MAX_FRAME_SIZE) -> None:
        self.limit = limit
        self.ack_threshold = max(limit // 4, 1)  # received bytes that make an Ack due at once
        self.max_frame_size = max_frame_size
        self.sending: dict[int, Sending] = {}
        self.receiving: dict[int, Receiving] = {}
        self.unacked_bytes = 0  # bytes of frames in every `Sending.frames`
        self.ack_due = 0  # bytes received since our last Ack
        self.duplicates = 0  # frames dropped because they had arrived before (resent after a reconnect)

    @property
    def full(self) -> bool:
        return self.unacked_bytes >= self.limit

    # -- sending ---------------------------------------------------------------------------------------------------
    def frame(self, stream: int, payload: bytes | bytearray | memoryview, tag: Tag | None = None) -> bytes:
        """Number and frame one message and keep it until acknowledged; raises `SendError` for a bad tag or size."""
        head, body = self.frame_parts(stream, payload, tag)
        return head + body

    def frame_parts(
        self, stream: int, payload: bytes | bytearray | memoryview, tag: Tag | None = None
    ) -> tuple[bytes, bytes]:
        """`frame`, as the frame's head and its payload (the payload itself when it is `bytes`: never copied)."""
        tx = self.sending.get(stream)
        if tx is None:
            if type(stream) is not int or not 0 <= stream < _MAX_CHANNEL:  # stream s travels on channel s + 1
                raise errors.InvalidState(f"stream id {stream} is out of range 0..{_MAX_CHANNEL - 1}")
            tx = self.sending[stream] = Sending()
        if type(payload) is not bytes:
            payload = bytes(payload)  # the caller may change a bytearray or memoryview once send returns
        if tag is not None:
            try:
                codec.check_tag(tag)
            except ValueError as exc:
                raise errors.SendError(str(exc)) from None
        n = len(payload)
        head = codec.data_head(stream, tx.seq, tag, n)
        size = len(head) + n
        if size > self.max_frame_size + codec.HEADER_SIZE:
            raise errors.SendError(f"message of {n} bytes exceeds the maximum frame size {self.max_frame_size}")
        tx.seq += 1
        tx.frames.append((head, payload))
        self.unacked_bytes += size
        return head, payload

    def acknowledged(self, stream: int, seq: int) -> int:
        """The peer has every message of `stream` up to `seq`: drop them; returns the bytes freed.

        An Ack for a message never sent is a protocol violation (`FramingError`); an old Ack is harmless.
        """
        tx = self.sending.get(stream)
        if tx is None or seq >= tx.seq:
            sent = 0 if tx is None else tx.seq
            raise errors.FramingError(
                f"Ack for message {seq} on stream {stream}, but only {sent} were ever sent on that stream"
            )
        count = seq + 1 - tx.base
        if count <= 0:
            return 0
        pop = tx.frames.popleft
        freed = 0
        for _ in range(count):
            head, payload = pop()
            freed += len(head) + len(payload)
        tx.base = seq + 1
        self.unacked_bytes -= freed
        return freed

    def unacknowledged(self) -> list[tuple[int, bytes]]:
        """Every frame not yet acknowledged, as ``(stream, bytes)`` in order per stream (a frame's head and its
        payload as two chunks, written one after the other): what a new connection sends first."""
        return [
            (stream, chunk)
            for stream, tx in sorted(self.sending.items())
            for frame in tx.frames
            for chunk in frame
            if chunk
        ]

    # -- receiving -------------------------------------------------------------------------------------------------
    def receiver(self, stream: int) -> Receiving:
        rx = self.receiving.get(stream)
        if rx is None:
            rx = self.receiving[stream] = Receiving()
        return rx

    def acks(self) -> list[Ack]:
        """Acks for every stream that received something since the last call."""
        self.ack_due = 0
        out = []
        for stream, rx in self.receiving.items():
            if rx.next > rx.acked:
                rx.acked = rx.next
                out.append(Ack(stream, rx.next - 1))
        return out
