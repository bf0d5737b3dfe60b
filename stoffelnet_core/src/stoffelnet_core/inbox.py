"""Received messages waiting for the application, per (sender, stream), with tags. No I/O here.

Three ways to take a message, all FIFO per (sender, stream): the next untagged one from any sender (arrival
order), the next untagged one from one sender, or the next one with a given tag from one sender. A tagged message
is only ever taken by asking for its tag. Items are opaque to the inbox; their memory is bounded by the flow
control credit they hold until taken.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from .frames import Tag

__all__ = ["Inbox"]

T = TypeVar("T")
_Key = tuple[int, int]


class Inbox(Generic[T]):
    """Queues of received items, keyed by sender and stream (and tag)."""

    def __init__(self) -> None:
        self._untagged: dict[_Key, deque[T]] = {}
        self._tagged: dict[tuple[int, int, Tag], deque[T]] = {}
        # Arrival order per stream: one token per untagged item. A token whose item was taken by `pop_from`
        # is stale; `_stale` counts those per (sender, stream), and they are skipped (and compacted) lazily.
        self._arrivals: dict[int, deque[int]] = {}
        self._stale: dict[_Key, int] = {}
        self._stale_total: dict[int, int] = {}

    def push(self, sender: int, stream: int, tag: Tag | None, item: T) -> None:
        if tag is None:
            key = (sender, stream)
            queue = self._untagged.get(key)
            if queue is None:
                queue = self._untagged[key] = deque()
            queue.append(item)
            arrivals = self._arrivals.get(stream)
            if arrivals is None:
                arrivals = self._arrivals[stream] = deque()
            arrivals.append(sender)
        else:
            tkey = (sender, stream, tag)
            tqueue = self._tagged.get(tkey)
            if tqueue is None:
                tqueue = self._tagged[tkey] = deque()
            tqueue.append(item)

    def pop_any(self, stream: int) -> tuple[int, T] | None:
        """The oldest untagged item on `stream` from any sender."""
        arrivals = self._arrivals.get(stream)
        while arrivals:
            sender = arrivals.popleft()
            key = (sender, stream)
            stale = self._stale.get(key)
            if stale:
                self._stale[key] = stale - 1
                self._stale_total[stream] -= 1
                continue
            return sender, self._untagged[key].popleft()
        return None

    def pop_from(self, sender: int, stream: int, tag: Tag | None = None) -> T | None:
        """The oldest item from `sender` on `stream`: untagged when `tag` is None, else with that tag."""
        if tag is not None:
            tkey = (sender, stream, tag)
            tqueue = self._tagged.get(tkey)
            if not tqueue:
                return None
            item = tqueue.popleft()
            if not tqueue:
                del self._tagged[tkey]
            return item
        key = (sender, stream)
        queue = self._untagged.get(key)
        if not queue:
            return None
        self._stale[key] = self._stale.get(key, 0) + 1
        total = self._stale_total[stream] = self._stale_total.get(stream, 0) + 1
        if total > 64 and total * 2 > len(self._arrivals[stream]):
            self._compact(stream)
        return queue.popleft()

    def _compact(self, stream: int) -> None:
        """Drop stale tokens, keeping each sender's oldest tokens stale-first (they stand for taken items)."""
        kept: deque[int] = deque()
        for sender in self._arrivals[stream]:
            key = (sender, stream)
            stale = self._stale.get(key)
            if stale:
                self._stale[key] = stale - 1
            else:
                kept.append(sender)
        self._arrivals[stream] = kept
        self._stale_total[stream] = 0

    def count(self, sender: int, stream: int) -> int:
        """Untagged items waiting from `sender` on `stream`."""
        queue = self._untagged.get((sender, stream))
        return len(queue) if queue else 0

    def drain_sender(self, sender: int) -> list[T]:
        """Remove and return every item from `sender` (for a peer whose messages will never be read)."""
        items: list[T] = []
        for key in [k for k in self._untagged if k[0] == sender]:
            items.extend(self._untagged.pop(key))
            self._stale.pop(key, None)
        for tkey in [k for k in self._tagged if k[0] == sender]:
            items.extend(self._tagged.pop(tkey))
        for stream, arrivals in self._arrivals.items():
            self._arrivals[stream] = deque(s for s in arrivals if s != sender)
            self._stale_total[stream] = sum(n for (s, st), n in self._stale.items() if st == stream)
        return items
