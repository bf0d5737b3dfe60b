"""The per-message fast paths against the general ones they shortcut: each must give exactly the same result.

- `codec.data_head` + payload is `encode_data`'s frame (and cbor2's bytes);
- `codec.read_messages` accepts exactly what `FrameDecoder.feed` decodes as in-order Data of one stream, or None;
- `Session.receive_whole` returns what `receive_data` would, with the same state after, or None and changes nothing;
- `Multiplexer.receive_whole` accounts credit as `receive_data` does; `send_frame`'s coalescing keeps every byte in
  order whatever the credit;
- `Inbox.push_untagged` is a run of `push`es.
"""

from __future__ import annotations

import random

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stoffelnet_core import codec, errors, identity, mux
from stoffelnet_core.frames import Data
from stoffelnet_core.ids import ClientType
from stoffelnet_core.inbox import Inbox
from stoffelnet_core.session import MessageReceived, Session, SessionState, channel_for
from stoffelnet_core.transport import LinkInfo

TRUSTED = LinkInfo("test", trusted=True)


def open_pair() -> tuple[Session, Session]:
    """Party 0 (the dialer) and party 1, handshake done."""

    def verify(expect: identity.Expectation) -> object:
        return lambda handshake, proven=None: identity.verify_peer(handshake, TRUSTED, expect)

    def party(me: int, dialer: bool, expect: identity.Expectation) -> Session:
        check: object = verify(expect)
        return Session(role=ClientType.SERVER, local_id=me, dialer=dialer, verify=check, session_id=b"S%d" % me)  # type: ignore[arg-type]

    dialer = party(0, True, identity.Expectation(3, party=1))
    acceptor = party(1, False, identity.Expectation(3, accept_parties_below=1))
    dialer.initiate()
    for src, dst in ((dialer, acceptor), (acceptor, dialer)):
        for channel, frame in src.data_to_send():
            dst.receive_data(channel, frame)
    assert dialer.state is acceptor.state is SessionState.OPEN
    return dialer, acceptor


NUMBERS = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
TAGS: list[int | bytes | None] = [None, 0, 23, 24, 255, 256, 2**32 - 1, 2**32, 2**64 - 1, -1, -(2**64), b"", b"t"]


@pytest.mark.parametrize("stream", [0, 5, 23, 24, 300, 2**32 - 1])
def test_data_head_is_the_frame_cbor2_writes(stream: int) -> None:
    for seq in NUMBERS:
        for tag in TAGS:
            for size in (0, 23, 24, 255, 256, 65535, 65536):
                payload = b"\x07" * size
                body = cbor2.dumps([1, stream, seq, tag, payload])
                expected = len(body).to_bytes(4, "big") + body
                assert codec.data_head(stream, seq, tag, size) + payload == expected
                assert codec.encode_data(stream, seq, tag, payload) == expected


def frames_of(stream: int, first: int, items: list[tuple[int | bytes | None, bytes]]) -> bytes:
    return b"".join(codec.encode_data(stream, first + i, tag, p) for i, (tag, p) in enumerate(items))


def general(data: bytes, stream: int, seq: int) -> list[tuple[MessageReceived, int]]:
    """What the general decoder makes of `data`, as far as it is a run of in-order Data frames of `stream`: each
    message with where its frame ends (nothing once a frame is refused, cut, or anything else)."""
    decoder = codec.FrameDecoder()
    out: list[tuple[MessageReceived, int]] = []
    end = 0
    for i in range(len(data)):  # frame by frame: a refusal further on must not hide the run before it
        try:
            frames = decoder.feed(data[i : i + 1])
        except errors.FramingError:
            return out
        for envelope, size in frames:
            if type(envelope) is not Data or envelope.stream != stream or envelope.seq != seq + len(out):
                return out
            end += size
            out.append((MessageReceived(stream, envelope.seq, envelope.tag, envelope.payload, size), end))
    return out


small_tags = st.none() | st.integers(min_value=0, max_value=30) | st.sampled_from([2**32, -1, b"x"])
items = st.lists(st.tuples(small_tags, st.binary(max_size=300)), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=30),
    st.sampled_from([0, 20, 250, 65530, 2**32 - 3]),
    items,
    st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=3),
    st.integers(min_value=0),
)
def test_read_messages_takes_a_prefix_of_what_the_decoder_gives(
    stream: int, first: int, msgs: list[tuple[int | bytes | None, bytes]], mutations: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(frames_of(stream, first, msgs))
    for at, value in mutations:
        data[at % len(data)] = value
    blob = bytes(data[: cut % (len(data) + 1)])
    got, stop = codec.read_messages(
        memoryview(blob), 0, len(blob), stream, first, codec.DEFAULT_MAX_FRAME_SIZE, MessageReceived
    )
    # the fast path may stop early (a big tag, a short tail), never take more or differ
    expected = general(blob, stream, first)
    assert len(got) <= len(expected)
    assert got == [m for m, _ in expected[: len(got)]]
    assert stop == (expected[len(got) - 1][1] if got else 0)
    assert all(type(m) is MessageReceived and type(m.payload) is bytes for m in got)


def test_read_messages_stops_at_another_stream_a_gap_and_a_cut() -> None:
    one, two = codec.encode_data(2, 7, None, b"a" * 20), codec.encode_data(2, 8, None, b"bb" * 20)
    data = one + two
    view = memoryview(data)
    limit = codec.DEFAULT_MAX_FRAME_SIZE
    both = [MessageReceived(2, 7, None, b"a" * 20, len(one)), MessageReceived(2, 8, None, b"bb" * 20, len(two))]
    assert codec.read_messages(view, 0, len(data), 2, 7, limit, MessageReceived) == (both, len(data))
    assert codec.read_messages(view, 0, len(data), 3, 7, limit, MessageReceived) == ([], 0)  # another stream
    assert codec.read_messages(view, 0, len(data), 2, 8, limit, MessageReceived) == ([], 0)  # not the next number
    assert codec.read_messages(view, 0, len(data) - 1, 2, 7, limit, MessageReceived) == (both[:1], len(one))  # cut
    assert codec.read_messages(view, 0, len(data), 2, 7, 5, MessageReceived) == ([], 0)  # over the frame limit


def session_state(s: Session, channel: int) -> tuple[object, ...]:
    ch = s._channels[channel]
    assert s.ledger is not None
    rx = ch.rx
    return (ch.held, ch.pending, ch.partial_returned, ch.link_next, rx and rx.next, s.ledger.ack_due, s.state)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=0, max_value=3),
    st.lists(st.lists(st.tuples(small_tags, st.binary(max_size=200)), min_size=1, max_size=5), min_size=1, max_size=5),
    st.lists(st.integers(min_value=0), max_size=4),
)
def test_session_receive_whole_is_receive_data(
    stream: int, batches: list[list[tuple[int | bytes | None, bytes]]], cuts: list[int]
) -> None:
    fast_tx, fast_rx = open_pair()
    slow_tx, slow_rx = open_pair()
    channel = channel_for(stream)
    for batch in batches:
        wire = b"".join(fast_tx.send_data(stream, p, tag) for tag, p in batch)
        assert wire == b"".join(slow_tx.send_data(stream, p, tag) for tag, p in batch)
        points = sorted({c % (len(wire) + 1) for c in cuts})
        for a, b in zip([0, *points], [*points, len(wire)], strict=True):
            piece = wire[a:b]
            if not piece:
                continue
            expected = slow_rx.receive_data(channel, piece)  # bytes: the general path only
            taken = (
                fast_rx.receive_whole(channel, memoryview(piece), 0, len(piece))
                if channel in fast_rx._channels
                else None
            )
            if taken is None:
                assert fast_rx.receive_data(channel, memoryview(piece)) == expected  # its fast prefix, then the rest
            else:
                assert taken == expected
            assert session_state(fast_rx, channel) == session_state(slow_rx, channel)
            for event in expected:
                if isinstance(event, MessageReceived):
                    assert fast_rx.consumed(channel, event.credit) == slow_rx.consumed(channel, event.credit)


def test_session_receive_whole_declines_what_it_does_not_cover() -> None:
    dialer, acceptor = open_pair()
    channel = channel_for(0)
    first = dialer.send_data(0, b"first" * 5)
    view = memoryview(first)
    assert acceptor.receive_whole(channel, view, 0, len(first)) is None  # a channel's first bytes: general path
    acceptor.receive_data(channel, first)
    second = dialer.send_data(0, b"second" * 5)
    before = session_state(acceptor, channel)
    assert acceptor.receive_whole(channel, memoryview(second), 0, len(second) - 1) is None  # a cut frame
    assert acceptor.receive_whole(channel, memoryview(first), 0, len(first)) is None  # an old number (a resend)
    assert session_state(acceptor, channel) == before
    assert acceptor.receive_whole(channel, memoryview(second), 0, len(second)) == [
        MessageReceived(0, 1, None, b"second" * 5, len(second))
    ]


def received(events: list[mux.Event]) -> list[tuple[int, bytes]]:
    return [(e.stream, bytes(e.data)) for e in events if isinstance(e, mux.StreamDataReceived)]


def per_stream(pieces: list[tuple[int, bytes]]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for stream, data in pieces:
        out[stream] = out.get(stream, b"") + data
    return out


def test_mux_receive_whole_accounts_like_receive_data() -> None:
    """Two receivers of the same wire, one taking whole frames first (refusing some at random): the same bytes
    per stream, the same credit accounting, the same window updates."""
    rng = random.Random(5)
    sender, fast, slow = mux.Multiplexer(), mux.Multiplexer(), mux.Multiplexer()
    for _ in range(300):
        sender.send(rng.choice([1, 2, 3]), bytes(rng.randrange(256) for _ in range(rng.randrange(1, 700))))
        if rng.random() < 0.7:
            continue
        wire = b"".join(bytes(c) for c in sender.data_to_send())
        cut = rng.randrange(len(wire) + 1)
        for piece in (wire[:cut], wire[cut:]):
            view = memoryview(piece)
            offered: list[tuple[int, bytes]] = []

            def take(
                stream: int, data: memoryview, start: int, end: int, offered: list[tuple[int, bytes]] = offered
            ) -> list[int] | None:
                if rng.random() < 0.3:
                    return None
                offered.append((stream, bytes(data[start:end])))
                return [stream]

            consumed, taken = fast.receive_whole(view, take)
            assert taken == [stream for stream, _ in offered]
            rest = received(fast.receive_data(view[consumed:]))
            assert per_stream(offered + rest) == per_stream(received(slow.receive_data(piece)))
            for stream in (1, 2, 3):
                n = slow.buffered(stream)
                assert fast.buffered(stream) == n
                assert fast.acknowledge(stream, n) == slow.acknowledge(stream, n)
        grants = b"".join(bytes(c) for c in slow.data_to_send())
        assert b"".join(bytes(c) for c in fast.data_to_send()) == grants
        sender.receive_data(grants)


def test_send_frame_coalescing_keeps_every_byte_in_order_under_any_credit() -> None:
    rng = random.Random(11)
    a, b = mux.Multiplexer(), mux.Multiplexer()
    expected: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
    got: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
    for step in range(400):
        stream = rng.choice([1, 2])
        head = bytes([step % 256]) * rng.randrange(1, 12)
        payload = bytes([(step * 7) % 256]) * rng.choice([0, 5, 300, 20_000, 70_000])
        if rng.random() < 0.2:
            a.send(stream, head + payload)
        else:
            a.send_frame(stream, head, payload)
        expected[stream] += head + payload
        if rng.random() < 0.2:
            chunks = a.data_to_send()
            for event in b.receive_data(b"".join(bytes(c) for c in chunks)):
                if isinstance(event, mux.StreamDataReceived):
                    got[event.stream] += event.data
                    b.acknowledge(event.stream, len(event.data))
            a.receive_data(b"".join(bytes(c) for c in b.data_to_send()))
    while a.wants_write:
        chunks = a.data_to_send()
        if not chunks:
            break
        for event in b.receive_data(b"".join(bytes(c) for c in chunks)):
            if isinstance(event, mux.StreamDataReceived):
                got[event.stream] += event.data
                b.acknowledge(event.stream, len(event.data))
        a.receive_data(b"".join(bytes(c) for c in b.data_to_send()))
    assert got == expected


def test_push_untagged_is_a_run_of_pushes() -> None:
    rng = random.Random(3)
    runs: Inbox[str] = Inbox()
    singles: Inbox[str] = Inbox()
    counter = 0
    for _ in range(3000):
        sender, stream = rng.randrange(3), rng.randrange(2)
        r = rng.random()
        if r < 0.4:
            batch = [f"m{counter + i}" for i in range(rng.randrange(0, 6))]
            counter += len(batch)
            runs.push_untagged(sender, stream, batch)
            for item in batch:
                singles.push(sender, stream, None, item)
        elif r < 0.7:
            assert runs.pop_any(stream) == singles.pop_any(stream)
        else:
            assert runs.pop_from(sender, stream) == singles.pop_from(sender, stream)
        assert runs.count(sender, stream) == singles.count(sender, stream)
    for stream in range(2):
        while (got := singles.pop_any(stream)) is not None:
            assert runs.pop_any(stream) == got
        assert runs.pop_any(stream) is None
