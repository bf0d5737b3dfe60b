"""The stream multiplexer: two `Multiplexer`s wired by hand, the test moving (and chunking) the bytes."""

from __future__ import annotations

from collections import defaultdict

import pytest

from stoffelnet_core import errors, mux
from stoffelnet_core.flow import DEFAULT_WINDOW, MAX_WINDOW
from stoffelnet_core.mux import DATA, HEADER, WINDOW_UPDATE, CreditAvailable, Multiplexer, StreamDataReceived

QUARTER = DEFAULT_WINDOW // 4


def wire(m: Multiplexer) -> bytes:
    """Everything `m` can write now, as one byte string."""
    return b"".join(bytes(c) for c in m.data_to_send())


def pump(a: Multiplexer, b: Multiplexer) -> list[mux.Event]:
    """Move what `a` can send into `b`; return `b`'s events."""
    data = wire(a)
    return b.receive_data(data) if data else []


def received(events: list[mux.Event]) -> dict[int, bytes]:
    """Concatenated data per stream from a list of events."""
    out: dict[int, bytearray] = defaultdict(bytearray)
    for event in events:
        if isinstance(event, StreamDataReceived):
            out[event.stream] += event.data
    return {stream: bytes(data) for stream, data in out.items()}


def pattern(stream: int, n: int, start: int = 0) -> bytes:
    """Recognisable bytes: a stream's position `i` holds ``(i * 7 + stream) % 251``."""
    return bytes((i * 7 + stream) % 251 for i in range(start, start + n))


def transfer(a: Multiplexer, b: Multiplexer, *, ack: set[int] | None = None) -> dict[int, bytes]:
    """Pump both ways until quiet; `b` acknowledges what arrives on streams in `ack` (all when None)."""
    got: dict[int, bytearray] = defaultdict(bytearray)
    while True:
        events = pump(a, b)
        for event in events:
            if isinstance(event, StreamDataReceived):
                got[event.stream] += event.data
                if ack is None or event.stream in ack:
                    b.acknowledge(event.stream, len(event.data))
        back = pump(b, a)
        if not events and not back:
            return {stream: bytes(data) for stream, data in got.items()}


# -- ordering and chunking -------------------------------------------------------------------------------------------
def test_bytes_on_several_streams_arrive_in_order_per_stream() -> None:
    a, b = Multiplexer(), Multiplexer()
    expected: dict[int, bytes] = {}
    for stream in (0, 1, 7, 0xFFFFFFFF):
        parts = [pattern(stream, n, start) for n, start in ((10, 0), (3000, 10), (1, 3010), (50000, 3011))]
        for part in parts:
            a.send(stream, part)
        expected[stream] = b"".join(parts)
    a.send(1, memoryview(pattern(1, 200, 53011)))  # memoryviews are accepted too
    expected[1] += pattern(1, 200, 53011)
    assert transfer(a, b) == expected


def test_streams_are_served_round_robin_in_one_write() -> None:
    a, b = Multiplexer(), Multiplexer()
    a.send(3, b"ccc")
    a.send(1, b"a")
    a.send(2, b"bb")
    events = pump(a, b)
    assert events == [StreamDataReceived(3, b"ccc"), StreamDataReceived(1, b"a"), StreamDataReceived(2, b"bb")]


def test_empty_send_queues_nothing() -> None:
    a = Multiplexer()
    a.send(1, b"")
    assert a.queued(1) == 0
    assert a.data_to_send() == []


@pytest.mark.parametrize("stream", [-1, 0x1_0000_0000])
def test_send_on_an_out_of_range_stream_is_local_misuse(stream: int) -> None:
    with pytest.raises(errors.InvalidState):
        Multiplexer().send(stream, b"x")


@pytest.mark.parametrize("chunk", [1, 2, 5, 9, 10, 4097])
def test_any_chunking_of_the_wire_delivers_the_same_bytes(chunk: int) -> None:
    a, b = Multiplexer(), Multiplexer()
    expected = {0: pattern(0, 300), 5: pattern(5, 17), 9: pattern(9, 1)}
    for stream, data in expected.items():
        a.send(stream, data[:100])
    for stream, data in expected.items():
        a.send(stream, data[100:])
    data = wire(a)
    events: list[mux.Event] = []
    for i in range(0, len(data), chunk):
        events += b.receive_data(data[i : i + chunk])
    assert received(events) == expected
    assert all(len(e.data) > 0 for e in events if isinstance(e, StreamDataReceived))


def test_byte_by_byte_delivery_of_data_and_window_updates() -> None:
    a, b = Multiplexer(), Multiplexer(window=2 * DEFAULT_WINDOW)
    payload = pattern(4, 2 * DEFAULT_WINDOW + 100)
    a.send(4, payload)
    got = bytearray()
    while len(got) < len(payload):
        for byte in wire(a):
            for event in b.receive_data(bytes([byte])):
                assert isinstance(event, StreamDataReceived)
                got += event.data
                b.acknowledge(event.stream, len(event.data))
        credit = [e for byte in wire(b) for e in a.receive_data(bytes([byte]))]
        assert credit
        assert all(e == CreditAvailable(4) for e in credit)
    assert bytes(got) == payload


def test_a_zero_length_data_frame_is_harmless() -> None:
    b = Multiplexer()
    assert b.receive_data(HEADER.pack(DATA, 3, 0)) == []
    assert b.receive_data(HEADER.pack(DATA, 3, 2) + b"hi") == [StreamDataReceived(3, b"hi")]


# -- flow control ----------------------------------------------------------------------------------------------------
def test_an_unread_stream_stops_at_the_window_while_another_keeps_flowing() -> None:
    a, b = Multiplexer(), Multiplexer()
    slow, fast = 1, 2
    a.send(slow, pattern(slow, 3 * DEFAULT_WINDOW))
    a.send(fast, pattern(fast, 5 * DEFAULT_WINDOW))
    got = transfer(a, b, ack={fast})
    assert got[slow] == pattern(slow, DEFAULT_WINDOW)  # exactly one window, never more
    assert got[fast] == pattern(fast, 5 * DEFAULT_WINDOW)  # independent of the stalled stream
    assert b.buffered(slow) == DEFAULT_WINDOW
    assert b.buffered(fast) == 0
    assert a.queued(slow) == 2 * DEFAULT_WINDOW
    assert a.credit(slow) == 0
    assert a.queued(fast) == 0
    assert wire(a) == b""  # nothing sendable until the reader consumes


def test_a_larger_window_is_the_limit_after_the_first_grant() -> None:
    size = 3 * DEFAULT_WINDOW + 123
    a, b = Multiplexer(), Multiplexer(window=size)
    a.send(1, pattern(1, 10 * DEFAULT_WINDOW))
    got = transfer(a, b, ack=set())
    assert got[1] == pattern(1, size)
    assert b.buffered(1) == size
    assert a.credit(1) == 0


def test_larger_window_is_granted_to_the_peer_on_first_data() -> None:
    size = 2 * DEFAULT_WINDOW
    a, b = Multiplexer(), Multiplexer(window=size)
    a.send(1, b"x")
    pump(a, b)
    assert b.data_to_send() == [HEADER.pack(WINDOW_UPDATE, 1, size - DEFAULT_WINDOW)]
    assert b.data_to_send() == []
    b2 = Multiplexer(window=size)
    b2.receive_data(HEADER.pack(DATA, 1, 1) + b"x")
    assert a.receive_data(wire(b2)) == [CreditAvailable(1)]
    assert a.credit(1) == size - 1


def test_default_window_sends_no_initial_grant() -> None:
    a, b = Multiplexer(), Multiplexer(window=DEFAULT_WINDOW - 1)  # smaller requests are raised to the default
    assert b.window_size == DEFAULT_WINDOW
    a.send(1, b"x")
    pump(a, b)
    assert b.data_to_send() == []


def test_a_larger_window_admits_that_much_before_the_grant_arrives() -> None:
    size = 2 * DEFAULT_WINDOW
    b = Multiplexer(window=size)
    events = b.receive_data(HEADER.pack(DATA, 1, size) + bytes(size))
    assert received(events) == {1: bytes(size)}
    with pytest.raises(errors.FramingError):
        b.receive_data(HEADER.pack(DATA, 1, 1))


def test_acknowledged_credit_returns_only_in_batches() -> None:
    a, b = Multiplexer(), Multiplexer()
    a.send(1, pattern(1, 2 * DEFAULT_WINDOW))
    pump(a, b)
    assert b.buffered(1) == DEFAULT_WINDOW
    assert b.acknowledge(1, QUARTER - 1) is False
    assert b.data_to_send() == []  # batching: no update for less than a quarter window
    assert pump(a, b) == []  # and so the sender stays blocked
    assert b.acknowledge(1, 1) is True
    assert b.data_to_send() == [HEADER.pack(WINDOW_UPDATE, 1, QUARTER)]


def test_data_flows_again_after_a_batch_of_credit() -> None:
    a, b = Multiplexer(), Multiplexer()
    payload = pattern(1, 2 * DEFAULT_WINDOW)
    a.send(1, payload)
    pump(a, b)
    b.acknowledge(1, QUARTER)
    assert pump(b, a) == [CreditAvailable(1)]
    assert a.credit(1) == QUARTER
    events = pump(a, b)
    assert received(events) == {1: payload[DEFAULT_WINDOW : DEFAULT_WINDOW + QUARTER]}
    assert b.buffered(1) == DEFAULT_WINDOW
    assert a.queued(1) == DEFAULT_WINDOW - QUARTER


def test_acknowledge_unknown_stream_or_nothing_returns_false() -> None:
    b = Multiplexer()
    assert b.acknowledge(9, 100) is False
    b.receive_data(HEADER.pack(DATA, 9, 1) + b"x")
    assert b.acknowledge(9, 0) is False
    assert b.acknowledge(9, -5) is False
    assert b.buffered(9) == 1


def test_window_updates_go_out_before_data() -> None:
    a, b = Multiplexer(), Multiplexer()
    b.receive_data(HEADER.pack(DATA, 1, QUARTER) + bytes(QUARTER))
    b.acknowledge(1, QUARTER)
    b.send(2, b"reply")
    assert b.data_to_send() == [HEADER.pack(WINDOW_UPDATE, 1, QUARTER), HEADER.pack(DATA, 2, 5), b"reply"]
    assert a.credit(1) == DEFAULT_WINDOW


def test_grants_for_one_stream_accumulate_into_one_update() -> None:
    b = Multiplexer()
    b.receive_data(HEADER.pack(DATA, 1, DEFAULT_WINDOW) + bytes(DEFAULT_WINDOW))
    b.acknowledge(1, QUARTER)
    b.acknowledge(1, QUARTER)
    assert b.data_to_send() == [HEADER.pack(WINDOW_UPDATE, 1, 2 * QUARTER)]


def test_queued_and_buffered_report_correctly() -> None:
    a, b = Multiplexer(), Multiplexer()
    assert (a.queued(1), a.credit(1), b.buffered(1)) == (0, DEFAULT_WINDOW, 0)
    a.send(1, bytes(1000))
    a.send(1, bytes(2 * DEFAULT_WINDOW))
    assert a.queued(1) == 2 * DEFAULT_WINDOW + 1000
    chunks = a.data_to_send()
    assert a.queued(1) == DEFAULT_WINDOW + 1000
    assert a.credit(1) == 0
    data = b"".join(bytes(c) for c in chunks)
    b.receive_data(data[:5000])
    assert b.buffered(1) == DEFAULT_WINDOW  # counted once the header is read: the credit is spent
    b.receive_data(data[5000:])
    assert b.buffered(1) == DEFAULT_WINDOW
    b.acknowledge(1, 100)
    assert b.buffered(1) == DEFAULT_WINDOW - 100
    b.acknowledge(1, QUARTER)
    assert b.buffered(1) == DEFAULT_WINDOW - 100 - QUARTER
    assert b.buffered(2) == 0


# -- remote faults ---------------------------------------------------------------------------------------------------
def test_peer_sending_beyond_its_credit_in_one_frame() -> None:
    with pytest.raises(errors.FramingError, match="flow control"):
        Multiplexer().receive_data(HEADER.pack(DATA, 5, DEFAULT_WINDOW + 1))


def test_peer_sending_beyond_its_credit_over_several_frames() -> None:
    b = Multiplexer()
    b.receive_data(HEADER.pack(DATA, 5, DEFAULT_WINDOW - 1) + bytes(DEFAULT_WINDOW - 1))
    b.receive_data(HEADER.pack(DATA, 5, 1) + b"x")
    b.receive_data(HEADER.pack(DATA, 6, 1) + b"x")  # other streams have their own credit
    with pytest.raises(errors.FramingError):
        b.receive_data(HEADER.pack(DATA, 5, 1) + b"x")


def test_peer_sending_beyond_the_credit_it_was_granted() -> None:
    b = Multiplexer()
    b.receive_data(HEADER.pack(DATA, 5, DEFAULT_WINDOW) + bytes(DEFAULT_WINDOW))
    b.acknowledge(5, QUARTER)
    b.receive_data(HEADER.pack(DATA, 5, QUARTER) + bytes(QUARTER))
    with pytest.raises(errors.FramingError):
        b.receive_data(HEADER.pack(DATA, 5, 1))


@pytest.mark.parametrize("kind", [2, 3, 0x7F, 0xFF])
def test_unknown_frame_type(kind: int) -> None:
    with pytest.raises(errors.FramingError, match="unknown mux frame type"):
        Multiplexer().receive_data(HEADER.pack(kind, 0, 0))


def test_unknown_frame_type_split_across_chunks() -> None:
    b = Multiplexer()
    raw = HEADER.pack(DATA, 1, 2) + b"ok" + HEADER.pack(9, 1, 0)
    assert b.receive_data(raw[:13]) == [StreamDataReceived(1, b"ok")]
    with pytest.raises(errors.FramingError):
        b.receive_data(raw[13:])


def test_window_update_of_zero() -> None:
    with pytest.raises(errors.FramingError):
        Multiplexer().receive_data(HEADER.pack(WINDOW_UPDATE, 1, 0))


def test_window_update_up_to_the_maximum_then_overflow() -> None:
    a = Multiplexer()
    assert a.receive_data(HEADER.pack(WINDOW_UPDATE, 1, MAX_WINDOW - DEFAULT_WINDOW)) == [CreditAvailable(1)]
    assert a.credit(1) == MAX_WINDOW
    with pytest.raises(errors.FramingError):
        a.receive_data(HEADER.pack(WINDOW_UPDATE, 1, 1))


def test_window_update_overflow_in_one_frame() -> None:
    with pytest.raises(errors.FramingError):
        Multiplexer().receive_data(HEADER.pack(WINDOW_UPDATE, 1, 0xFFFFFFFF))


def test_more_than_max_streams() -> None:
    b = Multiplexer(max_streams=3)
    for stream in (10, 20, 30):
        b.receive_data(HEADER.pack(DATA, stream, 1) + b"x")
    b.receive_data(HEADER.pack(DATA, 20, 1) + b"y")  # a known stream is no new stream
    with pytest.raises(errors.FramingError, match="more than 3 streams"):
        b.receive_data(HEADER.pack(DATA, 40, 1) + b"x")


def test_window_updates_do_not_count_as_opened_streams() -> None:
    a = Multiplexer(max_streams=1)
    for stream in range(5):
        a.receive_data(HEADER.pack(WINDOW_UPDATE, stream, 1))
    a.receive_data(HEADER.pack(DATA, 0, 1) + b"x")


# -- local misuse ------------------------------------------------------------------------------------------------------
def test_acknowledging_more_than_buffered_is_refused() -> None:
    b = Multiplexer()
    b.receive_data(HEADER.pack(DATA, 1, 10) + bytes(10))
    with pytest.raises(errors.InvalidState):
        b.acknowledge(1, 10 + DEFAULT_WINDOW)
    assert b.buffered(1) == 10
    assert b.data_to_send() == []


def test_a_window_beyond_the_maximum_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="window"):
        Multiplexer(window=MAX_WINDOW + 1)


# -- over native streams (QUIC) ---------------------------------------------------------------------------------------
def native_pump(a: mux.StreamMultiplexer, b: mux.StreamMultiplexer, chunk: int = 0) -> list[mux.Event]:
    """Move what `a` can send into `b`, stream by stream (in pieces of `chunk` bytes when given)."""
    events: list[mux.Event] = []
    for number, chunks in a.streams_to_send():
        data = b"".join(bytes(c) for c in chunks)
        step = chunk or len(data)
        for i in range(0, len(data), step):
            events += b.receive_stream(number, data[i : i + step])
    return events


@pytest.mark.parametrize("chunk", [0, 1, 3, 5, 9])
def test_native_streams_carry_each_channel_on_its_own_stream_with_the_same_credit(chunk: int) -> None:
    a, b = mux.StreamMultiplexer(), mux.StreamMultiplexer()
    a.send(0, b"control")
    a.send(5, pattern(5, 3 * DEFAULT_WINDOW))  # more than the credit: the rest waits for b's window updates
    writes = a.streams_to_send()
    assert [number for number, _ in writes] == [0, 1]  # numbered in order of first use
    assert bytes(writes[0][1][0]) == mux.PREFIX.pack(DATA, 0)
    assert bytes(writes[1][1][0]) == mux.PREFIX.pack(DATA, 5)
    got: dict[int, bytearray] = defaultdict(bytearray)
    events = [e for n, chunks in writes for e in b.receive_stream(n, b"".join(bytes(c) for c in chunks))]
    while events:
        for event in events:
            if isinstance(event, StreamDataReceived):
                got[event.stream] += event.data
                b.acknowledge(event.stream, len(event.data))
        back = native_pump(b, a, chunk)  # b's grants, on b's stream of window updates
        assert all(isinstance(e, CreditAvailable) and e.stream == 5 for e in back)
        events = native_pump(a, b, chunk)
    assert got == {0: bytearray(b"control"), 5: bytearray(pattern(5, 3 * DEFAULT_WINDOW))}
    assert a.queued(5) == 0


def test_native_streams_enforce_credit() -> None:
    b = mux.StreamMultiplexer()
    b.receive_stream(0, mux.PREFIX.pack(DATA, 1) + bytes(DEFAULT_WINDOW))
    with pytest.raises(errors.FramingError, match="flow control"):
        b.receive_stream(0, b"x")


@pytest.mark.parametrize(
    ("streams", "match"),
    [
        ([mux.PREFIX.pack(7, 0)], "unknown native stream type"),
        ([mux.PREFIX.pack(DATA, 1), mux.PREFIX.pack(DATA, 1)], "a second native stream for channel 1"),
        ([mux.PREFIX.pack(WINDOW_UPDATE, 0), mux.PREFIX.pack(WINDOW_UPDATE, 0)], "a second native stream of window"),
        ([mux.PREFIX.pack(WINDOW_UPDATE, 0) + HEADER.pack(DATA, 1, 0)], "type 0 on the stream of window updates"),
        ([mux.PREFIX.pack(WINDOW_UPDATE, 0) + HEADER.pack(WINDOW_UPDATE, 1, 0)], "invalid window update"),
    ],
)
def test_native_stream_violations_are_framing_errors(streams: list[bytes], match: str) -> None:
    b = mux.StreamMultiplexer()
    for number, data in enumerate(streams[:-1]):
        b.receive_stream(number, data)
    with pytest.raises(errors.FramingError, match=match):
        b.receive_stream(len(streams) - 1, streams[-1])


def test_native_streams_are_bounded_and_a_cut_window_update_is_caught_at_the_end() -> None:
    b = mux.StreamMultiplexer(max_streams=4)
    for number in range(5):
        b.receive_stream(number, b"\0")  # prefixes begun, never finished: each still counts
    with pytest.raises(errors.FramingError, match="more than 5 native streams"):
        b.receive_stream(5, b"\0")
    c = mux.StreamMultiplexer()
    c.receive_stream(0, mux.PREFIX.pack(WINDOW_UPDATE, 0) + HEADER.pack(WINDOW_UPDATE, 1, 10)[:4])
    with pytest.raises(errors.FramingError, match="inside a window update"):
        c.eof()


def test_a_native_multiplexer_has_no_byte_pipe_side() -> None:
    m = mux.StreamMultiplexer()
    with pytest.raises(errors.InvalidState):
        m.data_to_send()
    with pytest.raises(errors.InvalidState):
        m.receive_data(b"")
