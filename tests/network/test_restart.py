"""A party that comes back as a new process is reported, never silently mixed with its old session."""

from __future__ import annotations

import asyncio
import secrets

import attrs
import pytest

import stoffelnet_core as sn
from stoffelnet_core import errors
from stoffelnet_core.testing import crash
from stoffelnet_loopback import LoopbackTransport


def _configs(n: int) -> list[sn.Config]:
    host = f"restart-{secrets.token_hex(4)}"
    parties = tuple(sn.Node(sn.PartyId(i), sn.Address(host, 3000 + i)) for i in range(n))
    base = sn.Config(transport="loopback", party_id=0, parties=parties, max_retries=1, timeout_ms=2000)
    return [attrs.evolve(base, party_id=i) for i in range(n)]


def _network(config: sn.Config) -> sn.Network:
    return sn.Network(config, LoopbackTransport(sn.TransportContext()))


async def test_a_restarted_party_is_refused_and_reported_as_peer_restarted() -> None:
    configs = _configs(3)
    p0, first, p2 = (_network(c) for c in configs)
    second = _network(configs[1])
    try:
        await asyncio.wait_for(asyncio.gather(p0._start(), first._start(), p2._start()), 10)
        await first.send(2, b"from the first process")
        assert await p2.receive_from(1, timeout=5) == b"from the first process"
        # party 1's first process crashes: no Close, every connection cut, its listener gone
        await crash(first)
        # a new process for party 1 (a new session id) dials party 2 again: refused, and reported to party 2
        with pytest.raises(errors.InitializationFailed):
            await asyncio.wait_for(second._start(), 10)
        with pytest.raises(errors.PeerRestarted, match="party 1 restarted") as restarted:
            await p2.receive_from(1, timeout=5)
        assert restarted.value.peer == 1
        assert isinstance(restarted.value, errors.ConnectionLost)  # one handler catches both
        # the others are unaffected
        await p0.send(2, b"still fine")
        assert await p2.receive_from(0, timeout=5) == b"still fine"
    finally:
        await asyncio.gather(*(n.close() for n in (p0, first, p2, second)))
