"""Frames on a byte stream: a 4-byte big-endian length, then a CBOR-encoded envelope. No I/O here.

`encode` turns an envelope into one frame. `FrameDecoder` is incremental: feed it bytes in any chunking and it
returns the whole envelopes they complete. A length over the maximum is refused at the header, before anything is
buffered for it; anything that is not a well-formed envelope raises `FramingError` and never a cbor2, `KeyError`,
`IndexError` or `TypeError`. The decoder keeps one buffer and compacts it once per `feed`, not once per frame.
"""

from __future__ import annotations

from typing import Any

import cbor2

from . import errors
from .frames import Ack, Close, Data, Envelope, Handshake, Kind, Tag

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "FrameDecoder",
    "decode_body",
    "encode",
    "encode_data",
]

HEADER_SIZE = 4
DEFAULT_MAX_FRAME_SIZE = 100 * 1024 * 1024  # the seed's 100 MiB: room for a fully unrolled circuit (~40 MB)
_MAX_U32 = 0xFFFFFFFF
_MAX_U64 = 0xFFFFFFFFFFFFFFFF

_DATA = int(Kind.DATA)
_dumps = cbor2.dumps
_loads = cbor2.loads


def encode_data(stream: int, seq: int, tag: Tag | None, payload: bytes | bytearray | memoryview) -> bytes:
    """Frame one data message; the hot path, so it skips building a `Data` object."""
    body = _dumps([_DATA, stream, seq, tag, payload])
    return len(body).to_bytes(4, "big") + body


def encode(envelope: Envelope) -> bytes:
    """Frame one envelope."""
    fields: list[Any]
    if isinstance(envelope, Data):
        return encode_data(envelope.stream, envelope.seq, envelope.tag, envelope.payload)
    if isinstance(envelope, Handshake):
        fields = [
            int(Kind.HANDSHAKE),
            envelope.role,
            envelope.id,
            envelope.version,
            envelope.session_id,
            envelope.nonce,
        ]
    elif isinstance(envelope, Ack):
        fields = [int(Kind.ACK), envelope.stream, envelope.seq]
    elif isinstance(envelope, Close):
        fields = [int(Kind.CLOSE), envelope.reason]
    else:
        raise TypeError(f"not an envelope: {envelope!r}")
    body = _dumps(fields)
    return len(body).to_bytes(4, "big") + body


def _uint(value: object, name: str, limit: int) -> int:
    if type(value) is not int or not 0 <= value <= limit:
        raise errors.FramingError(f"envelope field {name} must be an integer in 0..{limit}, got {value!r:.80}")
    return value


def _bytes(value: object, name: str) -> bytes:
    if type(value) is not bytes:
        raise errors.FramingError(f"envelope field {name} must be bytes, got {type(value).__name__}")
    return value


def _decode_fields(fields: object) -> Envelope:
    if type(fields) is not list or not fields:
        raise errors.FramingError(f"an envelope must be a non-empty CBOR array, got {type(fields).__name__}")
    kind = fields[0]
    n = len(fields)
    if kind == _DATA and type(kind) is int:
        if n != 5:
            raise errors.FramingError(f"a Data envelope has 5 fields, got {n}")
        tag = fields[3]
        if tag is not None and type(tag) is not bytes and type(tag) is not int:
            raise errors.FramingError(f"a tag must be an int, bytes or null, got {type(tag).__name__}")
        return Data(
            _uint(fields[1], "stream", _MAX_U32),
            _uint(fields[2], "seq", _MAX_U64),
            tag,
            _bytes(fields[4], "payload"),
        )
    if kind == Kind.HANDSHAKE and type(kind) is int:
        if n != 6:
            raise errors.FramingError(f"a Handshake envelope has 6 fields, got {n}")
        role, claimed = fields[1], fields[2]
        if type(role) is not str:
            raise errors.FramingError(f"Handshake role must be a string, got {type(role).__name__}")
        if claimed is not None:
            claimed = _uint(claimed, "id", _MAX_U32)
        return Handshake(
            role,
            claimed,
            _uint(fields[3], "version", _MAX_U32),
            _bytes(fields[4], "session_id"),
            _bytes(fields[5], "nonce"),
        )
    if kind == Kind.ACK and type(kind) is int:
        if n != 3:
            raise errors.FramingError(f"an Ack envelope has 3 fields, got {n}")
        return Ack(_uint(fields[1], "stream", _MAX_U32), _uint(fields[2], "seq", _MAX_U64))
    if kind == Kind.CLOSE and type(kind) is int:
        if n != 2 or type(fields[1]) is not str:
            raise errors.FramingError("a Close envelope has 2 fields: kind and a reason string")
        return Close(fields[1])
    raise errors.FramingError(f"unknown envelope kind {kind!r:.40}")


def decode_body(body: bytes | bytearray | memoryview) -> Envelope:
    """Decode one frame body (without its length prefix) into an envelope."""
    try:
        fields = _loads(body)
    except errors.FramingError:
        raise
    except Exception as exc:  # cbor2 raises several types (and RecursionError, OverflowError...) on bad input
        raise errors.FramingError(f"malformed CBOR in envelope: {exc}") from exc
    return _decode_fields(fields)


class FrameDecoder:
    """Incremental frame decoder for one byte stream.

    `feed` returns ``(envelope, frame_size)`` pairs; `frame_size` counts the header, so a caller that grants flow
    control credit per frame can return exactly what the frame used.
    """

    __slots__ = ("_buf", "_need", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 < max_frame_size <= _MAX_U32:
            raise ValueError(f"max_frame_size must be in 1..{_MAX_U32}, got {max_frame_size}")
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._need = HEADER_SIZE  # bytes needed before the next parse can make progress

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[Envelope, int]]:
        """Add bytes; return every envelope they complete, in order.

        Raises `FramingError` on an oversized length or a malformed envelope; the decoder is then unusable (the
        stream is out of sync), and the caller closes the connection.
        """
        buf = self._buf
        if not buf:
            if len(data) < self._need:
                buf += data
                return []
            with memoryview(data) as view:
                out, consumed = self._parse(view)
                if consumed < len(view):
                    buf += view[consumed:]
            return out
        buf += data
        if len(buf) < self._need:
            return []
        with memoryview(buf) as view:
            out, consumed = self._parse(view)
        if consumed:
            del buf[:consumed]
        return out

    def _parse(self, view: memoryview) -> tuple[list[tuple[Envelope, int]], int]:
        out: list[tuple[Envelope, int]] = []
        pos = 0
        end = len(view)
        limit = self.max_frame_size
        while end - pos >= HEADER_SIZE:
            length = int.from_bytes(view[pos : pos + HEADER_SIZE], "big")
            if length > limit:
                raise errors.FramingError(f"frame length {length} exceeds the maximum frame size {limit}")
            stop = pos + HEADER_SIZE + length
            if stop > end:
                self._need = stop - pos
                return out, pos
            out.append((decode_body(view[pos + HEADER_SIZE : stop]), stop - pos))
            pos = stop
        self._need = HEADER_SIZE
        return out, pos

    def eof(self) -> None:
        """The stream ended; raises `FramingError` if it ended inside a frame (a truncated frame)."""
        if self._buf:
            raise errors.FramingError(f"stream ended inside a frame ({len(self._buf)} bytes of it received)")
