"""The demo's MPC computation over the library (`stoffelnet_core.computation`), every member in this process.

Clients Shamir-share their inputs; the parties add (locally) and multiply the first two (BGW: one all-to-all round)
and open both to every client, which checks that the parties' shares agree. Each test is bounded by `TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from stoffelnet_core import errors, mpc
from stoffelnet_core.computation import (
    MPC_STREAM,
    Results,
    client_compute,
    expected_results,
    multiply,
    open_to_clients,
    party_compute,
    receive_inputs,
)
from stoffelnet_core.network import Network
from stoffelnet_core.testing import crash, local_network

TIMEOUT = 20.0


@pytest.mark.parametrize(
    ("parties", "clients", "transport"),
    [
        (3, 2, "loopback"),
        (5, 3, "loopback"),
        (4, 2, "loopback"),  # t = 1 with a spare share
        (2, 2, "loopback"),  # t = 0
        (1, 2, "loopback"),
        (3, 1, "loopback"),  # one client: the product is its input
        (3, 2, "tcp-tls"),
    ],
)
async def test_every_client_gets_the_sum_and_the_product(parties: int, clients: int, transport: str) -> None:
    rng = random.Random(parties * 100 + clients)
    inputs = [rng.randrange(mpc.P) for _ in range(clients)]
    async with asyncio.timeout(TIMEOUT), local_network(parties, transport=transport, clients=clients) as lan:
        opened = await asyncio.gather(
            *(client_compute(cli, inputs[cli.client_id], timeout=TIMEOUT) for cli in lan.clients),
            *(party_compute(net, clients, timeout=TIMEOUT) for net in lan),
        )
    expected = expected_results(inputs)
    assert expected is not None
    assert expected.sum == sum(inputs) % mpc.P
    assert expected.product == (inputs[0] * inputs[1] if clients >= 2 else inputs[0]) % mpc.P
    assert opened[:clients] == [expected] * clients
    assert opened[clients:] == [None] * parties


async def test_small_numbers_give_the_plain_results() -> None:
    async with asyncio.timeout(TIMEOUT), local_network(3, clients=2) as lan:
        opened = await asyncio.gather(
            client_compute(lan.clients[0], 20, timeout=TIMEOUT),
            client_compute(lan.clients[1], 37, timeout=TIMEOUT),
            *(party_compute(net, 2, timeout=TIMEOUT) for net in lan),
        )
    assert opened[:2] == [Results(57, 740), Results(57, 740)]
    first = opened[0]
    assert isinstance(first, Results)
    assert (first.sum, first.product) == (57, 740)


async def test_the_computation_stays_on_its_stream() -> None:
    # An application's stream-0 traffic, sent before and after, is untouched and in order.
    async with asyncio.timeout(TIMEOUT), local_network(3, clients=2) as lan:
        await asyncio.gather(*(net.broadcast(b"before %d" % net.local_party_id) for net in lan))
        await asyncio.gather(
            *(client_compute(cli, 5, timeout=TIMEOUT) for cli in lan.clients),
            *(party_compute(net, 2, timeout=TIMEOUT) for net in lan),
        )
        await asyncio.gather(*(net.broadcast(b"after %d" % net.local_party_id) for net in lan))
        for net in lan:
            for sender in range(3):
                assert await net.receive_from(sender) == b"before %d" % sender
                assert await net.receive_from(sender) == b"after %d" % sender
            with pytest.raises(errors.Timeout):
                await net.receive(stream=MPC_STREAM, timeout=0)  # nothing of the computation is left over


async def test_no_clients_means_nothing_to_do() -> None:
    async with asyncio.timeout(TIMEOUT), local_network(3) as lan:
        await asyncio.gather(*(party_compute(net, 0, timeout=TIMEOUT) for net in lan))
    assert expected_results([]) is None


async def _dishonest(net: Network, clients: int, *, tamper: int) -> None:
    """Party `net` runs the honest protocol but adds `tamper` to its share of the sum it opens."""
    inputs = await receive_inputs(net, clients, timeout=TIMEOUT)
    product = await multiply(net, inputs[0], inputs[1], timeout=TIMEOUT)
    await open_to_clients(net, range(clients), [(sum(inputs) + tamper) % mpc.P, product], timeout=TIMEOUT)


async def test_a_wrong_result_share_is_detected_and_the_party_named_with_five_parties() -> None:
    async with asyncio.timeout(TIMEOUT), local_network(5, clients=2) as lan:
        outcomes = await asyncio.gather(
            *(client_compute(cli, 10 + cli.client_id, timeout=TIMEOUT) for cli in lan.clients),
            *(party_compute(net, 2, timeout=TIMEOUT) for net in lan[:4]),
            _dishonest(lan[4], 2, tamper=1),
            return_exceptions=True,
        )
    for outcome in outcomes[:2]:
        assert isinstance(outcome, errors.ComputationError), outcome
        assert outcome.member == "party 4"
        assert str(outcome).startswith("sum: the share from party 4 is not on the degree-2 polynomial")
    assert outcomes[2:] == [None] * 5


async def test_a_wrong_result_share_is_detected_with_three_parties() -> None:
    async with asyncio.timeout(TIMEOUT), local_network(3, clients=2) as lan:
        outcomes = await asyncio.gather(
            *(client_compute(cli, 3, timeout=TIMEOUT) for cli in lan.clients),
            *(party_compute(net, 2, timeout=TIMEOUT) for net in lan[:2]),
            _dishonest(lan[2], 2, tamper=mpc.P - 1),
            return_exceptions=True,
        )
    for outcome in outcomes[:2]:
        assert isinstance(outcome, errors.ComputationError), outcome
        assert outcome.member is None  # three shares of a degree-1 polynomial: one spare, enough to detect only
        assert "do not lie on one polynomial of degree 1" in str(outcome)


async def test_a_malformed_input_share_names_the_client() -> None:
    async with asyncio.timeout(TIMEOUT), local_network(3, clients=1) as lan:
        for party in range(3):
            await lan.clients[0].send(party, b"seven b", stream=MPC_STREAM)
        for net in lan:
            with pytest.raises(errors.ComputationError, match="client 0 sent 7 bytes") as caught:
                await receive_inputs(net, 1, timeout=TIMEOUT)
            assert caught.value.member == "client 0"


async def test_a_malformed_answer_names_the_party() -> None:
    async with asyncio.timeout(TIMEOUT), local_network(3, clients=1) as lan:

        async def parties() -> None:
            for net in lan:
                await receive_inputs(net, 1, timeout=TIMEOUT)
                answer = b"\x00" * 16 if net.local_party_id != 1 else b"\x00" * 15
                await net.send_to_client(0, answer, stream=MPC_STREAM)

        computing = client_compute(lan.clients[0], 1, timeout=TIMEOUT)
        outcome, _ = await asyncio.gather(computing, parties(), return_exceptions=True)
    assert isinstance(outcome, errors.ComputationError)
    assert outcome.member == "party 1"
    assert "party 1 sent 15 bytes where two field elements (16 bytes) were expected" in str(outcome)


async def test_a_lost_party_is_named() -> None:
    async with asyncio.timeout(TIMEOUT), local_network(3, clients=1, resume_ms=300) as lan:
        await crash(lan[2])  # gone for good: not back within resume_ms
        with pytest.raises(errors.ConnectionLost) as caught:
            await client_compute(lan.clients[0], 1, timeout=TIMEOUT)
        assert caught.value.peer == 2
        assert "party 2" in str(caught.value)


async def test_a_step_that_runs_out_of_time_says_which() -> None:
    async with asyncio.timeout(TIMEOUT), local_network(3, clients=1) as lan:
        with pytest.raises(errors.Timeout, match=r"client 0: computing with 3 parties: not done within 0.05s"):
            await client_compute(lan.clients[0], 1, timeout=0.05)  # no party computes: nobody answers
        with pytest.raises(errors.Timeout, match=r"party 0: waiting for the inputs of 2 clients"):
            await receive_inputs(lan[0], 2, timeout=0.05)  # client 1 does not exist: its input never comes
        with pytest.raises(errors.Timeout, match=r"party 0: waiting for 2 clients to connect and give their inputs"):
            await party_compute(lan[0], 2, client_timeout=0.05)


@pytest.mark.parametrize("value", [-1, mpc.P, 2**64])
async def test_an_input_outside_the_field_is_refused_before_anything_is_sent(value: int) -> None:
    async with asyncio.timeout(TIMEOUT), local_network(3, clients=1) as lan:
        with pytest.raises(errors.InvalidArgument, match="field element"):
            await client_compute(lan.clients[0], value)
        for net in lan:
            with pytest.raises(errors.Timeout):
                await net.receive_from_client(stream=MPC_STREAM, timeout=0)


async def test_party_compute_refuses_a_negative_client_count() -> None:
    async with asyncio.timeout(TIMEOUT), local_network(1) as lan:
        with pytest.raises(errors.InvalidArgument):
            await party_compute(lan[0], -1)
