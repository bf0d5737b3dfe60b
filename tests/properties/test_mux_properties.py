"""Properties of the multiplexer: ordered delivery and bounded windows under any schedule; only `FramingError`."""

from __future__ import annotations

import itertools
from collections import defaultdict

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from stoffelnet_core import errors, mux
from stoffelnet_core.flow import DEFAULT_WINDOW, MAX_WINDOW
from stoffelnet_core.mux import DATA, HEADER, WINDOW_UPDATE, CreditAvailable, Multiplexer, StreamDataReceived

# No explain phase: on a failure it imports libcst, whose DeprecationWarning `filterwarnings = error` turns into an
# INTERNALERROR that hides the falsifying example.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
SETTINGS = settings(max_examples=150, deadline=None, phases=PHASES, suppress_health_check=[HealthCheck.too_slow])

STREAMS = [0, 1, 2, 0xFFFFFFFF]
_BLOCK = bytes(range(251)) * (4 * DEFAULT_WINDOW // 251 + 2)


def pattern(stream: int, start: int, n: int) -> bytes:
    """Bytes ``start .. start + n`` of `stream`: position ``i`` holds ``(i + stream) % 251``."""
    offset = (start + stream) % 251
    return _BLOCK[offset : offset + n]


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


class _End:
    """One side of the pair, with the test's own record of what its application sent, received and consumed."""

    def __init__(self, window: int) -> None:
        self.mux = Multiplexer(window=window)
        self.outbox = bytearray()  # written by this side, not yet delivered to the other
        self.sent: dict[int, int] = defaultdict(int)  # bytes handed to `send`, per stream
        self.got: dict[int, int] = defaultdict(int)  # bytes delivered to this side, per stream
        self.acked: dict[int, int] = defaultdict(int)  # bytes this side's application consumed, per stream


class MuxPair(RuleBasedStateMachine):
    """Random schedules of send / move some wire bytes in random chunks / acknowledge, in both directions."""

    def __init__(self) -> None:
        super().__init__()
        self.ends = (_End(DEFAULT_WINDOW), _End(DEFAULT_WINDOW))

    @initialize(
        windows=st.tuples(
            st.sampled_from([DEFAULT_WINDOW, DEFAULT_WINDOW + 1, 2 * DEFAULT_WINDOW, 5 * DEFAULT_WINDOW + 3]),
            st.sampled_from([DEFAULT_WINDOW, 3 * DEFAULT_WINDOW]),
        )
    )
    def make_pair(self, windows: tuple[int, int]) -> None:
        self.ends = (_End(windows[0]), _End(windows[1]))

    @rule(side=st.integers(0, 1), stream=st.sampled_from(STREAMS), n=st.integers(1, 2 * DEFAULT_WINDOW))
    def send(self, side: int, stream: int, n: int) -> None:
        end = self.ends[side]
        end.mux.send(stream, pattern(stream, end.sent[stream], n))
        end.sent[stream] += n

    @rule(side=st.integers(0, 1), sizes=st.lists(st.integers(1, 3 * DEFAULT_WINDOW), min_size=1, max_size=4))
    def move(self, side: int, sizes: list[int]) -> None:
        """Let `side` write what it may, then deliver some of its outbox to the other side, in chunks."""
        src, dst = self.ends[side], self.ends[1 - side]
        src.outbox += b"".join(bytes(c) for c in src.mux.data_to_send())
        for size in sizes:
            piece = bytes(src.outbox[:size])
            del src.outbox[:size]
            self.deliver(src, dst, piece)

    @rule(side=st.integers(0, 1), stream=st.sampled_from(STREAMS), fraction=st.floats(0, 1))
    def acknowledge(self, side: int, stream: int, fraction: float) -> None:
        end = self.ends[side]
        k = round((end.got[stream] - end.acked[stream]) * fraction)
        if k:
            end.mux.acknowledge(stream, k)
            end.acked[stream] += k

    @staticmethod
    def deliver(src: _End, dst: _End, data: bytes) -> None:
        for event in dst.mux.receive_data(data):
            if isinstance(event, StreamDataReceived):
                assert event.data, "an empty data event"
                start = dst.got[event.stream]
                assert event.data == pattern(event.stream, start, len(event.data)), "bytes out of order"
                dst.got[event.stream] = start + len(event.data)
                assert dst.got[event.stream] <= src.sent[event.stream]
            else:
                assert isinstance(event, CreditAvailable)

    @invariant()
    def windows_stay_bounded(self) -> None:
        for side in (0, 1):
            src, dst = self.ends[side], self.ends[1 - side]
            for stream in STREAMS:
                unread = dst.got[stream] - dst.acked[stream]
                assert 0 <= unread <= dst.mux.buffered(stream) <= dst.mux.window_size
                # bytes written but not consumed (in flight, buffered or batched) never exceed the window
                written = src.sent[stream] - src.mux.queued(stream)
                assert written - dst.acked[stream] <= dst.mux.window_size
                assert 0 <= src.mux.credit(stream) <= MAX_WINDOW

    @rule()
    def everything_arrives_once_read(self) -> None:
        """Liveness: once both applications consume everything, every byte sent arrives."""
        while True:
            progress = False
            for side in (0, 1):
                src, dst = self.ends[side], self.ends[1 - side]
                src.outbox += b"".join(bytes(c) for c in src.mux.data_to_send())
                if src.outbox:
                    progress = True
                    data = bytes(src.outbox)
                    src.outbox.clear()
                    self.deliver(src, dst, data)
                for stream in STREAMS:
                    k = dst.got[stream] - dst.acked[stream]
                    if k:
                        dst.mux.acknowledge(stream, k)
                        dst.acked[stream] += k
                        progress = True  # an acknowledgement may queue a window update still to be sent
            if not progress:
                break
        for side in (0, 1):
            src, dst = self.ends[side], self.ends[1 - side]
            for stream in STREAMS:
                assert src.mux.queued(stream) == 0
                assert dst.got[stream] == src.sent[stream]

    def teardown(self) -> None:
        self.everything_arrives_once_read()


TestRandomSchedules = MuxPair.TestCase
TestRandomSchedules.settings = settings(
    max_examples=100,
    stateful_step_count=25,
    deadline=None,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- only FramingError on bad input ----------------------------------------------------------------------------------
def feed_expecting_only_framing_errors(receiver: Multiplexer, chunks: list[bytes]) -> None:
    """Feed `chunks`; success or `FramingError` are fine, anything else propagates and fails the test."""
    try:
        for chunk in chunks:
            for event in receiver.receive_data(chunk):
                assert isinstance(event, StreamDataReceived | CreditAvailable)
    except errors.FramingError:
        return


receivers = st.builds(
    Multiplexer,
    window=st.sampled_from([DEFAULT_WINDOW, 2 * DEFAULT_WINDOW, MAX_WINDOW]),
    max_streams=st.integers(1, 5),
)
cuts = st.lists(st.integers(min_value=0), max_size=20)


@SETTINGS
@given(receivers, st.binary(max_size=400), cuts)
def test_random_bytes_raise_only_framing_errors(receiver: Multiplexer, data: bytes, cut: list[int]) -> None:
    feed_expecting_only_framing_errors(receiver, chunked(data, cut))


# Frame-shaped input: real headers with any type, stream and length, and a body of any length after them, so the
# credit, stream-limit and window-update checks are reached far more often than by random bytes.
raw_frames = st.lists(
    st.builds(
        lambda kind, stream, length, body: HEADER.pack(kind, stream, length) + body,
        st.sampled_from([DATA, DATA, WINDOW_UPDATE, WINDOW_UPDATE, 2, 255]),
        st.integers(0, 6) | st.just(0xFFFFFFFF),
        st.integers(0, 300) | st.sampled_from([DEFAULT_WINDOW, DEFAULT_WINDOW + 1, MAX_WINDOW, 0xFFFFFFFF]),
        st.binary(max_size=300),
    ),
    max_size=12,
)


@SETTINGS
@given(receivers, raw_frames, cuts)
def test_frame_shaped_garbage_raises_only_framing_errors(
    receiver: Multiplexer, frames: list[bytes], cut: list[int]
) -> None:
    feed_expecting_only_framing_errors(receiver, chunked(b"".join(frames), cut))


@st.composite
def valid_wire(draw: st.DrawFn) -> bytes:
    """What a well-behaved sender writes: data on several streams plus window updates it was owed."""
    sender = Multiplexer(window=draw(st.sampled_from([DEFAULT_WINDOW, 2 * DEFAULT_WINDOW])))
    for _ in range(draw(st.integers(0, 4))):
        stream = draw(st.sampled_from(STREAMS))
        sender.send(stream, pattern(stream, 0, draw(st.integers(1, 400))))
    for stream in draw(st.lists(st.sampled_from(STREAMS), max_size=3)):
        quarter = DEFAULT_WINDOW // 4  # enough to make the sender owe a window update
        sender.receive_data(HEADER.pack(DATA, stream, quarter) + bytes(quarter))
        sender.acknowledge(stream, quarter)
    return b"".join(bytes(c) for c in sender.data_to_send())


mutations = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete", "set"]), st.integers(min_value=0), st.integers(0, 255)),
    min_size=1,
    max_size=6,
)


def mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, position, value in edits:
        i = position % (len(buf) + 1)
        if kind == "insert":
            buf.insert(i, value)
        elif i < len(buf):
            if kind == "flip":
                buf[i] ^= 1 << (value % 8)
            elif kind == "delete":
                del buf[i]
            else:
                buf[i] = value
    return bytes(buf)


@SETTINGS
@given(receivers, valid_wire(), mutations, cuts)
def test_mutated_wire_raises_only_framing_errors(
    receiver: Multiplexer, data: bytes, edits: list[tuple[str, int, int]], cut: list[int]
) -> None:
    feed_expecting_only_framing_errors(receiver, chunked(mutate(data, edits), cut))


@SETTINGS
@given(valid_wire(), cuts)
def test_valid_wire_in_any_chunking_is_accepted(data: bytes, cut: list[int]) -> None:
    whole: list[mux.Event] = Multiplexer().receive_data(data)
    receiver = Multiplexer()
    pieces: list[mux.Event] = []
    for chunk in chunked(data, cut):
        pieces += receiver.receive_data(chunk)

    def per_stream(events: list[mux.Event]) -> dict[int, bytes]:
        out: dict[int, bytes] = defaultdict(bytes)
        for event in events:
            if isinstance(event, StreamDataReceived):
                out[event.stream] += event.data
        return dict(out)

    assert per_stream(pieces) == per_stream(whole)
    assert [e for e in pieces if isinstance(e, CreditAvailable)] == [e for e in whole if isinstance(e, CreditAvailable)]
