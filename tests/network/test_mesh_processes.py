"""A 4-party mesh as separate OS processes over each network transport, started in random order, every message
checked."""

from __future__ import annotations

import pytest

from stoffelnet_core.demo import run_processes

MIB = 1024 * 1024


@pytest.mark.parametrize("transport", ["tcp-tls", "quic"])
async def test_four_party_mesh_in_separate_processes_checks_every_message(transport: str) -> None:
    # Each process broadcasts 24 rounds (sizes cycle 64 B .. 1 MiB) and checks content, sender, order and
    # exactly-once for every message; a client gives each party an input and checks each answer.
    rounds = 24
    result = await run_processes(
        parties=4, clients=1, rounds=rounds, sizes=[64, 4096, 65536, MIB], transport=transport, timeout=120
    )
    assert result.ok, result.failures
    assert result.messages == 4 * 4 * rounds
    assert len(result.round_latencies_s) == 4 * rounds


async def test_a_run_that_cannot_finish_in_time_is_stopped_and_reported() -> None:
    # Every process is stopped and reaped (the test would hang otherwise), and the failure says what it waited for.
    result = await run_processes(parties=2, clients=0, rounds=5, size=64, transport="tcp-tls", timeout=0.001)
    assert not result.ok
    assert any("timed out" in f for f in result.failures)
