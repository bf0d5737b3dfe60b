"""The frame codec: round trips, chunking, size limits at the header, and only `FramingError` on bad input."""

from __future__ import annotations

import struct

import cbor2
import pytest

from stoffelnet_core import errors
from stoffelnet_core.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    FrameDecoder,
    check_tag,
    decode_body,
    encode,
    encode_data,
)
from stoffelnet_core.frames import PROTOCOL_VERSION, Ack, Close, Data, Envelope, Handshake, Kind

ENVELOPES: list[Envelope] = [
    Handshake("server", 0),
    Handshake("server", 7, PROTOCOL_VERSION, b"\x01" * 16, b"\x02" * 32),
    Handshake("client", None, 3, b"", b"nonce"),
    Data(0, 0, None, b""),
    Data(3, 41, None, b"payload"),
    Data(0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, None, b"\x00" * 1000),
    Data(1, 2, 0, b"x"),
    Data(1, 2, 12345, b"x"),
    Data(1, 2, -5, b"x"),
    Data(1, 2, 2**64 - 1, b"x"),
    Data(1, 2, -(2**64), b"x"),
    Data(1, 2, b"", b"x"),
    Data(1, 2, b"round-7/mul", b"\xff" * 70000),
    Ack(0, 0),
    Ack(5, 0xFFFFFFFFFFFFFFFF),
    Close(),
    Close("shutting down \u2603"),
]


def frame(body: bytes) -> bytes:
    """Put a length header in front of an arbitrary body."""
    return len(body).to_bytes(HEADER_SIZE, "big") + body


def decode_all(data: bytes, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> list[Envelope]:
    decoder = FrameDecoder(max_frame_size)
    envelopes = [envelope for envelope, _ in decoder.feed(data)]
    decoder.eof()
    return envelopes


def assert_framing_error(body: bytes) -> None:
    """`body` framed and fed must raise FramingError (and nothing else); so must decode_body."""
    with pytest.raises(errors.FramingError):
        FrameDecoder().feed(frame(body))
    with pytest.raises(errors.FramingError):
        decode_body(body)


# -- round trips ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("envelope", ENVELOPES, ids=repr)
def test_round_trip(envelope: Envelope) -> None:
    data = encode(envelope)
    assert int.from_bytes(data[:HEADER_SIZE], "big") == len(data) - HEADER_SIZE
    [(decoded, size)] = FrameDecoder().feed(data)
    assert decoded == envelope
    assert type(decoded) is type(envelope)
    assert size == len(data)
    assert decode_body(data[HEADER_SIZE:]) == envelope


@pytest.mark.parametrize("tag", [None, 0, 7, -1, b"", b"tag"])
def test_data_payload_and_tag_types(tag: int | bytes | None) -> None:
    [(decoded, _)] = FrameDecoder().feed(encode(Data(2, 9, tag, b"abc")))
    assert isinstance(decoded, Data)
    assert type(decoded.payload) is bytes
    assert decoded.tag == tag
    assert type(decoded.tag) is type(tag)


@pytest.mark.parametrize("payload", [b"abc", bytearray(b"abc"), memoryview(b"xabcx")[1:4]], ids=type)
def test_encode_data_accepts_bytes_like(payload: bytes | bytearray | memoryview) -> None:
    data = encode_data(4, 5, b"t", payload)
    assert data == encode(Data(4, 5, b"t", b"abc"))
    [(decoded, _)] = FrameDecoder().feed(data)
    assert decoded == Data(4, 5, b"t", b"abc")
    assert isinstance(decoded, Data)
    assert type(decoded.payload) is bytes


def test_encode_refuses_a_non_envelope() -> None:
    with pytest.raises(TypeError):
        encode("not an envelope")  # type: ignore[arg-type]


def test_framing_error_is_a_connection_error() -> None:
    assert issubclass(errors.FramingError, errors.ConnectionError)
    assert issubclass(errors.FramingError, errors.StoffelnetError)


# -- chunking and decoder state ------------------------------------------------------------------------------
def test_one_call_and_many_calls_agree() -> None:
    stream = b"".join(encode(e) for e in ENVELOPES)
    whole = FrameDecoder()
    at_once = whole.feed(stream)
    assert [e for e, _ in at_once] == ENVELOPES
    assert [size for _, size in at_once] == [len(encode(e)) for e in ENVELOPES]
    assert whole.buffered == 0

    piecewise = FrameDecoder()
    byte_by_byte: list[tuple[Envelope, int]] = []
    for i in range(len(stream)):
        byte_by_byte += piecewise.feed(stream[i : i + 1])
    assert byte_by_byte == at_once
    assert piecewise.buffered == 0
    whole.eof()
    piecewise.eof()


def test_partial_frame_is_held_until_complete() -> None:
    first, second = encode(Close("a")), encode(Data(1, 1, None, b"0123456789"))
    decoder = FrameDecoder()
    assert decoder.feed(first + second[:-1]) == [(Close("a"), len(first))]
    assert decoder.buffered == len(second) - 1
    assert decoder.feed(b"") == []
    assert decoder.feed(second[-1:]) == [(Data(1, 1, None, b"0123456789"), len(second))]
    assert decoder.buffered == 0


def test_frames_after_a_partial_header() -> None:
    frames = [encode(Ack(1, n)) for n in range(5)]
    stream = b"".join(frames)
    decoder = FrameDecoder()
    assert decoder.feed(stream[:2]) == []
    got = decoder.feed(stream[2:])
    assert [e for e, _ in got] == [Ack(1, n) for n in range(5)]


def test_memoryview_and_bytearray_input_are_copied() -> None:
    first, second = encode(Close("first")), encode(Data(0, 1, b"t", b"second payload"))
    backing = bytearray(first + second[:10])
    decoder = FrameDecoder()
    got = decoder.feed(memoryview(backing))
    assert got == [(Close("first"), len(first))]
    backing[:] = b"\xee" * len(backing)  # the decoder must not have kept a view of the caller's buffer
    rest = bytearray(second[10:])
    got = decoder.feed(memoryview(rest))
    rest[:] = b"\xee" * len(rest)
    assert got == [(Data(0, 1, b"t", b"second payload"), len(second))]
    assert type(got[0][0].payload) is bytes  # type: ignore[union-attr]


def test_memoryview_slice_input() -> None:
    data = b"junk" + encode(Ack(2, 3)) + b"junk"
    assert FrameDecoder().feed(memoryview(data)[4:-4]) == [(Ack(2, 3), len(data) - 8)]


# -- limits and truncation -----------------------------------------------------------------------------------
def test_default_max_frame_size_is_the_seeds() -> None:
    assert DEFAULT_MAX_FRAME_SIZE == 100 * 1024 * 1024
    assert FrameDecoder().max_frame_size == DEFAULT_MAX_FRAME_SIZE


@pytest.mark.parametrize("bad", [0, -1, 2**32])
def test_max_frame_size_must_be_sane(bad: int) -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        FrameDecoder(bad)


def test_frame_of_exactly_the_maximum_is_accepted() -> None:
    data = encode(Close("x" * 50))
    decoder = FrameDecoder(max_frame_size=len(data) - HEADER_SIZE)
    assert decoder.feed(data) == [(Close("x" * 50), len(data))]


def test_oversized_length_is_refused_at_the_header() -> None:
    decoder = FrameDecoder(max_frame_size=1000)
    with pytest.raises(errors.FramingError, match="1001"):
        decoder.feed((1001).to_bytes(4, "big"))  # only the header: no body bytes needed to refuse it
    assert decoder.buffered <= HEADER_SIZE


def test_oversized_length_is_refused_when_the_header_arrives_in_pieces() -> None:
    decoder = FrameDecoder(max_frame_size=1000)
    header = (1001).to_bytes(4, "big")
    for i in range(3):
        assert decoder.feed(header[i : i + 1]) == []
    with pytest.raises(errors.FramingError):
        decoder.feed(header[3:])
    assert decoder.buffered <= HEADER_SIZE


def test_oversized_length_after_good_frames() -> None:
    decoder = FrameDecoder(max_frame_size=1000)
    with pytest.raises(errors.FramingError):
        decoder.feed(encode(Ack(0, 0)) + (0xFFFFFFFF).to_bytes(4, "big") + b"\x00" * 10)


def test_default_decoder_refuses_a_4_gib_header() -> None:
    decoder = FrameDecoder()
    with pytest.raises(errors.FramingError):
        decoder.feed(b"\xff\xff\xff\xff")
    assert decoder.buffered <= HEADER_SIZE


@pytest.mark.parametrize("cut", [1, 3, 4, 5, -1])
def test_truncated_frame_then_eof(cut: int) -> None:
    data = encode(Data(1, 2, None, b"some payload"))
    decoder = FrameDecoder()
    assert decoder.feed(data[:cut]) == []
    with pytest.raises(errors.FramingError):
        decoder.eof()


def test_eof_at_a_frame_boundary_is_clean() -> None:
    decoder = FrameDecoder()
    decoder.eof()
    decoder.feed(encode(Close()))
    decoder.eof()


# -- malformed bodies ----------------------------------------------------------------------------------------
MALFORMED: dict[str, bytes] = {
    "empty body": b"",
    "break code": b"\xff",
    "reserved additional info": b"\x1c",
    "truncated cbor": cbor2.dumps([1, 0, 0, None, b"abcdef"])[:-3],
    "undefined": b"\xf7",
    "bad utf8": b"\x82\x03\x61\xff",
    # not an array
    "int body": cbor2.dumps(1),
    "null body": cbor2.dumps(None),
    "bytes body": cbor2.dumps(b"\x01\x00"),
    "str body": cbor2.dumps("data"),
    "map body": cbor2.dumps({0: 1, 1: 2}),
    "empty array": cbor2.dumps([]),
    # unknown kinds
    "kind 4": cbor2.dumps([4, "x"]),
    "kind 99": cbor2.dumps([99, 0, 0, None, b""]),
    "kind -1": cbor2.dumps([-1, 0, 0]),
    "kind str": cbor2.dumps(["data", 0, 0, None, b""]),
    "kind float": cbor2.dumps([1.0, 0, 0, None, b""]),
    "kind bool": cbor2.dumps([True, 0, 0, None, b""]),
    "kind null": cbor2.dumps([None, 0, 0, None, b""]),
    "kind list": cbor2.dumps([[1], 0, 0, None, b""]),
    # wrong arity
    "data 4 fields": cbor2.dumps([1, 0, 0, None]),
    "data 6 fields": cbor2.dumps([1, 0, 0, None, b"", 0]),
    "handshake 5 fields": cbor2.dumps([0, "server", 0, 1, b""]),
    "handshake 7 fields": cbor2.dumps([0, "server", 0, 1, b"", b"", 0]),
    "ack 2 fields": cbor2.dumps([2, 0]),
    "ack 4 fields": cbor2.dumps([2, 0, 0, 0]),
    "close 1 field": cbor2.dumps([3]),
    "close 3 fields": cbor2.dumps([3, "x", "y"]),
    "kind only": cbor2.dumps([1]),
    # wrong field types and ranges
    "data stream str": cbor2.dumps([1, "0", 0, None, b""]),
    "data stream negative": cbor2.dumps([1, -1, 0, None, b""]),
    "data stream float": cbor2.dumps([1, 0.0, 0, None, b""]),
    "data stream bool": cbor2.dumps([1, False, 0, None, b""]),
    "data stream over u32": cbor2.dumps([1, 2**32, 0, None, b""]),
    "data seq negative": cbor2.dumps([1, 0, -1, None, b""]),
    "data seq float": cbor2.dumps([1, 0, 1.5, None, b""]),
    "data seq nan": cbor2.dumps([1, 0, float("nan"), None, b""]),
    "data seq null": cbor2.dumps([1, 0, None, None, b""]),
    "data seq over u64": cbor2.dumps([1, 0, 2**64, None, b""]),
    "data tag str": cbor2.dumps([1, 0, 0, "tag", b""]),
    "data tag float": cbor2.dumps([1, 0, 0, 1.0, b""]),
    "data tag bool": cbor2.dumps([1, 0, 0, True, b""]),
    "data tag list": cbor2.dumps([1, 0, 0, [1], b""]),
    "data tag map": cbor2.dumps([1, 0, 0, {}, b""]),
    "data tag over 64 bits": cbor2.dumps([1, 0, 0, 2**64, b""]),
    "data tag under -(2**64)": cbor2.dumps([1, 0, 0, -(2**64) - 1, b""]),
    "data tag bignum": cbor2.dumps([1, 0, 0, 10**5000, b""]),
    "data payload str": cbor2.dumps([1, 0, 0, None, "payload"]),
    "data payload null": cbor2.dumps([1, 0, 0, None, None]),
    "data payload int": cbor2.dumps([1, 0, 0, None, 5]),
    "data payload list": cbor2.dumps([1, 0, 0, None, [b"a"]]),
    "handshake role int": cbor2.dumps([0, 1, 0, 1, b"", b""]),
    "handshake role bytes": cbor2.dumps([0, b"server", 0, 1, b"", b""]),
    "handshake id str": cbor2.dumps([0, "server", "0", 1, b"", b""]),
    "handshake id negative": cbor2.dumps([0, "server", -1, 1, b"", b""]),
    "handshake id float": cbor2.dumps([0, "server", 0.0, 1, b"", b""]),
    "handshake version null": cbor2.dumps([0, "server", 0, None, b"", b""]),
    "handshake version negative": cbor2.dumps([0, "server", 0, -1, b"", b""]),
    "handshake session str": cbor2.dumps([0, "server", 0, 1, "", b""]),
    "handshake nonce null": cbor2.dumps([0, "server", 0, 1, b"", None]),
    "ack stream negative": cbor2.dumps([2, -3, 0]),
    "ack seq float": cbor2.dumps([2, 0, 0.5]),
    "ack seq str": cbor2.dumps([2, 0, "1"]),
    "close reason bytes": cbor2.dumps([3, b"bye"]),
    "close reason null": cbor2.dumps([3, None]),
    "close reason int": cbor2.dumps([3, 0]),
    # nesting
    "array nested 10000 deep": b"\x81" * 10000 + b"\x00",
    "map nested 10000 deep": b"\xa1\x00" * 10000 + b"\x00",
    "field nested 10000 deep": b"\x85\x01" + b"\x81" * 10000 + b"\x00" + b"\x00\xf6\x40",
    "kind nested 300 deep": b"\x85" + b"\x81" * 300 + b"\x01" + b"\x00\x00\xf6\x40",
    "indefinite array nested deep": b"\x9f" * 10000 + b"\xff" * 10000,
    "tag nested 10000 deep": b"\xd9\x03\xe7" * 10000 + b"\x00",
    # semantic tags
    "unknown tag around envelope": cbor2.dumps(cbor2.CBORTag(999, [3, "x"])),
    "unknown tag as kind": cbor2.dumps([cbor2.CBORTag(999, 1), 0, 0, None, b""]),
    "unknown tag as stream": cbor2.dumps([1, cbor2.CBORTag(999, 0), 0, None, b""]),
    "unknown tag as payload": cbor2.dumps([1, 0, 0, None, cbor2.CBORTag(999, b"")]),
    "unknown tag as tag": cbor2.dumps([1, 0, 0, cbor2.CBORTag(999, 0), b""]),
    "datetime tag with bad string": b"\x85\x01\x00\x00\xf6\xc0\x63abc",
    "epoch tag with string": b"\x85\x01\x00\x00\xf6\xc1\x63abc",
    "decimal fraction with huge exponent": b"\xc4\x82\x1b\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    "bigfloat with huge exponent": b"\xc5\x82\x3b\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    "bignum tag with str": b"\xc2\x63abc",
    "regex tag with bad pattern": b"\xd8\x23\x62(\xff",
    "uuid tag with short bytes": b"\xd8\x25\x41\x00",
    "ipaddress tag with 3 bytes": b"\xd9\x01\x04\x43\x01\x02\x03",
    "set tag with unhashable": b"\xd9\x01\x02\x81\x80",
    "map with unhashable key": b"\xa1\x80\x00",
    "shared reference to nothing": b"\x82\x03\xd8\x1d\x05",
    "self referencing envelope": b"\xd8\x1c\x82\x03\xd8\x1d\x00",
    "string reference outside namespace": b"\x82\x03\xd8\x19\x00",
    "set as envelope": cbor2.dumps({1, 2}),
    # huge declared sizes inside a small frame: nothing may be allocated for them
    "array of 2**40 items": b"\x9b" + (2**40).to_bytes(8, "big"),
    "bytes of 2**40": b"\x5b" + (2**40).to_bytes(8, "big"),
    "map of 2**40 pairs": b"\xbb" + (2**40).to_bytes(8, "big"),
    "payload of 2**62 bytes": b"\x85\x01\x00\x00\xf6\x5b" + (2**62).to_bytes(8, "big"),
    # bignums where a small integer belongs (their repr is refused by Python's int/str limit)
    "bignum kind": cbor2.dumps([10**5000, 0, 0, None, b""]),
    "bignum stream": cbor2.dumps([1, 10**5000, 0, None, b""]),
    "negative bignum seq": cbor2.dumps([1, 0, -(10**5000), None, b""]),
    "bignum handshake id": cbor2.dumps([0, "server", 10**5000, 1, b"", b""]),
    "bignum ack seq": cbor2.dumps([2, 0, 2**20000]),
    "bignum close reason": cbor2.dumps([3, 10**5000]),
    # a frame is exactly one envelope
    "trailing byte after envelope": cbor2.dumps([3, "x"]) + b"\x00",
    "two envelopes in one frame": cbor2.dumps([2, 0, 0]) + cbor2.dumps([2, 0, 1]),
    "data then trailing byte": cbor2.dumps([1, 0, 0, None, b"abc"]) + b"\x00",
    "data then another data": cbor2.dumps([1, 0, 0, None, b""]) * 2,
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_body_raises_only_framing_error(body: bytes) -> None:
    assert_framing_error(body)


def test_malformed_frame_after_good_frames_raises() -> None:
    decoder = FrameDecoder()
    with pytest.raises(errors.FramingError):
        decoder.feed(encode(Ack(0, 0)) + encode(Close()) + frame(b"\xff"))


def test_unknown_kind_message_names_the_kind() -> None:
    with pytest.raises(errors.FramingError, match="kind"):
        decode_body(cbor2.dumps([int(max(Kind)) + 1, 0]))


def test_wrong_field_message_names_the_field() -> None:
    with pytest.raises(errors.FramingError, match="seq"):
        decode_body(cbor2.dumps([1, 0, -1, None, b""]))


def test_malformed_cbor_keeps_the_cause() -> None:
    with pytest.raises(errors.FramingError) as info:
        decode_body(b"\xff")
    assert info.value.__cause__ is not None


def test_bignum_tags_are_refused() -> None:
    # Int tags are CBOR's native integers (-2**64 .. 2**64-1); a bignum tag is a protocol error, not a tag.
    with pytest.raises(errors.FramingError, match="tag"):
        FrameDecoder().feed(encode(Data(0, 0, 2**200, b"")))
    with pytest.raises(ValueError, match="tag"):
        check_tag(2**64)
    check_tag(2**64 - 1)
    check_tag(-(2**64))


def test_header_is_big_endian_u32() -> None:
    data = encode(Data(0, 0, None, b"\x00" * 300))
    (length,) = struct.unpack(">I", data[:4])
    assert length == len(data) - 4
