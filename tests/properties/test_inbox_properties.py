"""The inbox against a reference model: one list in arrival order, searched the slow, obvious way."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from stoffelnet_core.frames import Tag
from stoffelnet_core.inbox import Inbox

# No explain phase: on a failure it imports libcst, whose DeprecationWarning `filterwarnings = error` turns into an
# INTERNALERROR that hides the falsifying example.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]

Entry = tuple[int, int, Tag | None, int]  # sender, stream, tag, item


def model_take(items: list[Entry], sender: int | None, stream: int, tag: Tag | None) -> Entry | None:
    """Remove and return the oldest matching entry; `sender` None means any sender (untagged only)."""
    for i, entry in enumerate(items):
        s, st_, t, _ = entry
        if st_ != stream or (sender is not None and s != sender):
            continue
        if (t is None and tag is None) or (t is not None and tag is not None and type(t) is type(tag) and t == tag):
            del items[i]
            return entry
    return None


senders = st.integers(0, 3)
streams = st.integers(0, 1)
tags: st.SearchStrategy[Tag] = st.sampled_from([0, 1, b"", b"\x01"])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), senders, streams, st.none() | tags),
        st.tuples(st.just("push_many"), senders, streams, st.integers(1, 150)),
        st.tuples(st.just("pop_any"), senders, streams, st.none()),
        st.tuples(st.just("pop_from"), senders, streams, st.none() | tags),
        st.tuples(st.just("pop_from_many"), senders, streams, st.integers(1, 150)),
        st.tuples(st.just("drain"), senders, streams, st.none()),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None, phases=PHASES, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_inbox_matches_the_reference_model(ops: list[tuple[str, int, int, Tag | None]]) -> None:
    inbox: Inbox[int] = Inbox()
    model: list[Entry] = []
    counter = 0
    for op, sender, stream, arg in ops:
        if op == "push":
            counter += 1
            inbox.push(sender, stream, arg, counter)
            model.append((sender, stream, arg, counter))
        elif op == "push_many":
            assert type(arg) is int
            for _ in range(arg):  # bursts, so the stale-token compaction threshold is crossed
                counter += 1
                inbox.push(sender, stream, None, counter)
                model.append((sender, stream, None, counter))
        elif op == "pop_any":
            entry = model_take(model, None, stream, None)
            assert inbox.pop_any(stream) == (None if entry is None else (entry[0], entry[3]))
        elif op == "pop_from":
            entry = model_take(model, sender, stream, arg)
            assert inbox.pop_from(sender, stream, arg) == (None if entry is None else entry[3])
        elif op == "pop_from_many":
            assert type(arg) is int
            for _ in range(arg):
                entry = model_take(model, sender, stream, None)
                assert inbox.pop_from(sender, stream) == (None if entry is None else entry[3])
        else:
            expected = sorted(e[3] for e in model if e[0] == sender)
            model[:] = [e for e in model if e[0] != sender]
            assert sorted(inbox.drain_sender(sender)) == expected
        for s in range(4):
            for st_ in range(2):
                assert inbox.count(s, st_) == sum(1 for e in model if e[:3] == (s, st_, None))
    # everything left comes out in arrival order, untagged by pop_any, tagged by their tag
    for stream in range(2):
        while (entry := model_take(model, None, stream, None)) is not None:
            assert inbox.pop_any(stream) == (entry[0], entry[3])
        assert inbox.pop_any(stream) is None
    for sender, stream, tag, item in list(model):
        assert inbox.pop_from(sender, stream, tag) == item
