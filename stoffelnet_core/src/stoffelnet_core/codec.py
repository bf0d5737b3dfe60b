"""Frames on a byte stream: a 4-byte big-endian length, then a CBOR-encoded envelope. No I/O here.

`encode` turns an envelope into one frame. `FrameDecoder` is incremental: feed it bytes in any chunking and it
returns the whole envelopes they complete. A length over the maximum is refused at the header, before anything is
buffered for it; anything that is not a well-formed envelope raises `FramingError` and never a cbor2, `KeyError`,
`IndexError` or `TypeError`. The decoder keeps one buffer and compacts it once per `feed`, not once per frame.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import Any, TypeVar

import cbor2

from . import errors
from .frames import Accepted, Ack, Close, Data, Envelope, Handshake, Kind, Ping, Proof, Tag

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "FrameDecoder",
    "check_tag",
    "data_head",
    "decode_body",
    "encode",
    "encode_data",
    "read_messages",
]

HEADER_SIZE = 4
T = TypeVar("T", bound=tuple[Any, ...])
DEFAULT_MAX_FRAME_SIZE = 100 * 1024 * 1024  # the seed's 100 MiB: room for a fully unrolled circuit (~40 MB)
_MAX_U32 = 0xFFFFFFFF
_MAX_U64 = 0xFFFFFFFFFFFFFFFF

_MIN_TAG = -(2**64)  # int tags are CBOR's native integers; bignums are refused
_DATA = int(Kind.DATA)
_dumps = cbor2.dumps
_new_data = tuple.__new__  # builds a Data NamedTuple without its Python-level __new__
_loads = cbor2.loads
_PROBE = struct.Struct(">IBBBB").unpack_from  # length, array head, kind, stream head, seq head of a Data frame
_PROBE_SIZE = 8
_FAST_SPAN = 18  # bytes the fast path may read from a frame's start (the largest heads): all must be in the buffer
_U32 = struct.Struct(">I").unpack_from


def _never(data: object, offset: int) -> tuple[int]:
    return (0,)


def _head_table(major: int) -> list[tuple[Callable[[Any, int], tuple[int]], int, int]]:
    """For each initial byte: how to read the number that follows it (struct, width) and the least value that
    needs that width; bytes that are no unsigned head of this major type below 2**32 get a least value that no
    number reaches, so the fast path leaves them to the full one."""
    table: list[tuple[Callable[[Any, int], tuple[int]], int, int]] = [(_never, 0, 1 << 64)] * 256
    for i in range(24):
        table[major | i] = (_never, 0, 0)
    table[major | 24] = (struct.Struct(">B").unpack_from, 1, 24)
    table[major | 25] = (struct.Struct(">H").unpack_from, 2, 0x100)
    table[major | 26] = (_U32, 4, 0x10000)
    return table


_LEN_HEAD = _head_table(0x40)  # a payload: a byte string's length


def _seq_table() -> list[tuple[Callable[[Any, int], tuple[int, int, int]], int, int, int]]:
    """For each seq head byte: a struct reading (seq, the tag's head byte, the next byte) in one call, where it
    starts (from the frame's start), the seq's width after its head, and the least seq that needs that width."""
    never = (lambda data, offset: (0, 0, 0), 0, 0, 1 << 64)
    table = [never] * 256
    for i in range(24):
        table[i] = (struct.Struct(">BBB").unpack_from, _PROBE_SIZE - 1, 0, 0)  # the head is the seq itself
    table[24] = (struct.Struct(">BBB").unpack_from, _PROBE_SIZE, 1, 24)
    table[25] = (struct.Struct(">HBB").unpack_from, _PROBE_SIZE, 2, 0x100)
    table[26] = (struct.Struct(">IBB").unpack_from, _PROBE_SIZE, 4, 0x10000)
    return table


_SEQ_TAG = _seq_table()


def check_tag(tag: object) -> None:
    """Raise `ValueError` unless `tag` is None, bytes, or an int in ``-2**64 .. 2**64-1``."""
    if tag is not None and type(tag) is not bytes and not (type(tag) is int and _MIN_TAG <= tag <= _MAX_U64):
        raise ValueError(f"a tag must be an int in -2**64..2**64-1 or bytes, got {_show(tag)}")


def _uint_head(major: int, n: int) -> bytes:
    """A CBOR head of major type `major` (already shifted: 0x00, 0x20, 0x40) carrying `n`, in shortest form."""
    if n < 24:
        return bytes((major | n,))
    if n < 0x100:
        return bytes((major | 24, n))
    if n < 0x10000:
        return bytes((major | 25, n >> 8, n & 0xFF))
    if n < 0x100000000:
        return bytes((major | 26,)) + n.to_bytes(4, "big")
    return bytes((major | 27,)) + n.to_bytes(8, "big")


def _tag_item(tag: Tag | None) -> bytes:
    if tag is None:
        return b"\xf6"
    if type(tag) is bytes:
        return _uint_head(0x40, len(tag)) + tag
    assert type(tag) is int
    return _uint_head(0x00, tag) if tag >= 0 else _uint_head(0x20, -1 - tag)


# Data heads for the common shape (stream < 24, no tag, seq and payload length below 2**32), one struct each:
# ``_FAST_HEAD[4 * seq_class + length_class]`` with classes 0: < 24 (in the initial byte), 1: u8, 2: u16, 3: u32.
_HEAD_FMT = ("B", "BB", "BH", "BI")
_HEAD_MARK = (0, 24, 25, 26)


def _fast_head(seq_class: int, len_class: int) -> Callable[[int, int, int], bytes]:
    fmt = ">IBBB" + _HEAD_FMT[seq_class] + "B" + _HEAD_FMT[len_class]
    pack = struct.Struct(fmt).pack
    extra = struct.calcsize(fmt) - HEADER_SIZE  # body bytes before the payload
    q, n = _HEAD_MARK[seq_class], _HEAD_MARK[len_class] | 0x40
    if not seq_class and not len_class:
        return lambda s, seq, size: pack(size + extra, 0x85, _DATA, s, seq, 0xF6, 0x40 | size)
    if not seq_class:
        return lambda s, seq, size: pack(size + extra, 0x85, _DATA, s, seq, 0xF6, n, size)
    if not len_class:
        return lambda s, seq, size: pack(size + extra, 0x85, _DATA, s, q, seq, 0xF6, 0x40 | size)
    return lambda s, seq, size: pack(size + extra, 0x85, _DATA, s, q, seq, 0xF6, n, size)


_FAST_HEAD = [_fast_head(sc, lc) for sc in range(4) for lc in range(4)]
# The commonest of them (seq and length both past their initial byte) without the lambda: (pack, body bytes before
# the payload, seq head, length head), at ``_WIDE_HEAD[3 * (seq_class - 1) + length_class - 1]``.
_WIDE_HEAD = [
    (
        struct.Struct(">IBBBB" + _HEAD_FMT[sc][1] + "BB" + _HEAD_FMT[lc][1]).pack,
        struct.calcsize(">IBBBB" + _HEAD_FMT[sc][1] + "BB" + _HEAD_FMT[lc][1]) - HEADER_SIZE,
        _HEAD_MARK[sc],
        _HEAD_MARK[lc] | 0x40,
    )
    for sc in range(1, 4)
    for lc in range(1, 4)
]


def data_head(stream: int, seq: int, tag: Tag | None, size: int) -> bytes:
    """The first bytes of a Data frame whose payload is `size` bytes long: the length prefix and the envelope's
    CBOR up to the payload's own bytes. ``data_head(...) + payload`` is exactly `encode_data`'s frame (shortest-form
    CBOR, as cbor2 writes it), so the payload is never copied to frame it."""
    if tag is None and stream < 24 and 24 <= seq < 0x100000000 and 24 <= size < 0x100000000:
        pack, extra, q, n = _WIDE_HEAD[
            (0 if seq < 0x100 else 3 if seq < 0x10000 else 6) + (0 if size < 0x100 else 1 if size < 0x10000 else 2)
        ]
        return pack(size + extra, 0x85, _DATA, stream, q, seq, 0xF6, n, size)
    if tag is None and stream < 24 and seq < 0x100000000 and size < 0x100000000:
        return _FAST_HEAD[
            (0 if seq < 24 else 4 if seq < 0x100 else 8 if seq < 0x10000 else 12)
            + (0 if size < 24 else 1 if size < 0x100 else 2 if size < 0x10000 else 3)
        ](stream, seq, size)
    head = b"\x85\x01" + _uint_head(0x00, stream) + _uint_head(0x00, seq) + _tag_item(tag) + _uint_head(0x40, size)
    return (len(head) + size).to_bytes(HEADER_SIZE, "big") + head


def encode_data(stream: int, seq: int, tag: Tag | None, payload: bytes | bytearray | memoryview) -> bytes:
    """Frame one data message; the hot path, so it skips building a `Data` object (and cbor2)."""
    if type(payload) is not bytes:
        payload = bytes(payload)
    if (
        (tag is None or type(tag) is bytes or (type(tag) is int and _MIN_TAG <= tag <= _MAX_U64))
        and type(stream) is int
        and type(seq) is int
        and 0 <= stream <= _MAX_U64
        and 0 <= seq <= _MAX_U64
    ):
        return data_head(stream, seq, tag, len(payload)) + payload
    body = _dumps([_DATA, stream, seq, tag, payload])  # out of the protocol's ranges (tests, hostile peers)
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
        raise errors.FramingError(f"malformed CBOR in envelope: {exc}").because(exc)  # noqa: B904 - see because
    if fp.tell() != len(body):
        raise errors.FramingError(f"{len(body) - fp.tell()} trailing bytes after the envelope")


def decode_body(body: bytes | bytearray | memoryview) -> Envelope:
    """Decode one frame body (without its length prefix) into an envelope."""
    try:
        fields = _loads(body)
    except Exception as exc:  # cbor2 raises several types (and RecursionError, OverflowError...) on bad input
        raise errors.FramingError(f"malformed CBOR in envelope: {_show(exc)}").because(exc)  # noqa: B904
    return _decode_fields(fields, len(body), body)


def read_messages(
    data: memoryview, pos: int, end: int, stream: int, seq: int, limit: int, cls: type[T]
) -> tuple[list[T], int]:
    """The run of Data frames at the front of ``data[pos:end]`` for `stream` (below 24), numbered `seq`, `seq` + 1
    ..., each as ``cls((stream, seq, tag, payload, frame_size))``, and where the run stopped.

    The receive fast path (`Session.receive_whole`, `Session.receive_data`): it takes whole frames of the common
    shape only (`FrameDecoder._parse`'s fast one: no tag or one below 24, numbers below 2**32, shortest form) and
    stops, without reading further, at the first thing that is anything else -- a cut frame, another kind, shape,
    stream or number, or fewer than `_FAST_SPAN` bytes left in `data`. The caller hands the bytes from there to
    `FrameDecoder.feed`, which accepts or refuses them.
    """
    out: list[T] = []
    append = out.append
    size = len(data)
    while pos < end:
        if size - pos < _FAST_SPAN:
            break
        length, first, kind, head, q = _PROBE(data, pos)
        stop = pos + HEADER_SIZE + length
        if stop > end or length > limit or first != 0x85 or kind != _DATA or head != stream:
            break
        read, at, width, least = _SEQ_TAG[q]
        got, t, h = read(data, pos + at)  # the seq, then the tag's head (null, or a small int), the payload's head
        if got != seq or got < least or (t != 0xF6 and t >= 24):
            break
        o = pos + _PROBE_SIZE + width
        read, width, least = _LEN_HEAD[h]
        n = read(data, o + 2)[0] if width else h - 0x40
        o += 2 + width
        if o + n != stop or n < least:
            break
        append(_new_data(cls, (stream, seq, None if t == 0xF6 else t, data[o:stop].tobytes(), stop - pos)))
        seq += 1
        pos = stop
    return out, pos


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

    @property
    def missing(self) -> int:
        """Bytes the frame in progress still lacks (its header's, while that is incomplete); 0 when none is."""
        return self._need - len(self._buf) if self._buf else 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[Envelope, int]]:
        """Add bytes; return every envelope they complete, in order.

        Raises `FramingError` on an oversized length or a malformed envelope; the decoder is then unusable (the
        stream is out of sync), and the caller closes the connection.
        """
        buf = self._buf
        out: list[tuple[Envelope, int]] = []
        if buf:
            # Complete the frame in progress with just the bytes it lacks, then parse the rest in place: the
            # bytes after a frame cut by a read are never copied into the buffer.
            rest = data if type(data) is memoryview else memoryview(data)
            while buf:
                missing = self._need - len(buf)
                if len(rest) < missing:
                    buf += rest
                    return out
                buf += rest[:missing]
                rest = rest[missing:]
                with memoryview(buf) as view:
                    got, consumed = self._parse(view, True)  # the header only (`_need` grows), or the frame
                if consumed:
                    del buf[:consumed]
                    out += got
            data = rest
        if len(data) < self._need:
            buf += data
            return out
        if type(data) is bytes:  # parsed as it is: a slice of it is the payload, one copy
            got, consumed = self._parse(data, False)
            if consumed < len(data):
                buf += memoryview(data)[consumed:]
        elif type(data) is memoryview:  # the caller's view (of bytes: one byte per item), read in place
            got, consumed = self._parse(data, True)
            if consumed < len(data):
                buf += data[consumed:]
        else:
            with memoryview(data) as view:
                got, consumed = self._parse(view, True)
                if consumed < len(view):
                    buf += view[consumed:]
        if out:
            out += got
            return out
        return got

    def _parse(self, data: bytes | memoryview, view: bool) -> tuple[list[tuple[Envelope, int]], int]:
        """Every whole frame in `data` (a memoryview when `view`), and how many bytes they took.

        The common frame -- a Data envelope on a stream below 24, without a tag or with a tag below 24, its seq
        and payload length below 2**32 -- is read with `struct` straight from the buffer (`_SEQ_TAG`,
        `_LEN_HEAD`) and its payload sliced out once; every other frame goes through cbor2 and the full checks
        (`_decode_fields`). Both accept exactly the shortest-form encoding, nothing before or after the one item.
        """
        out: list[tuple[Envelope, int]] = []
        append = out.append
        pos = 0
        end = len(data)
        limit = self.max_frame_size
        while end - pos >= HEADER_SIZE:
            if end - pos >= _FAST_SPAN:
                length, first, kind, stream, q = _PROBE(data, pos)
            else:
                length, first = _U32(data, pos)[0], 0
            if length > limit:
                raise errors.FramingError(f"frame length {length} exceeds the maximum frame size {limit}")
            stop = pos + HEADER_SIZE + length
            if stop > end:
                self._need = stop - pos
                return out, pos
            if first == 0x85 and kind == _DATA and stream < 24:
                # [1, stream, seq, tag, payload], each head in shortest form: a table per head byte gives the
                # struct that reads what follows it, its width and the least value that needs that width
                read, at, width, least = _SEQ_TAG[q]
                seq, t, h = read(data, pos + at)  # the seq, the tag's head (null or a small int), the payload's head
                if (t == 0xF6 or t < 24) and seq >= least:  # (a seq below `least` is not in shortest form)
                    o = pos + _PROBE_SIZE + width
                    read, width, least = _LEN_HEAD[h]
                    n = read(data, o + 2)[0] if width else h - 0x40
                    o += 2 + width
                    if o + n == stop and n >= least:
                        payload = data[o:stop].tobytes() if view else data[o:stop]  # type: ignore[union-attr]
                        append((_new_data(Data, (stream, seq, None if t == 0xF6 else t, payload)), stop - pos))
                        pos = stop
                        continue
            body = data[pos + HEADER_SIZE : stop]
            try:
                fields = _loads(body)
            except Exception as exc:  # cbor2 raises several types (and RecursionError...) on bad input
                raise errors.FramingError(f"malformed CBOR in envelope: {_show(exc)}").because(exc)  # noqa: B904
            append((_decode_fields(fields, length, body), stop - pos))
            pos = stop
        self._need = HEADER_SIZE
        return out, pos

    def eof(self) -> None:
        """The stream ended; raises `FramingError` if it ended inside a frame (a truncated frame)."""
        if self._buf:
            raise errors.FramingError(f"stream ended inside a frame ({len(self._buf)} bytes of it received)")
