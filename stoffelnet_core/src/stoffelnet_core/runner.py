"""One member of the checked exchange, run from its own config: what `stoffelnet demo` starts per process.

    python -m stoffelnet_core.runner party party0.toml --rounds 50 --sizes 64,1024,1048576 --clients 2
    python -m stoffelnet_core.runner client client0.toml --input 7

A party serves every configured client (one input in, its digest back), then runs the rounds: each round it
broadcasts a message whose content is fixed by (sender, round, size) and takes one message from every party, in
order. Every message is checked for content, sender, order and exactly-once delivery. The result is one JSON line
on stdout; the exit status is 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import errors
from .config import Config, load_config
from .network import open_client, open_network

__all__ = ["expected_payload", "run_client", "run_party"]

_TIMEOUT = 60.0  # seconds any one wait may take before the run is declared failed


def expected_payload(sender: int, round_no: int, size: int) -> bytes:
    """The message `sender` broadcasts in round `round_no`: checkable by anyone, different for every round."""
    head = f"{sender}:{round_no}:".encode()
    block = hashlib.sha256(head).digest()
    body = (block * (size // len(block) + 1))[: max(0, size - len(head))]
    return (head + body)[:size] if size >= len(head) else head[:size]


def client_input(client: int, value: int) -> bytes:
    return f"input of client {client}: {value}".encode()


async def run_party(config: Config, *, rounds: int, sizes: Sequence[int], clients: int) -> dict[str, Any]:
    """Serve `clients` clients, then run `rounds` all-to-all rounds; returns what was measured and checked."""
    failures: list[str] = []
    latencies: list[float] = []
    started = time.perf_counter()
    async with open_network(config) as net:
        setup = time.perf_counter() - started
        me = net.local_party_id
        if clients:
            await net.wait_for_clients(clients, timeout=_TIMEOUT)
            for _ in range(clients):
                cid, data = await net.receive_from_client(timeout=_TIMEOUT)
                if not data.startswith(f"input of client {cid}: ".encode()):
                    failures.append(f"party {me}: client {cid} sent {data[:40]!r}")
                await net.send_to_client(cid, hashlib.sha256(data).digest())
        received = 0
        for r in range(rounds):
            size = sizes[r % len(sizes)]
            t0 = time.perf_counter()
            await net.broadcast(expected_payload(me, r, size), timeout=_TIMEOUT)
            for sender in range(net.party_count):
                got = await net.receive_from(sender, timeout=_TIMEOUT)
                received += 1
                if got != expected_payload(sender, r, size):
                    failures.append(f"party {me}: round {r}: message from {sender} is wrong ({len(got)} bytes)")
            latencies.append(time.perf_counter() - t0)
        try:
            extra = await net.receive(timeout=0.05)
            failures.append(f"party {me}: an extra message from party {extra[0]}")
        except errors.Timeout:
            pass
        stats = net.stats()
        sent = sum(p.bytes_sent for pid, p in stats.peers.items() if pid != me)
    return {
        "role": "party",
        "id": me,
        "ok": not failures,
        "failures": failures[:20],
        "setup_s": setup,
        "latencies_s": latencies,
        "messages_received": received,
        "bytes_sent": sent,
    }


async def run_client(config: Config, *, value: int) -> dict[str, Any]:
    """Send one input to every party and check every party's answer."""
    failures: list[str] = []
    async with open_client(config) as cli:
        data = client_input(cli.client_id, value)
        for party in cli.parties():
            await cli.send(party, data, timeout=_TIMEOUT)
        for party in cli.parties():
            answer = await cli.receive_from(party, timeout=_TIMEOUT)
            if answer != hashlib.sha256(data).digest():
                failures.append(f"client {cli.client_id}: wrong answer from party {party}")
    return {"role": "client", "id": config.client_id, "ok": not failures, "failures": failures}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stoffelnet_core.runner", description=__doc__)
    parser.add_argument("role", choices=("party", "client"))
    parser.add_argument("config")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--sizes", default="1024", help="comma-separated message sizes, cycled over the rounds")
    parser.add_argument("--clients", type=int, default=0, help="clients a party serves before the rounds")
    parser.add_argument("--input", type=int, default=0, help="a client's input value")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {args.role} %(name)s %(levelname)s %(message)s",
    )
    try:
        config = load_config(args.config)
        if args.role == "party":
            sizes = [int(s) for s in args.sizes.split(",") if s]
            result = asyncio.run(run_party(config, rounds=args.rounds, sizes=sizes, clients=args.clients))
        else:
            result = asyncio.run(run_client(config, value=args.input))
    except errors.StoffelnetError as exc:
        result = {"role": args.role, "ok": False, "failures": [f"{type(exc).__name__}: {exc}"]}
    except KeyboardInterrupt:
        return 130
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
