"""The inbox: arrival order across senders, per-sender FIFO, tags, compaction and draining."""

from __future__ import annotations

import random

from stoffelnet_core.frames import Tag
from stoffelnet_core.inbox import Inbox


class Model:
    """The inbox's meaning, written the slow, obvious way: one list in arrival order."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int, Tag | None, str]] = []

    def push(self, sender: int, stream: int, tag: Tag | None, item: str) -> None:
        self.items.append((sender, stream, tag, item))

    def pop_any(self, stream: int) -> tuple[int, str] | None:
        for i, (s, st, t, item) in enumerate(self.items):
            if st == stream and t is None:
                del self.items[i]
                return s, item
        return None

    def pop_from(self, sender: int, stream: int, tag: Tag | None = None) -> str | None:
        for i, (s, st, t, item) in enumerate(self.items):
            if s == sender and st == stream and (t is None if tag is None else t is not None and same_tag(t, tag)):
                del self.items[i]
                return item
        return None

    def count(self, sender: int, stream: int) -> int:
        return sum(1 for s, st, t, _ in self.items if s == sender and st == stream and t is None)

    def drain_sender(self, sender: int) -> list[str]:
        taken = [item for s, _, _, item in self.items if s == sender]
        self.items = [x for x in self.items if x[0] != sender]
        return taken


def same_tag(a: Tag, b: Tag) -> bool:
    return type(a) is type(b) and a == b


def test_empty_inbox() -> None:
    inbox: Inbox[str] = Inbox()
    assert inbox.pop_any(0) is None
    assert inbox.pop_from(0, 0) is None
    assert inbox.pop_from(0, 0, tag=1) is None
    assert inbox.count(0, 0) == 0
    assert inbox.drain_sender(0) == []


def test_pop_any_follows_arrival_order_across_senders() -> None:
    inbox: Inbox[str] = Inbox()
    arrivals = [(2, "a"), (0, "b"), (2, "c"), (1, "d"), (0, "e")]
    for sender, item in arrivals:
        inbox.push(sender, 0, None, item)
    assert [inbox.pop_any(0) for _ in arrivals] == arrivals
    assert inbox.pop_any(0) is None


def test_streams_are_separate() -> None:
    inbox: Inbox[str] = Inbox()
    inbox.push(0, 1, None, "s1")
    inbox.push(0, 2, None, "s2")
    assert inbox.pop_any(3) is None
    assert inbox.pop_any(2) == (0, "s2")
    assert inbox.pop_from(0, 2) is None
    assert inbox.pop_from(0, 1) == "s1"


def test_pop_from_is_fifo_per_sender() -> None:
    inbox: Inbox[str] = Inbox()
    for i in range(5):
        inbox.push(1, 0, None, f"one-{i}")
        inbox.push(2, 0, None, f"two-{i}")
    assert [inbox.pop_from(2, 0) for _ in range(5)] == [f"two-{i}" for i in range(5)]
    assert inbox.pop_from(2, 0) is None
    assert inbox.count(1, 0) == 5
    assert inbox.count(2, 0) == 0


def test_pop_any_skips_what_pop_from_took() -> None:
    inbox: Inbox[str] = Inbox()
    for sender, item in [(0, "a"), (1, "b"), (0, "c"), (1, "d"), (0, "e")]:
        inbox.push(sender, 0, None, item)
    assert inbox.pop_from(1, 0) == "b"
    assert inbox.pop_any(0) == (0, "a")
    assert inbox.pop_from(0, 0) == "c"
    assert inbox.pop_any(0) == (1, "d")
    assert inbox.pop_any(0) == (0, "e")
    assert inbox.pop_any(0) is None
    inbox.push(1, 0, None, "f")  # stale bookkeeping is gone: new arrivals come out normally
    assert inbox.pop_any(0) == (1, "f")


def test_interleaved_pushes_and_pops() -> None:
    inbox: Inbox[str] = Inbox()
    inbox.push(0, 0, None, "a")
    assert inbox.pop_from(0, 0) == "a"
    inbox.push(0, 0, None, "b")
    inbox.push(1, 0, None, "c")
    assert inbox.pop_any(0) == (0, "b")  # the stale token of "a" is not mistaken for "b"
    inbox.push(0, 0, None, "d")
    assert inbox.pop_from(0, 0) == "d"
    assert inbox.pop_any(0) == (1, "c")
    assert inbox.pop_any(0) is None


def test_tagged_items_only_come_out_by_their_tag() -> None:
    inbox: Inbox[str] = Inbox()
    inbox.push(0, 0, 7, "seven")
    inbox.push(0, 0, b"\x07", "bytes-seven")
    inbox.push(0, 0, None, "plain")
    inbox.push(0, 0, 7, "seven-again")
    assert inbox.count(0, 0) == 1  # counts untagged only
    assert inbox.pop_any(0) == (0, "plain")
    assert inbox.pop_any(0) is None  # untagged never returns tagged
    assert inbox.pop_from(0, 0) is None
    assert inbox.pop_from(1, 0, tag=7) is None  # per sender
    assert inbox.pop_from(0, 1, tag=7) is None  # per stream
    assert inbox.pop_from(0, 0, tag=8) is None
    assert inbox.pop_from(0, 0, tag=7) == "seven"
    assert inbox.pop_from(0, 0, tag=b"\x07") == "bytes-seven"  # int and bytes tags are different tags
    assert inbox.pop_from(0, 0, tag=7) == "seven-again"
    assert inbox.pop_from(0, 0, tag=7) is None


def test_tag_zero_and_empty_bytes_are_tags() -> None:
    inbox: Inbox[str] = Inbox()
    inbox.push(0, 0, 0, "zero")
    inbox.push(0, 0, b"", "empty")
    assert inbox.pop_any(0) is None
    assert inbox.pop_from(0, 0) is None
    assert inbox.pop_from(0, 0, tag=b"") == "empty"
    assert inbox.pop_from(0, 0, tag=0) == "zero"


def test_drain_sender() -> None:
    inbox: Inbox[str] = Inbox()
    for sender, stream, tag, item in [
        (0, 0, None, "a0"),
        (1, 0, None, "b0"),
        (0, 1, None, "a1"),
        (0, 0, 5, "a-tagged"),
        (1, 0, 5, "b-tagged"),
        (0, 0, None, "a2"),
    ]:
        inbox.push(sender, stream, tag, item)
    assert inbox.pop_from(0, 0) == "a0"  # leaves a stale token that draining must account for
    assert sorted(inbox.drain_sender(0)) == ["a-tagged", "a1", "a2"]
    assert inbox.count(0, 0) == 0
    assert inbox.pop_from(0, 0, tag=5) is None
    assert inbox.pop_any(1) is None
    assert inbox.pop_any(0) == (1, "b0")
    assert inbox.pop_any(0) is None
    assert inbox.pop_from(1, 0, tag=5) == "b-tagged"
    inbox.push(0, 0, None, "after")  # the sender may come back
    assert inbox.pop_any(0) == (0, "after")


def test_drain_keeps_other_senders_order_after_compaction_pressure() -> None:
    inbox: Inbox[str] = Inbox()
    for i in range(300):
        inbox.push(i % 3, 0, None, f"{i}")
    for _ in range(90):
        inbox.pop_from(1, 0)
    drained = inbox.drain_sender(2)
    assert drained == [f"{i}" for i in range(2, 300, 3)]
    rest = []
    while (got := inbox.pop_any(0)) is not None:
        rest.append(got)
    assert rest == [(i % 3, f"{i}") for i in range(300) if i % 3 == 0 or (i % 3 == 1 and i >= 270)]


def run_against_model(seed: int, steps: int, senders: int, streams: int, tags: list[Tag]) -> None:
    rng = random.Random(seed)
    inbox: Inbox[str] = Inbox()
    model = Model()
    counter = 0
    for _ in range(steps):
        r = rng.random()
        sender, stream = rng.randrange(senders), rng.randrange(streams)
        if r < 0.45:
            tag = rng.choice(tags) if rng.random() < 0.2 else None
            counter += 1
            inbox.push(sender, stream, tag, f"m{counter}")
            model.push(sender, stream, tag, f"m{counter}")
        elif r < 0.65:
            assert inbox.pop_any(stream) == model.pop_any(stream)
        elif r < 0.9:
            assert inbox.pop_from(sender, stream) == model.pop_from(sender, stream)
        elif r < 0.98:
            tag = rng.choice(tags)
            assert inbox.pop_from(sender, stream, tag) == model.pop_from(sender, stream, tag)
        else:
            assert sorted(inbox.drain_sender(sender)) == sorted(model.drain_sender(sender))
        assert inbox.count(sender, stream) == model.count(sender, stream)
    for stream in range(streams):
        while (got := model.pop_any(stream)) is not None:
            assert inbox.pop_any(stream) == got
        assert inbox.pop_any(stream) is None


def test_compaction_keeps_the_semantics_in_mixed_patterns() -> None:
    for seed in range(6):
        run_against_model(seed, 4000, senders=4, streams=2, tags=[1, b"x"])


def test_compaction_with_one_sender_mostly_taken_by_pop_from() -> None:
    """Many stale tokens from one sender interleaved with live ones from another: compaction runs often."""
    inbox: Inbox[str] = Inbox()
    model = Model()
    for i in range(2000):
        for sender in (0, 1):
            inbox.push(sender, 0, None, f"{sender}-{i}")
            model.push(sender, 0, None, f"{sender}-{i}")
        assert inbox.pop_from(0, 0) == model.pop_from(0, 0)
        if i % 7 == 0:
            assert inbox.pop_any(0) == model.pop_any(0)
    while (got := model.pop_any(0)) is not None:
        assert inbox.pop_any(0) == got
    assert inbox.pop_any(0) is None
