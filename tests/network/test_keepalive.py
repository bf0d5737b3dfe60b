"""Keep-alives: a silent peer (no FIN, no RST) is detected, and a quiet but live one is kept."""

from __future__ import annotations

import asyncio

import pytest

from stoffelnet_core import errors
from stoffelnet_core.peer import ConnectionState
from stoffelnet_core.testing import local_network


async def test_a_peer_that_goes_silent_is_lost_within_three_intervals() -> None:
    async with local_network(3, keepalive_ms=100, resume_ms=0) as lan:
        # Party 1 stops hearing party 0 (its pipe holds party 0's bytes undelivered): no FIN, no RST, no error.
        lan[1].connection(0)._pipe.pause_reading()
        started = asyncio.get_running_loop().time()
        with pytest.raises(errors.ConnectionLost, match="party 0 was silent") as lost:
            await lan[1].receive_from(0, timeout=5)
        assert lost.value.peer == 0
        assert 0.25 <= asyncio.get_running_loop().time() - started < 2
        assert lan[1].connection(0).state is ConnectionState.DISCONNECTED
        await lan[1].send(2, b"others unaffected")
        assert await lan[2].receive_from(1, timeout=5) == b"others unaffected"


async def test_a_silent_connection_is_dropped_and_resumed_with_nothing_lost() -> None:
    async with local_network(2, keepalive_ms=100) as lan:
        await lan[0].send(1, b"before")
        assert await lan[1].receive_from(0, timeout=5) == b"before"
        stuck = lan[1].connection(0)._pipe
        stuck.pause_reading()  # party 1 stops hearing party 0: no FIN, no RST, no error
        for i in range(20):
            await lan[0].send(1, b"during %d" % i)  # held in the stuck pipe, then resent on the new one
        for i in range(20):
            assert await lan[1].receive_from(0, timeout=5) == b"during %d" % i
        assert lan[1].connection(0)._pipe is not stuck
        assert lan[1].stats().peers[0].reconnects == 1
        await lan[1].send(0, b"after")
        assert await lan[0].receive_from(1, timeout=5) == b"after"


async def test_quiet_connections_stay_up_on_keepalives() -> None:
    async with local_network(2, keepalive_ms=50) as lan:
        await asyncio.sleep(0.6)  # time passing is the point: twelve intervals with no application traffic
        assert lan[0].connection(1).state is ConnectionState.CONNECTED
        await lan[0].send(1, b"still here")
        assert await lan[1].receive_from(0, timeout=5) == b"still here"


@pytest.mark.parametrize("transport", ["tcp-tls", "quic"])
async def test_keepalives_over_network_transports(transport: str) -> None:
    async with local_network(2, transport=transport, keepalive_ms=50) as lan:
        await asyncio.sleep(0.4)
        await lan[0].send(1, b"still here")
        assert await lan[1].receive_from(0, timeout=5) == b"still here"
