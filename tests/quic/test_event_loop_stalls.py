"""A party whose event loop blocks for 200 ms after every round loses no message and no connection over QUIC."""

from __future__ import annotations

import pytest

from stoffelnet_core.demo import run_processes


@pytest.mark.parametrize("transport", ["quic", "tcp-tls"])
async def test_a_party_blocking_its_loop_200_ms_per_round_loses_nothing(transport: str) -> None:
    rounds = 15
    result = await run_processes(
        parties=3, clients=1, rounds=rounds, size=2048, transport=transport, stall=("party1", 200), timeout=120
    )
    assert result.ok, result.failures
    assert result.messages == 3 * 3 * rounds  # every message of every round, checked by every party
