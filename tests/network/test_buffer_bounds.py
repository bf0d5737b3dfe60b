"""Issue "Memory": the bytes buffered per peer stay within the configured bounds, in a real multi-process run.

Every party samples its peer connections' three buffers (send, receive, unacknowledged) during the run and
reports the most each held (`runner.BufferPeaks`); `runner.buffer_allowance` is the rule they are held to, the
same one `stoffelnet bench` uses for its ``max ... per peer`` rows.
"""

from __future__ import annotations

import pytest

from stoffelnet_core import bench
from stoffelnet_core.demo import run_processes
from stoffelnet_core.runner import BUFFER_KINDS, MESSAGE_OVERHEAD, BufferPeaks, buffer_allowance

KIB = 1024
BOUNDS = {"send_buffer_bytes": 64 * KIB, "receive_window_bytes": 64 * KIB, "resend_buffer_bytes": 128 * KIB}


async def test_buffers_per_peer_stay_within_the_configured_bounds_when_a_reader_stops() -> None:
    # 3 parties, each its own process over tcp-tls, broadcast 16 KiB rounds; party 2 stops reading for 300 ms at
    # round 20 and broadcasts ahead meanwhile. Its window from each peer fills, their send queues to it fill behind,
    # and what they sent waits for its acks: every bound is reached, none may be overrun by more than the rule's
    # one message. (The resend bound, 128 KiB, is below send queue + window, so it is the one that stops senders.)
    size, rounds = 16 * KIB, 60
    result = await run_processes(
        parties=3,
        clients=0,
        rounds=rounds,
        size=size,
        transport="tcp-tls",
        timeout=60,
        settings=BOUNDS,
        read_pause=("party2", 300),
    )
    assert result.ok, result.failures
    assert len(result.buffers) == 3
    for party, peaks in enumerate(result.buffers):
        assert peaks.largest_message == size
        assert (peaks.send_bound, peaks.receive_bound, peaks.resend_bound) == (64 * KIB, 64 * KIB, 128 * KIB)
        assert peaks.samples >= rounds, peaks  # one per round at least, besides the timer's
        assert peaks.violations() == [], f"party {party}: {peaks}"
        assert min(peaks.send, peaks.receive, peaks.unacknowledged) > 0, f"party {party}: {peaks}"
    worst = result.buffers[0].merged(result.buffers[1]).merged(result.buffers[2])
    for kind in BUFFER_KINDS:  # not vacuous: the buffers really filled towards their bounds
        assert worst.peak(kind) > worst.bound(kind) // 2, (kind, worst)
    rows = bench.buffer_rows("tcp-tls", 3, worst)
    assert [row.case for row in rows] == [
        "max send buffer per peer, 3 procs",
        "max receive buffer per peer, 3 procs",
        "max unacknowledged per peer, 3 procs",
    ]
    assert all(row.target is not None and row.target.met(row.value, row.ratio) for row in rows), rows


def test_the_rule_is_the_bound_plus_one_largest_message_and_its_framing() -> None:
    assert MESSAGE_OVERHEAD == 49  # frame head (length prefix and envelope) <= 40, mux header 9
    assert buffer_allowance("send", 65536, 16384) == 65536 + 16384 + 49
    assert buffer_allowance("unacknowledged", 131072, 0) == 131072 + 49
    assert buffer_allowance("receive", 4096, 100) == 64 * KIB + 100 + 49  # the window is never below 64 KiB
    with pytest.raises(ValueError, match="kind"):
        buffer_allowance("inbox", 1, 1)
    peaks = BufferPeaks(65536 + 16384 + 50, 1, 1, 65536, 65536, 131072, 16384, 1)
    assert [line.split()[0] for line in peaks.violations()] == ["send"]
    assert BufferPeaks.from_json(peaks.as_json()) == peaks
    send, receive, _ = bench.buffer_rows("quic", 8, peaks)
    assert send.target is not None
    assert not send.target.met(send.value, send.ratio)
    assert send.target.text(send.unit) == "<= 64.0 KiB + 1 msg"
    assert receive.target is not None
    assert receive.target.met(receive.value, receive.ratio)
    assert (send.unit, send.baseline, send.ratio, send.better) == ("KiB", None, None, "lower")
