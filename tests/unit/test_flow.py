"""Byte-credit windows: what the sender may send, what the receiver grants back and when."""

from __future__ import annotations

import random

import pytest

from stoffelnet_core import errors
from stoffelnet_core.flow import DEFAULT_WINDOW, MAX_WINDOW, ReceiveWindow, SendWindow

QUARTER = DEFAULT_WINDOW // 4


def unacknowledged(window: ReceiveWindow) -> int:
    """Consumed bytes not yet granted back, derived from the public fields and the invariant."""
    return window.size - window.outstanding - window.buffered


# -- SendWindow ------------------------------------------------------------------------------------------------------
def test_send_window_starts_with_the_default_credit() -> None:
    assert SendWindow().available == DEFAULT_WINDOW
    assert SendWindow(10).available == 10


def test_send_window_consume_down_to_zero() -> None:
    window = SendWindow(100)
    window.consume(60)
    window.consume(40)
    assert window.available == 0
    window.consume(0)
    assert window.available == 0


def test_send_window_refuses_to_overdraw_as_local_misuse() -> None:
    window = SendWindow(100)
    window.consume(30)
    with pytest.raises(errors.InvalidState):
        window.consume(71)
    assert window.available == 70  # unchanged by the refused call


def test_send_window_grant_adds_credit() -> None:
    window = SendWindow(0)
    window.grant(5)
    window.grant(7)
    assert window.available == 12


@pytest.mark.parametrize("n", [0, -1, -DEFAULT_WINDOW])
def test_send_window_refuses_a_non_positive_grant(n: int) -> None:
    window = SendWindow()
    with pytest.raises(errors.FramingError):
        window.grant(n)
    assert window.available == DEFAULT_WINDOW


def test_send_window_grant_up_to_the_maximum_is_legal() -> None:
    window = SendWindow()
    window.grant(MAX_WINDOW - DEFAULT_WINDOW)
    assert window.available == MAX_WINDOW


def test_send_window_grant_beyond_the_maximum_is_a_remote_fault() -> None:
    window = SendWindow()
    with pytest.raises(errors.FramingError):
        window.grant(MAX_WINDOW - DEFAULT_WINDOW + 1)
    assert window.available == DEFAULT_WINDOW
    window.consume(10)
    window.grant(MAX_WINDOW - DEFAULT_WINDOW + 10)  # legal again once credit was spent
    assert window.available == MAX_WINDOW


# -- ReceiveWindow ---------------------------------------------------------------------------------------------------
def test_receive_window_defaults() -> None:
    window = ReceiveWindow()
    assert (window.size, window.outstanding, window.buffered) == (DEFAULT_WINDOW, DEFAULT_WINDOW, 0)
    assert window.flush() == 0


@pytest.mark.parametrize(
    ("size", "initial"),
    [(DEFAULT_WINDOW - 1, DEFAULT_WINDOW), (MAX_WINDOW + 1, DEFAULT_WINDOW), (5, 6)],
)
def test_receive_window_rejects_bad_sizes(size: int, initial: int) -> None:
    with pytest.raises(ValueError, match="window size"):
        ReceiveWindow(size, initial)


def test_receive_window_accepts_the_bounds() -> None:
    assert ReceiveWindow(DEFAULT_WINDOW).size == DEFAULT_WINDOW
    assert ReceiveWindow(MAX_WINDOW).size == MAX_WINDOW
    assert ReceiveWindow(10, 10).outstanding == 10


def test_larger_window_grants_the_difference_on_first_flush() -> None:
    window = ReceiveWindow(4 * DEFAULT_WINDOW)
    assert window.outstanding == DEFAULT_WINDOW
    assert window.buffered == 0
    assert unacknowledged(window) == 3 * DEFAULT_WINDOW
    assert window.flush() == 3 * DEFAULT_WINDOW
    assert window.outstanding == 4 * DEFAULT_WINDOW
    assert window.flush() == 0


def test_received_bytes_are_buffered_until_consumed() -> None:
    window = ReceiveWindow()
    window.received(1000)
    assert window.outstanding == DEFAULT_WINDOW - 1000
    assert window.buffered == 1000
    assert window.consumed(400) == 0  # below a quarter: batched
    assert window.buffered == 600
    assert unacknowledged(window) == 400


def test_receive_exactly_the_credit_then_one_more_byte_is_a_remote_fault() -> None:
    window = ReceiveWindow()
    window.received(DEFAULT_WINDOW)
    assert window.outstanding == 0
    window.received(0)
    with pytest.raises(errors.FramingError, match="flow control"):
        window.received(1)
    assert window.buffered == DEFAULT_WINDOW


def test_receive_beyond_the_credit_in_one_go_is_a_remote_fault() -> None:
    window = ReceiveWindow()
    with pytest.raises(errors.FramingError):
        window.received(DEFAULT_WINDOW + 1)
    assert window.outstanding == DEFAULT_WINDOW


def test_consumed_grants_only_in_batches_of_a_quarter_window() -> None:
    window = ReceiveWindow()
    window.received(DEFAULT_WINDOW)
    assert window.consumed(QUARTER - 1) == 0
    assert window.outstanding == 0
    assert window.consumed(1) == QUARTER  # the batch reached a quarter: everything consumed goes out
    assert window.outstanding == QUARTER
    assert window.consumed(QUARTER + 5) == QUARTER + 5  # one big consumption goes out at once
    assert unacknowledged(window) == 0


def test_batching_threshold_follows_the_window_size() -> None:
    size = 4 * DEFAULT_WINDOW
    window = ReceiveWindow(size)
    window.flush()
    window.received(size)
    assert window.consumed(size // 4 - 1) == 0
    assert window.consumed(1) == size // 4


def test_flush_returns_a_partial_batch() -> None:
    window = ReceiveWindow()
    window.received(100)
    window.consumed(60)
    assert window.flush() == 60
    assert window.flush() == 0
    assert window.outstanding == DEFAULT_WINDOW - 40
    assert window.buffered == 40


def test_invariant_holds_under_a_random_schedule() -> None:
    rng = random.Random(20240611)
    for size in (DEFAULT_WINDOW, 3 * DEFAULT_WINDOW + 7):
        window = ReceiveWindow(size)
        granted_total = window.flush()
        received_total = consumed_total = 0
        for _ in range(5000):
            action = rng.randrange(3)
            if action == 0 and window.outstanding:
                n = rng.randint(0, window.outstanding)
                window.received(n)
                received_total += n
            elif action == 1 and window.buffered:
                n = rng.randint(1, window.buffered)
                granted_total += window.consumed(n)
                consumed_total += n
            elif action == 2:
                granted_total += window.flush()
            assert window.outstanding + window.buffered + unacknowledged(window) == size
            assert 0 <= window.buffered <= size
            assert 0 <= unacknowledged(window) < size // 4  # a full batch always goes out at once
            assert window.buffered == received_total - consumed_total
            # the peer never holds more credit than the initial window plus what was granted
            assert window.outstanding == DEFAULT_WINDOW + granted_total - received_total
