"""The computation `stoffelnet demo`, `stoffelnet party` and `stoffelnet client` run: a small but real MPC over the
library, built from `stoffelnet_core.mpc` (Shamir sharing and BGW multiplication over ``P = 2**61 - 1``).

Clients ``0..M-1`` each hold a private input. Every client Shamir-shares its input (degree ``t = (n-1)//2``) and
sends party ``i`` its share. The parties compute, without ever seeing an input,

* the **sum** of all inputs: each party adds its shares (no communication);
* the **product** of the inputs of clients 0 and 1: one BGW multiplication, i.e. a local product (degree ``2t``),
  re-shared with degree ``t`` to every party (one all-to-all round) and recombined. With one client the product is
  that client's input; with no clients there is nothing to compute;

and open both to every client: each party sends each client its shares of the two results. A client checks that
the ``n`` shares of each result lie on one polynomial of degree ``t`` (`mpc.check_shares`; with ``n >= t + 3`` it
also names a party whose share is off) and reconstructs. Results are field elements: sums and products wrap
modulo ``P``.

A client knows only its own input, so it cannot check the results by itself. `stoffelnet demo` knows every input
and passes the expected values to each client (``--expect-sum``/``--expect-product``); `stoffelnet client` without
expectations just prints what was opened.

Messages (all on `MPC_STREAM`, so they never mix with an application's stream-0 traffic)::

    client -> party i     8 bytes    the client's share for party i
    party i -> party j    8 bytes    tagged RESHARE_TAG: party i's sub-share of its local product, for party j
    party i -> client     16 bytes   party i's share of the sum, then of the product

Each field element is 8 bytes big-endian. Security: passive adversary, at most ``t`` corrupted parties, private
channels (the transport's mutual TLS); the clients' check detects, it does not correct.

The party side is split into steps (`receive_inputs`, `multiply`, `open_to_clients`) that a protocol author can
compose differently; `party_compute` is their composition. Every step takes `timeout` (seconds, None: unbounded)
bounding the whole step and raises `errors.Timeout` when it runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import NamedTuple, TypeVar

from . import errors, mpc
from .errors import ComputationError
from .frames import Tag
from .network import Client, Network

__all__ = [
    "MPC_STREAM",
    "RESHARE_TAG",
    "ComputationError",
    "Results",
    "client_compute",
    "expected_results",
    "multiply",
    "open_to_clients",
    "party_compute",
    "receive_inputs",
]

log = logging.getLogger("stoffelnet.computation")

MPC_STREAM = 1
"""The stream every message of the computation travels on."""

RESHARE_TAG = b"stoffelnet/mpc/reshare"
"""The tag of the multiplication's all-to-all sub-shares (`multiply` takes another for a second multiplication)."""

_T = TypeVar("_T")


class Results(NamedTuple):
    """What a client learns: the sum of all inputs and the product of the first two, modulo `mpc.P`."""

    sum: int
    product: int


def expected_results(inputs: Sequence[int]) -> Results | None:
    """The results the computation opens for clients with `inputs` (by client id); None when there are no clients."""
    if not inputs:
        return None
    product = inputs[0] * inputs[1] if len(inputs) >= 2 else inputs[0]
    return Results(sum(inputs) % mpc.P, product % mpc.P)


# -- client side -------------------------------------------------------------------------------------------------
async def client_compute(
    cli: Client, value: int, *, timeout: float | None = None, rng: random.Random | None = None
) -> Results:
    """Give `value` (a field element) to the computation and return the opened results, checked for consistency.

    Raises `errors.InvalidArgument` for a value outside the field, `ComputationError` when a party's answer is
    malformed or the parties' shares disagree, `errors.Timeout`, or the connection's error (`ConnectionLost`,
    `StreamClosed`) naming the party.
    """
    parties = cli.parties()
    t = mpc.threshold(len(parties))
    shares = mpc.share(value, len(parties), t, rng)
    async with _step(f"client {cli.client_id}: computing with {len(parties)} parties", timeout):
        for party in parties:
            await cli.send(party, mpc.encode_element(shares[party]), stream=MPC_STREAM)
        log.debug("client %d: sent a share to each of %d parties", cli.client_id, len(parties))
        answers = await _all([cli.receive_from(party, stream=MPC_STREAM) for party in parties])
    sums: dict[int, int] = {}
    products: dict[int, int] = {}
    for party, data in zip(parties, answers, strict=True):
        sender = f"party {party}"
        if len(data) != 2 * mpc.ELEMENT_SIZE:
            raise ComputationError(
                f"{sender} sent {len(data)} bytes where two field elements ({2 * mpc.ELEMENT_SIZE} bytes) were "
                "expected",
                member=sender,
            )
        sums[party] = mpc.decode_element(data[: mpc.ELEMENT_SIZE], sender=sender)
        products[party] = mpc.decode_element(data[mpc.ELEMENT_SIZE :], sender=sender)
    results = Results(mpc.check_shares(sums, t, what="sum"), mpc.check_shares(products, t, what="product"))
    log.info("client %d: results opened and consistent across %d parties", cli.client_id, len(parties))
    return results


# -- party side --------------------------------------------------------------------------------------------------
async def party_compute(
    net: Network,
    clients: int,
    *,
    timeout: float | None = None,
    client_timeout: float | None = None,
    rng: random.Random | None = None,
) -> None:
    """This party's part of the computation for clients ``0..clients-1``; returns once every client was answered.

    Every party of the network must run it with the same `clients`. With no clients it returns at once.
    `client_timeout` bounds the wait for the clients to connect and send their inputs (None: clients come when they
    come, as a long-running party wants); `timeout` bounds each later step (the multiplication, the opening).
    """
    if not isinstance(clients, int) or isinstance(clients, bool) or clients < 0:
        raise errors.InvalidArgument(f"clients must be an int >= 0, got {clients!r:.40}")
    if clients == 0:
        return
    me = net.local_party_id
    async with _step(f"party {me}: waiting for {clients} clients to connect and give their inputs", client_timeout):
        await net.wait_for_clients(clients)
        inputs = await receive_inputs(net, clients)
    total = sum(inputs) % mpc.P  # linear: a sum of shares is a share of the sum
    product = await multiply(net, inputs[0], inputs[1], timeout=timeout, rng=rng) if clients >= 2 else inputs[0]
    await open_to_clients(net, range(clients), [total, product], timeout=timeout)
    log.info("party %d: served %d client%s", me, clients, "" if clients == 1 else "s")


async def receive_inputs(net: Network, clients: int, *, timeout: float | None = None) -> list[int]:
    """This party's share of the input of each client ``0..clients-1`` (by client id), as each client sent it."""
    me = net.local_party_id
    async with _step(f"party {me}: waiting for the inputs of {clients} clients", timeout):
        data = await _all([net.receive_from_client(client, stream=MPC_STREAM) for client in range(clients)])
    inputs = [mpc.decode_element(payload, sender=f"client {client}") for client, payload in data]
    log.debug("party %d: got a share from each of %d clients", me, clients)
    return inputs


async def multiply(
    net: Network,
    a: int,
    b: int,
    *,
    tag: Tag = RESHARE_TAG,
    timeout: float | None = None,
    rng: random.Random | None = None,
) -> int:
    """This party's degree-t share of ``a*b`` from its degree-t shares `a` and `b`: one BGW multiplication.

    Every party must call it at the same point with the same `tag` (use a fresh tag per multiplication). Needs
    ``n >= 2t + 1``, which ``t = (n-1)//2`` always gives. `mpc.bgw_multiply` is the same step in memory.
    """
    mpc.check_element(a, "a")
    mpc.check_element(b, "b")
    me = net.local_party_id
    parties = net.parties()
    t = mpc.threshold(len(parties))
    sub_shares = mpc.share(a * b % mpc.P, len(parties), t, rng)  # re-share the degree-2t local product
    async with _step(f"party {me}: multiplication (tag {tag!r})", timeout):
        for party in parties:
            await net.send(party, mpc.encode_element(sub_shares[party]), stream=MPC_STREAM, tag=tag)
        received = await _all([net.receive_from(party, stream=MPC_STREAM, tag=tag) for party in parties])
    values = [mpc.decode_element(data, sender=f"party {party}") for party, data in zip(parties, received, strict=True)]
    vector = mpc.recombination_vector(parties)
    return sum(weight * value for weight, value in zip(vector, values, strict=True)) % mpc.P


async def open_to_clients(
    net: Network, clients: Iterable[int], values: Sequence[int], *, timeout: float | None = None
) -> None:
    """Send this party's shares `values` (two field elements: sum, product) to each client in `clients`."""
    if len(values) != 2:
        raise errors.InvalidArgument(f"a client expects two values (sum, product), got {len(values)}")
    payload = b"".join(mpc.encode_element(value) for value in values)
    me = net.local_party_id
    async with _step(f"party {me}: opening the results to the clients", timeout):
        for client in clients:
            await net.send_to_client(client, payload, stream=MPC_STREAM)


# -- helpers -----------------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def _step(what: str, timeout: float | None) -> AsyncIterator[None]:
    """Bound a step by `timeout`; running out raises `errors.Timeout` saying which step."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except TimeoutError:
        raise errors.Timeout(f"{what}: not done within {timeout}s", timeout=timeout) from None


async def _all(waits: Sequence[Awaitable[_T]]) -> list[_T]:
    """Await all of `waits` concurrently; on the first failure cancel the rest and raise the most telling error.

    A lost connection explains more than anything that follows from it (a party that gave up and closed), so a
    `ConnectionLost` among the failures is raised in preference to the others.
    """
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # a no-op on finished tasks
        await asyncio.gather(*tasks, return_exceptions=True)
    failed = [exc for task in tasks if not task.cancelled() and (exc := task.exception()) is not None]
    if failed:
        lost = [exc for exc in failed if isinstance(exc, errors.ConnectionLost)]
        raise (lost or failed)[0]
    return [task.result() for task in tasks]
