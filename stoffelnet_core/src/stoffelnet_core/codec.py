"""Frames on a byte stream: a 4-byte big-endian length, then a CBOR-encoded envelope. No I/O here.

`encode` turns an envelope into one frame. `FrameDecoder` is incremental: feed it bytes in any chunking and it
returns the whole envelopes they complete. A length over the maximum is refused at the header, before anything is
buffered for it; anything that is not a well-formed envelope raises `FramingError` and never a cbor2, `KeyError`,
`IndexError` or `TypeError`. The decoder keeps one buffer and compacts it once per `feed`, not once per frame.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from . import errors
from .frames import Accepted, Ack, Close, Data, Envelope, Handshake, Kind, Ping, Proof, Tag

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "FrameDecoder",
    "check_tag",
    "decode_body",
    "encode",
    "encode_data",
]

HEADER_SIZE = 4
DEFAULT_MAX_FRAME_SIZE = 100 * 1024 * 1024  # the seed's 100 MiB: room for a fully unrolled circuit (~40 MB)
_MAX_U32 = 0xFFFFFFFF
_MAX_U64 = 0xFFFFFFFFFFFFFFFF

_MIN_TAG = -(2**64)  # int tags are CBOR's native integers; bignums are refused
_DATA = int(Kind.DATA)
_dumps = cbor2.dumps
_new_data = tuple.__new__  # builds a Data NamedTuple without its Python-level __new__
_loads = cbor2.loads


def check_tag(tag: object) -> None:
    """Raise `ValueError` unless `tag` is None, bytes, or an int in ``-2**64 .. 2**64-1``."""
    if tag is not None and type(tag) is not bytes and not (type(tag) is int and _MIN_TAG <= tag <= _MAX_U64):
        raise ValueError(f"a tag must be an int in -2**64..2**64-1 or bytes, got {_show(tag)}")


def encode_data(stream: int, seq: int, tag: Tag | None, payload: bytes | bytearray | memoryview) -> bytes:
    """Frame one data message; the hot path, so it skips building a `Data` object."""
    if type(payload) is memoryview:
        payload = payload.tobytes()  # cbor2 would write a memoryview as an array of integers
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
    elif isinstance(envelope, Proof):
        fields = [int(Kind.PROOF), envelope.certificate, envelope.signature]
    elif isinstance(envelope, Accepted):
        fields = [int(Kind.ACCEPTED)]
    elif isinstance(envelope, Ping):
        fields = [int(Kind.PING)]
    else:
        raise TypeError(f"not an envelope: {envelope!r}")
    body = _dumps(fields)
    return len(body).to_bytes(4, "big") + body


def _show(value: object) -> str:
    """A short description of a bad value (never the repr of a huge bignum, which itself can raise)."""
    if type(value) is int and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        return f"{value!r:.80}"
    except Exception:
        return type(value).__name__


def _uint(value: object, name: str, limit: int) -> int:
    if type(value) is not int or not 0 <= value <= limit:
        raise errors.FramingError(f"envelope field {name} must be an integer in 0..{limit}, got {_show(value)}")
    return value


def _head_len(n: int) -> int:
    """Bytes of a CBOR head carrying the unsigned number `n` in its shortest form."""
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 0x100000000 else 9


def _data_len(stream: int, seq: int, tag: object, payload: bytes) -> int:
    """Length of a Data envelope in shortest-form CBOR; a body of another length had trailing or padded bytes."""
    n = len(payload)
    size = 2 + n  # array head, kind
    size += 1 if stream < 24 else 2 if stream < 0x100 else 3 if stream < 0x10000 else 5
    size += 1 if seq < 24 else 2 if seq < 0x100 else 3 if seq < 0x10000 else 5 if seq < 0x100000000 else 9
    size += 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 0x100000000 else 9
    if tag is None:
        return size + 1
    if type(tag) is bytes:
        return size + _head_len(len(tag)) + len(tag)
    assert type(tag) is int
    return size + _head_len(tag if tag >= 0 else -1 - tag)


def _bytes(value: object, name: str) -> bytes:
    if type(value) is not bytes:
        raise errors.FramingError(f"envelope field {name} must be bytes, got {type(value).__name__}")
    return value


def _decode_fields(fields: object, size: int, body: bytes | bytearray | memoryview) -> Envelope:
    if type(fields) is not list or not fields:
        raise errors.FramingError(f"an envelope must be a non-empty CBOR array, got {type(fields).__name__}")
    kind = fields[0]
    n = len(fields)
    if kind == _DATA and type(kind) is int:
        if n != 5:
            raise errors.FramingError(f"a Data envelope has 5 fields, got {n}")
        tag = fields[3]
        if tag is not None and type(tag) is not bytes and not (type(tag) is int and _MIN_TAG <= tag <= _MAX_U64):
            raise errors.FramingError(f"a tag must be an int in -2**64..2**64-1, bytes or null, got {_show(tag)}")
        stream, seq, payload = fields[1], fields[2], fields[4]
        if type(stream) is not int or not 0 <= stream <= _MAX_U32:
            _uint(stream, "stream", _MAX_U32)
        if type(seq) is not int or not 0 <= seq <= _MAX_U64:
            _uint(seq, "seq", _MAX_U64)
        if type(payload) is not bytes:
            _bytes(payload, "payload")
        if size != _data_len(stream, seq, tag, payload):
            raise errors.FramingError("a Data envelope must be one item in shortest-form CBOR, with nothing after it")
        return Data(stream, seq, tag, payload)
    if type(kind) is int and kind != _DATA:
        _check_single_item(body)
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
    if kind == Kind.PROOF and type(kind) is int:
        if n != 3:
            raise errors.FramingError(f"a Proof envelope has 3 fields, got {n}")
        return Proof(_bytes(fields[1], "certificate"), _bytes(fields[2], "signature"))
    if kind == Kind.PING and type(kind) is int:
        if n != 1:
            raise errors.FramingError(f"a Ping envelope has 1 field, got {n}")
        return Ping()
    if kind == Kind.ACCEPTED and type(kind) is int:
        if n != 1:
            raise errors.FramingError(f"an Accepted envelope has 1 field, got {n}")
        return Accepted()
    raise errors.FramingError(f"unknown envelope kind {_show(kind)}")


def _check_single_item(body: bytes | bytearray | memoryview) -> None:
    """Control envelopes are rare: decode again with a decoder that tells where the item ended."""
    fp = io.BytesIO(body)
    try:
        cbor2.CBORDecoder(fp).decode()
    except Exception as exc:
        raise errors.FramingError(f"malformed CBOR in envelope: {exc}") from exc
    if fp.tell() != len(body):
        raise errors.FramingError(f"{len(body) - fp.tell()} trailing bytes after the envelope")


def decode_body(body: bytes | bytearray | memoryview) -> Envelope:
    """Decode one frame body (without its length prefix) into an envelope."""
    try:
        fields = _loads(body)
    except Exception as exc:  # cbor2 raises several types (and RecursionError, OverflowError...) on bad input
        raise errors.FramingError(f"malformed CBOR in envelope: {_show(exc)}") from exc
    return _decode_fields(fields, len(body), body)


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
            body = view[pos + HEADER_SIZE : stop]
            try:
                fields = _loads(body)
            except Exception as exc:  # cbor2 raises several types (and RecursionError...) on bad input
                raise errors.FramingError(f"malformed CBOR in envelope: {_show(exc)}") from exc
            # The common case inline (a well-formed untagged or tagged Data); anything else takes the full path.
            if (
                type(fields) is list
                and len(fields) == 5
                and fields[0] == _DATA
                and type(fields[0]) is int
                and type(stream := fields[1]) is int
                and 0 <= stream <= _MAX_U32
                and type(seq := fields[2]) is int
                and 0 <= seq <= _MAX_U64
                and (tag := fields[3]) is None
                and type(payload := fields[4]) is bytes
                and length == _data_len(stream, seq, None, payload)
            ):
                out.append((_new_data(Data, (stream, seq, tag, payload)), stop - pos))
            else:
                out.append((_decode_fields(fields, length, body), stop - pos))
            pos = stop
        self._need = HEADER_SIZE
        return out, pos

    def eof(self) -> None:
        """The stream ended; raises `FramingError` if it ended inside a frame (a truncated frame)."""
        if self._buf:
            raise errors.FramingError(f"stream ended inside a frame ({len(self._buf)} bytes of it received)")
