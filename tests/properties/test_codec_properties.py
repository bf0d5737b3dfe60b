"""Properties of the frame codec: any chunking round-trips; any bad input raises only `FramingError`."""

from __future__ import annotations

import itertools
from typing import Any

import cbor2
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from stoffelnet_core import errors
from stoffelnet_core.codec import HEADER_SIZE, FrameDecoder, decode_body, encode
from stoffelnet_core.frames import Ack, Close, Data, Envelope, Handshake

# No explain phase: on a failure it imports libcst, whose DeprecationWarning `filterwarnings = error` turns into an
# INTERNALERROR that hides the falsifying example.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
SETTINGS = settings(max_examples=200, deadline=None, phases=PHASES, suppress_health_check=[HealthCheck.too_slow])

u32 = st.integers(min_value=0, max_value=2**32 - 1)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
tags = st.none() | st.integers(min_value=-(2**64), max_value=2**64 - 1) | st.binary(max_size=40)

envelopes: st.SearchStrategy[Envelope] = st.one_of(
    st.builds(
        Handshake,
        role=st.sampled_from(["server", "client"]) | st.text(max_size=20),
        id=st.none() | u32,
        version=u32,
        session_id=st.binary(max_size=32),
        nonce=st.binary(max_size=64),
    ),
    st.builds(Data, stream=u32, seq=u64, tag=tags, payload=st.binary(max_size=3000)),
    st.builds(Ack, stream=u32, seq=u64),
    st.builds(Close, reason=st.text(max_size=60)),
)

# Any CBOR-encodable value, semantic tags included, to reach every decoding path of cbor2 and the codec.
cbor_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.binary(max_size=20)
    | st.text(max_size=20)
)
cbor_values: st.SearchStrategy[Any] = st.recursive(
    cbor_leaves,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.integers() | st.text(max_size=5), children, max_size=4)
        | st.builds(cbor2.CBORTag, st.integers(min_value=0, max_value=2**64 - 1), children)
        | st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 258, 260]), children)
    ),
    max_leaves=20,
)
# Envelope-shaped arrays: a known kind first, then fields of any type, so the field checks are reached.
envelope_shaped = st.builds(
    lambda kind, fields: [kind, *fields],
    st.sampled_from([0, 1, 2, 3]),
    st.lists(cbor_values, max_size=6),
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def feed_all(chunks: list[bytes], *, max_frame_size: int = 1 << 20) -> list[tuple[Envelope, int]]:
    decoder = FrameDecoder(max_frame_size)
    out: list[tuple[Envelope, int]] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    decoder.eof()
    assert decoder.buffered == 0
    return out


def feed_expecting_only_framing_errors(chunks: list[bytes], *, max_frame_size: int = 1 << 20) -> None:
    """Feed `chunks`; success or `FramingError` are fine, anything else propagates and fails the test."""
    decoder = FrameDecoder(max_frame_size)
    try:
        for chunk in chunks:
            for envelope, size in decoder.feed(chunk):
                assert isinstance(envelope, Handshake | Data | Ack | Close)
                assert size >= HEADER_SIZE
        decoder.eof()
    except errors.FramingError:
        pass


@SETTINGS
@given(envelopes)
def test_round_trip(envelope: Envelope) -> None:
    data = encode(envelope)
    [(decoded, size)] = FrameDecoder().feed(data)
    assert decoded == envelope
    assert size == len(data)
    if isinstance(decoded, Data):
        assert type(decoded.payload) is bytes


@SETTINGS
@given(st.lists(envelopes, max_size=20), st.lists(st.integers(min_value=0), max_size=40))
def test_any_chunking_round_trips(items: list[Envelope], cuts: list[int]) -> None:
    stream = b"".join(encode(e) for e in items)
    got = feed_all(chunked(stream, cuts))
    assert [e for e, _ in got] == items
    assert [size for _, size in got] == [len(encode(e)) for e in items]


@settings(max_examples=50, deadline=None, phases=PHASES)
@given(st.lists(envelopes, max_size=6))
def test_byte_by_byte_round_trips(items: list[Envelope]) -> None:
    stream = b"".join(encode(e) for e in items)
    got = feed_all([stream[i : i + 1] for i in range(len(stream))])
    assert [e for e, _ in got] == items


@SETTINGS
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0), max_size=10))
def test_random_bytes_raise_only_framing_error(data: bytes, cuts: list[int]) -> None:
    feed_expecting_only_framing_errors(chunked(data, cuts))


@SETTINGS
@given(st.binary(max_size=2000))
def test_random_bodies_raise_only_framing_error(body: bytes) -> None:
    feed_expecting_only_framing_errors([len(body).to_bytes(4, "big") + body])


@SETTINGS
@given(cbor_values | envelope_shaped)
def test_any_cbor_value_decodes_or_raises_framing_error(value: Any) -> None:
    body = cbor2.dumps(value)
    feed_expecting_only_framing_errors([len(body).to_bytes(4, "big") + body])
    try:
        decode_body(body)
    except errors.FramingError:
        pass


mutations = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "insert", "delete"]), st.integers(min_value=0), st.integers(0, 255)),
    min_size=1,
    max_size=8,
)


def mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, where, value in edits:
        i = where % (len(buf) + 1)
        if op == "insert":
            buf[i:i] = bytes([value])
        elif buf and i < len(buf):
            if op == "flip":
                buf[i] ^= 1 << (value % 8)
            elif op == "set":
                buf[i] = value
            else:
                del buf[i]
    return bytes(buf)


@SETTINGS
@given(st.lists(envelopes, min_size=1, max_size=5), mutations, st.lists(st.integers(min_value=0), max_size=10))
def test_mutated_streams_raise_only_framing_error(
    items: list[Envelope], edits: list[tuple[str, int, int]], cuts: list[int]
) -> None:
    stream = mutate(b"".join(encode(e) for e in items), edits)
    feed_expecting_only_framing_errors(chunked(stream, cuts))


@SETTINGS
@given(envelopes, mutations)
def test_mutated_bodies_with_consistent_length_raise_only_framing_error(
    envelope: Envelope, edits: list[tuple[str, int, int]]
) -> None:
    # Keep the header consistent with the mutated body so the CBOR and field checks, not the length, see it.
    body = mutate(encode(envelope)[HEADER_SIZE:], edits)
    feed_expecting_only_framing_errors([len(body).to_bytes(4, "big") + body])


@SETTINGS
@given(st.lists(envelopes, max_size=8), st.integers(min_value=1, max_value=200))
def test_oversized_frames_are_refused_before_their_body(items: list[Envelope], limit: int) -> None:
    stream = b"".join(encode(e) for e in items)
    decoder = FrameDecoder(limit)
    pos = 0
    for e in items:
        size = len(encode(e))
        if size - HEADER_SIZE > limit:
            try:
                decoder.feed(stream[pos : pos + HEADER_SIZE])
            except errors.FramingError:
                assert decoder.buffered <= HEADER_SIZE
                return
            raise AssertionError(f"a {size - HEADER_SIZE}-byte frame passed a limit of {limit}")
        assert [got for got, _ in decoder.feed(stream[pos : pos + size])] == [e]
        pos += size
