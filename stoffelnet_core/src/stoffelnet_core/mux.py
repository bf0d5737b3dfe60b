"""Several ordered byte streams over one byte pipe, with per-stream credit-based flow control. No I/O here.

Used by transports whose connection is a single byte pipe (TCP+TLS, in-memory pairs, Unix sockets); over a
transport's native streams (QUIC) `StreamMultiplexer` carries the same channels and credit. Each mux frame is a
9-byte header -- type (1 byte), stream id (4), length (4), big-endian -- followed, for DATA, by `length` bytes of
that stream. WINDOW_UPDATE carries a credit increment in `length`.

Every stream starts with `flow.DEFAULT_WINDOW` bytes of credit in each direction; a receiver wanting a larger
window grants the difference when it first sees the stream. A peer that sends beyond its credit, an unknown frame
type or more than `max_streams` streams raises `FramingError`. Streams open implicitly on first use.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import NamedTuple, TypeVar

import attrs

from . import errors
from .flow import DEFAULT_WINDOW, MAX_WINDOW, ReceiveWindow, SendWindow

__all__ = [
    "DATA",
    "HEADER",
    "MAX_STREAMS",
    "PREFIX",
    "WINDOW_UPDATE",
    "CreditAvailable",
    "Multiplexer",
    "StreamDataReceived",
    "StreamMultiplexer",
]

HEADER = struct.Struct(">BII")
_HEADER_SIZE = HEADER.size
_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from
DATA = 0
WINDOW_UPDATE = 1
MAX_STREAMS = 4096  # streams a peer may open on one connection; each costs a window of memory at most
_MAX_STREAM_ID = 0xFFFFFFFF
_COALESCE_BELOW = 16 * 1024  # queued chunks below this are copied into one buffer per stream (see `_Outbound`)


class StreamDataReceived(NamedTuple):
    """Bytes arrived on `stream`; the receiver calls `Multiplexer.acknowledge` once it consumed them.

    A NamedTuple (one per read on the hot path), like `frames.Data`. `data` is a memoryview of the bytes given to
    `Multiplexer.receive_data`, not a copy: valid while they are (a pipe's read buffer is reused by the next read),
    so a receiver copies what it keeps.
    """

    stream: int
    data: bytes | memoryview  # a memoryview, from `receive_data`


@attrs.frozen
class CreditAvailable:
    """The peer granted credit on `stream`: queued bytes may now be sendable (call `data_to_send`)."""

    stream: int


Event = StreamDataReceived | CreditAvailable
T = TypeVar("T")
_new_event = tuple.__new__  # builds a StreamDataReceived without the NamedTuple's Python-level __new__


class _Outbound:
    """One stream's queued bytes, in order. Small chunks are copied into one growing buffer (`open`, the last chunk)
    instead of queued one by one, so that `data_to_send` hands out one buffer per stream and turn rather than
    walking thousands of small chunks; large ones (a big message's payload) are queued as they are, never copied."""

    __slots__ = ("chunks", "open", "queued", "window")

    def __init__(self) -> None:
        self.chunks: deque[bytes | bytearray | memoryview] = deque()
        self.open: bytearray | None = None  # the last chunk, while small chunks may still be appended to it
        self.queued = 0
        self.window = SendWindow(DEFAULT_WINDOW)

    def add(self, data: bytes | memoryview) -> None:
        if len(data) < _COALESCE_BELOW:
            buf = self.open
            if buf is None:
                self.open = buf = bytearray(data)
                self.chunks.append(buf)
            else:
                buf += data
        else:
            self.chunks.append(data)
            self.open = None


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
        """Queue bytes on `stream` (small ones are copied into the stream's buffer, large ones are queued as they
        are: the caller must not mutate them)."""
        if not 0 <= stream <= _MAX_STREAM_ID:
            raise errors.InvalidState(f"stream id {stream} is out of range 0..{_MAX_STREAM_ID}")
        n = len(data)
        if not n:
            return
        out = self._out.get(stream)
        if out is None:
            out = self._out[stream] = _Outbound()
        out.add(data)
        out.queued += n
        self._ready[stream] = None

    def send_frame(self, stream: int, head: bytes, payload: bytes) -> None:
        """`send` of ``head + payload`` without joining them first (a large payload is queued as it is: the caller
        must not mutate it)."""
        if not 0 <= stream <= _MAX_STREAM_ID:
            raise errors.InvalidState(f"stream id {stream} is out of range 0..{_MAX_STREAM_ID}")
        out = self._out.get(stream)
        if out is None:
            out = self._out[stream] = _Outbound()
        n = len(payload)
        buf = out.open
        if buf is None:
            out.open = buf = bytearray(head)
            out.chunks.append(buf)
        else:
            buf += head
        if n < _COALESCE_BELOW:
            buf += payload  # the common small message: one copy, into the buffer the next write takes whole
        else:
            out.chunks.append(payload)
            out.open = None
        out.queued += len(head) + n
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

    def data_to_send(self) -> list[bytes | bytearray | memoryview]:
        """Everything that can be written now: window updates first, then data as far as credit allows."""
        result: list[bytes | bytearray | memoryview] = []
        if self._grants:
            result += self._take_grants()
        ready = self._ready
        if not ready:
            return result
        for stream in list(ready):
            n, chunks = self._take(stream)
            if n:
                result.append(_pack_header(DATA, stream, n))
                result += chunks
        return result

    def _take_grants(self) -> list[bytes]:
        pack = HEADER.pack
        grants = [pack(WINDOW_UPDATE, s, n) for s, n in self._grants.items()]
        self._grants.clear()
        return grants

    def _take(self, stream: int) -> tuple[int, list[bytes | bytearray | memoryview]]:
        """What the credit allows of a ready stream's queue now: (bytes, the chunks holding them), in order."""
        ready = self._ready
        out = self._out[stream]
        window = out.window
        queued = out.queued
        n = window.available
        if 0 < queued <= n:  # the common case: everything queued fits in the credit, no chunk is split
            window.available = n - queued
            out.queued = 0
            out.open = None  # handed out: never appended to again
            whole = list(out.chunks)
            out.chunks.clear()
            del ready[stream]
            return queued, whole
        n = min(n, queued)
        if n <= 0:
            return 0, []  # no credit: stays ready until the peer grants some
        out.open = None  # part of it may be handed out (and viewed): never appended to again
        window.consume(n)
        out.queued -= n
        result: list[bytes | bytearray | memoryview] = []
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
        del ready[stream]
        if out.queued:
            ready[stream] = None  # to the back: round robin between streams
        return n, result

    # -- receiving -----------------------------------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse bytes from the pipe; raises `FramingError` on a protocol violation.

        The events' data are views of `data`, not copies (see `StreamDataReceived`).
        """
        events: list[Event] = []
        view = memoryview(data)
        pos = 0
        end = len(view)
        while pos < end:
            if self._remaining:
                take = min(self._remaining, end - pos)
                events.append(_new_event(StreamDataReceived, (self._current, view[pos : pos + take])))
                self._remaining -= take
                pos += take
                continue
            header = self._header
            if header or end - pos < _HEADER_SIZE:
                need = _HEADER_SIZE - len(header)
                header += view[pos : pos + need]
                pos += min(need, end - pos)
                if len(header) < _HEADER_SIZE:
                    break
                kind, stream, length = HEADER.unpack(header)
                header.clear()
            else:
                kind, stream, length = _unpack_header(view, pos)
                pos += _HEADER_SIZE
            if kind == DATA:
                self._received(stream, length)
                if length <= end - pos:  # the common case: the whole frame is here
                    if length:
                        events.append(_new_event(StreamDataReceived, (stream, view[pos : pos + length])))
                        pos += length
                    continue
                self._current = stream
                self._remaining = length
            elif kind == WINDOW_UPDATE:
                events.append(self._granted(stream, length))
            else:
                raise errors.FramingError(f"unknown mux frame type {kind} on stream {stream}")
        return events

    def receive_whole(
        self, data: memoryview, take: Callable[[int, memoryview, int, int], list[T] | None]
    ) -> tuple[int, list[T]]:
        """The fast path of `receive_data`, for whole DATA frames: returns how many bytes of `data` it consumed and
        what `take` made of them; the caller hands the rest to `receive_data`.

        While the parser is between frames, each whole DATA frame at the front of `data`, within its stream's
        credit, is offered to ``take(stream, data, start, end)`` (its body is ``data[start:end]``). A frame `take`
        accepts (by returning a list) is accounted for exactly as `receive_data` would; the first one it refuses
        (None), or anything else (a partial frame, a WINDOW_UPDATE, a new stream, a frame beyond its credit),
        ends the run, unconsumed.
        """
        out: list[T] = []
        if self._header or self._remaining:
            return 0, out
        pos = 0
        end = len(data)
        while end - pos >= _HEADER_SIZE:
            kind, stream, length = _unpack_header(data, pos)
            start = pos + _HEADER_SIZE
            stop = start + length
            if kind != DATA or stop > end or not length:
                break
            window = self._in.get(stream)
            if window is None or length > window.outstanding:
                break
            taken = take(stream, data, start, stop)
            if taken is None:
                break
            window.outstanding -= length
            out += taken
            pos = stop
        return pos, out

    def _received(self, stream: int, n: int) -> None:
        """`n` bytes of `stream` arrived: within the peer's credit, or a `FramingError`."""
        window = self._in.get(stream)
        if window is None:
            window = self._open_inbound(stream)
        if n > window.outstanding:
            window.received(n)  # raises: the peer had no credit for this
        window.outstanding -= n

    def _granted(self, stream: int, n: int) -> CreditAvailable:
        """The peer granted `n` bytes of credit on `stream`."""
        out = self._out.get(stream)
        if out is None:
            out = self._out[stream] = _Outbound()
        out.window.grant(n)
        return CreditAvailable(stream)

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


PREFIX = struct.Struct(">BI")  # a native stream's first bytes: DATA and the channel it carries, or WINDOW_UPDATE
_CREDIT = -1  # the channel of the peer's native stream that carries its window updates


class StreamMultiplexer(Multiplexer):
    """Core's channels and credit over a transport's native streams (`transport.StreamPipe`, i.e. QUIC).

    Each channel travels on a native stream of its own, without per-frame headers: a stream starts with a 5-byte
    prefix, type DATA and the channel id (as in a mux header), and the channel's bytes follow. This side's window
    updates travel on one more stream, whose prefix has type WINDOW_UPDATE, as 9-byte WINDOW_UPDATE frames. Native
    streams are numbered from 0 in order of first use, in each direction (dense, as QUIC's stream limits expect);
    the transport maps the numbers to its own ids. Credit works exactly as over one byte pipe, so a native stream's
    own flow control never has to hold anything back: core's credit bounds what a peer may send on each channel
    and what an unread channel holds.
    """

    def __init__(self, *, window: int = DEFAULT_WINDOW, max_streams: int = MAX_STREAMS) -> None:
        super().__init__(window=window, max_streams=max_streams)
        self._numbers: dict[int, int] = {}  # our channel -> our native stream number (_CREDIT: our grants')
        self._peer: dict[int, int] = {}  # the peer's native stream number -> the channel it carries, or _CREDIT
        self._prefixes: dict[int, bytearray] = {}  # the peer's streams whose prefix is still incomplete
        self._credit_rest = bytearray()  # a window update cut by a read

    def _number(self, channel: int, kind: int) -> tuple[int, bytes | None]:
        """Our native stream for `channel`, and the prefix to write first when it is new."""
        number = self._numbers.get(channel)
        if number is not None:
            return number, None
        number = self._numbers[channel] = len(self._numbers)
        return number, PREFIX.pack(kind, max(channel, 0))

    def streams_to_send(self) -> list[tuple[int, list[bytes | bytearray | memoryview]]]:
        """Everything that can be written now, as ``(native stream number, chunks)``: window updates first."""
        writes: list[tuple[int, list[bytes | bytearray | memoryview]]] = []
        if self._grants:
            number, prefix = self._number(_CREDIT, WINDOW_UPDATE)
            grants: list[bytes | bytearray | memoryview] = [prefix] if prefix else []
            grants += self._take_grants()
            writes.append((number, grants))
        for channel in list(self._ready):
            n, chunks = self._take(channel)
            if n:
                number, prefix = self._number(channel, DATA)
                if prefix:
                    chunks.insert(0, prefix)
                writes.append((number, chunks))
        return writes

    def data_to_send(self) -> list[bytes | bytearray | memoryview]:
        raise errors.InvalidState("a StreamMultiplexer writes per native stream: streams_to_send")

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        raise errors.InvalidState("a StreamMultiplexer reads per native stream: receive_stream")

    def receive_whole(
        self, data: memoryview, take: Callable[[int, memoryview, int, int], list[T] | None]
    ) -> tuple[int, list[T]]:
        return 0, []

    def receive_stream(self, number: int, data: bytes | memoryview) -> list[Event]:
        """Bytes of the peer's native stream `number`; raises `FramingError` on a protocol violation.

        A data stream's bytes come back as one `StreamDataReceived` (a view of `data`, not a copy)."""
        view = data if type(data) is memoryview else memoryview(data)
        channel = self._peer.get(number)
        if channel is None:
            view, found = self._read_prefix(number, view)
            if found is None:
                return []
            channel = found
        if channel == _CREDIT:
            return self._receive_credit(view)
        n = len(view)
        if not n:
            return []
        self._received(channel, n)
        return [_new_event(StreamDataReceived, (channel, view))]

    def _read_prefix(self, number: int, view: memoryview) -> tuple[memoryview, int | None]:
        prefix = self._prefixes.get(number)
        if prefix is None:
            if len(self._peer) + len(self._prefixes) > self.max_streams:
                raise errors.FramingError(f"peer opened more than {self.max_streams + 1} native streams")
            prefix = self._prefixes[number] = bytearray()
        need = PREFIX.size - len(prefix)
        prefix += view[:need]
        view = view[need:]
        if len(prefix) < PREFIX.size:
            return view, None
        del self._prefixes[number]
        kind, channel = PREFIX.unpack(prefix)
        if kind == WINDOW_UPDATE:
            if _CREDIT in self._peer.values():
                raise errors.FramingError("a second native stream of window updates")
            channel = _CREDIT
        elif kind != DATA:
            raise errors.FramingError(f"unknown native stream type {kind}")
        elif channel in self._peer.values():
            raise errors.FramingError(f"a second native stream for channel {channel}")
        self._peer[number] = channel
        return view, channel

    def _receive_credit(self, view: memoryview) -> list[Event]:
        rest = self._credit_rest
        if rest:
            rest += view
            view = memoryview(bytes(rest))
            rest.clear()
        events: list[Event] = []
        pos, end = 0, len(view)
        while end - pos >= _HEADER_SIZE:
            kind, stream, length = _unpack_header(view, pos)
            pos += _HEADER_SIZE
            if kind != WINDOW_UPDATE:
                raise errors.FramingError(f"mux frame type {kind} on the stream of window updates")
            events.append(self._granted(stream, length))
        rest += view[pos:]
        return events

    def eof(self) -> None:
        if self._credit_rest:
            raise errors.FramingError(f"stream ended inside a window update ({len(self._credit_rest)} bytes)")
