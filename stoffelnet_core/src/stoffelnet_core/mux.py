"""Several ordered byte streams over one byte pipe, with per-stream credit-based flow control. No I/O here.

Used by transports whose connection is a single byte pipe (TCP+TLS, in-memory pairs, Unix sockets); QUIC has
native streams instead. Each mux frame is a 9-byte header -- type (1 byte), stream id (4), length (4), big-endian
-- followed, for DATA, by `length` bytes of that stream. WINDOW_UPDATE carries a credit increment in `length`.

Every stream starts with `flow.DEFAULT_WINDOW` bytes of credit in each direction; a receiver wanting a larger
window grants the difference when it first sees the stream. A peer that sends beyond its credit, an unknown frame
type or more than `max_streams` streams raises `FramingError`. Streams open implicitly on first use.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import NamedTuple

import attrs

from . import errors
from .flow import DEFAULT_WINDOW, MAX_WINDOW, ReceiveWindow, SendWindow

__all__ = [
    "DATA",
    "HEADER",
    "MAX_STREAMS",
    "WINDOW_UPDATE",
    "CreditAvailable",
    "Multiplexer",
    "StreamDataReceived",
]

HEADER = struct.Struct(">BII")
DATA = 0
WINDOW_UPDATE = 1
MAX_STREAMS = 4096  # streams a peer may open on one connection; each costs a window of memory at most
_MAX_STREAM_ID = 0xFFFFFFFF


class StreamDataReceived(NamedTuple):
    """Bytes arrived on `stream`; the receiver calls `Multiplexer.acknowledge` once it consumed them.

    A NamedTuple (one per read on the hot path), like `frames.Data`.
    """

    stream: int
    data: bytes


@attrs.frozen
class CreditAvailable:
    """The peer granted credit on `stream`: queued bytes may now be sendable (call `data_to_send`)."""

    stream: int


Event = StreamDataReceived | CreditAvailable


class _Outbound:
    __slots__ = ("chunks", "queued", "window")

    def __init__(self) -> None:
        self.chunks: deque[bytes | memoryview] = deque()
        self.queued = 0
        self.window = SendWindow(DEFAULT_WINDOW)


class Multiplexer:
    """The mux state machine for one end of one byte pipe.

    Sending: `send` queues, `data_to_send` returns what the credit allows (write it, in order). Receiving:
    `receive_data` returns events; `acknowledge` returns credit as the application consumes bytes.
    """

    def __init__(self, *, window: int = DEFAULT_WINDOW, max_streams: int = MAX_STREAMS) -> None:
        if window > MAX_WINDOW:
            raise ValueError(f"window must be at most {MAX_WINDOW} bytes, got {window}")
        self.window_size = max(window, DEFAULT_WINDOW)
        self.max_streams = max_streams
        self._out: dict[int, _Outbound] = {}
        self._ready: dict[int, None] = {}  # streams with queued bytes, in round-robin order
        self._in: dict[int, ReceiveWindow] = {}
        self._grants: dict[int, int] = {}  # WINDOW_UPDATE increments not yet sent
        # receive parser state
        self._header = bytearray()
        self._remaining = 0  # body bytes still to come for the current DATA frame
        self._current = 0  # its stream

    # -- sending -------------------------------------------------------------------------------------------------
    def send(self, stream: int, data: bytes | memoryview) -> None:
        """Queue bytes on `stream` (they are not copied: the caller must not mutate them)."""
        if not 0 <= stream <= _MAX_STREAM_ID:
            raise errors.InvalidState(f"stream id {stream} is out of range 0..{_MAX_STREAM_ID}")
        n = len(data)
        if not n:
            return
        out = self._out.get(stream)
        if out is None:
            out = self._out[stream] = _Outbound()
        out.chunks.append(data)
        out.queued += n
        self._ready[stream] = None

    @property
    def wants_write(self) -> bool:
        """True when `data_to_send` may return something (window updates, or queued data)."""
        return bool(self._grants or self._ready)

    def queued(self, stream: int) -> int:
        """Bytes queued on `stream` and not yet returned by `data_to_send`."""
        out = self._out.get(stream)
        return out.queued if out is not None else 0

    def credit(self, stream: int) -> int:
        """Credit the peer has granted on `stream`."""
        out = self._out.get(stream)
        return out.window.available if out is not None else DEFAULT_WINDOW

    def data_to_send(self) -> list[bytes | memoryview]:
        """Everything that can be written now: window updates first, then data as far as credit allows."""
        result: list[bytes | memoryview] = []
        if self._grants:
            pack = HEADER.pack
            result.extend(pack(WINDOW_UPDATE, s, n) for s, n in self._grants.items())
            self._grants.clear()
        if not self._ready:
            return result
        blocked: list[int] = []
        for stream in list(self._ready):
            out = self._out[stream]
            n = min(out.window.available, out.queued)
            if n <= 0:
                blocked.append(stream)
                continue
            out.window.consume(n)
            out.queued -= n
            result.append(HEADER.pack(DATA, stream, n))
            chunks = out.chunks
            left = n
            while left:
                chunk = chunks[0]
                size = len(chunk)
                if size <= left:
                    chunks.popleft()
                    result.append(chunk)
                    left -= size
                else:
                    view = memoryview(chunk)
                    result.append(view[:left])
                    chunks[0] = view[left:]
                    left = 0
            del self._ready[stream]
            if out.queued:
                self._ready[stream] = None  # to the back: round robin between streams
        return result

    # -- receiving -----------------------------------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse bytes from the pipe; raises `FramingError` on a protocol violation."""
        events: list[Event] = []
        view = memoryview(data)
        pos = 0
        end = len(view)
        while pos < end:
            if self._remaining:
                take = min(self._remaining, end - pos)
                events.append(StreamDataReceived(self._current, bytes(view[pos : pos + take])))
                self._remaining -= take
                pos += take
                continue
            header = self._header
            need = HEADER.size - len(header)
            if header or end - pos < HEADER.size:
                header += view[pos : pos + need]
                pos += min(need, end - pos)
                if len(header) < HEADER.size:
                    break
                kind, stream, length = HEADER.unpack(header)
                header.clear()
            else:
                kind, stream, length = HEADER.unpack_from(view, pos)
                pos += HEADER.size
            if kind == DATA:
                window = self._in.get(stream)
                if window is None:
                    window = self._open_inbound(stream)
                window.received(length)
                self._current = stream
                self._remaining = length
            elif kind == WINDOW_UPDATE:
                out = self._out.get(stream)
                if out is None:
                    out = self._out[stream] = _Outbound()
                out.window.grant(length)
                events.append(CreditAvailable(stream))
            else:
                raise errors.FramingError(f"unknown mux frame type {kind} on stream {stream}")
        return events

    def _open_inbound(self, stream: int) -> ReceiveWindow:
        if len(self._in) >= self.max_streams:
            raise errors.FramingError(f"peer opened more than {self.max_streams} streams")
        window = self._in[stream] = ReceiveWindow(self.window_size, DEFAULT_WINDOW)
        grow = window.flush()
        if grow:
            self._grants[stream] = self._grants.get(stream, 0) + grow
        return window

    def acknowledge(self, stream: int, n: int) -> bool:
        """The application consumed `n` bytes of `stream`; True when a window update is now queued to send."""
        window = self._in.get(stream)
        if window is None or n <= 0:
            return False
        grant = window.consumed(n)
        if grant:
            self._grants[stream] = self._grants.get(stream, 0) + grant
            return True
        return False

    def eof(self) -> None:
        """The pipe ended; raises `FramingError` if it ended inside a mux frame (header or body)."""
        if self._header:
            raise errors.FramingError(f"stream ended inside a mux header ({len(self._header)} of {HEADER.size} bytes)")
        if self._remaining:
            raise errors.FramingError(
                f"stream ended inside a mux frame on stream {self._current} ({self._remaining} bytes missing)"
            )

    def buffered(self, stream: int) -> int:
        """Bytes received on `stream` and not yet acknowledged."""
        window = self._in.get(stream)
        return window.buffered if window is not None else 0
