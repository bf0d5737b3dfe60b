"""`stoffelnet demo`: a multi-party exchange over the library, every message checked.

Each of N parties broadcasts R rounds of BYTES-sized messages (itself included) while clients send an input to
every party and get an acknowledgement back. Every message is checked for content, sender, order and exactly-once
delivery; the exit status says whether all checks passed. (The MPC computation arrives with the demo issue.)
"""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import sys
import time
from typing import TextIO

import attrs

from . import errors
from .testing import local_network

__all__ = ["DemoResult", "run_demo"]


@attrs.frozen
class DemoResult:
    parties: int
    clients: int
    rounds: int
    size: int
    transport: str
    setup_s: float
    round_latencies_s: tuple[float, ...]
    messages: int
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failures


def _payload(sender: int, round_no: int, size: int) -> bytes:
    head = f"{sender}:{round_no}:".encode()
    seed = hashlib.sha256(head).digest()
    body = (seed * (size // len(seed) + 1))[: max(0, size - len(head))]
    return (head + body)[:size] if size >= len(head) else head


async def run_demo(
    *,
    parties: int = 3,
    clients: int = 2,
    rounds: int = 100,
    size: int = 1024,
    transport: str = "loopback",
    out: TextIO | None = None,
) -> DemoResult:
    """Run the exchange and return what was measured and checked."""
    failures: list[str] = []
    latencies: list[float] = []
    messages = 0
    t0 = time.perf_counter()
    async with local_network(parties, transport=transport, clients=clients) as lan:
        setup = time.perf_counter() - t0
        # clients: one input to every party, answered with its digest
        for cli in lan.clients:
            for p in range(parties):
                await cli.send(p, b"input from client %d" % cli.client_id)
        for net in lan:
            for _ in range(clients):
                cid, data = await net.receive_from_client(timeout=30)
                if data != b"input from client %d" % cid:
                    failures.append(f"party {net.local_party_id}: wrong input from client {cid}")
                await net.send_to_client(cid, hashlib.sha256(data).digest())
        for cli in lan.clients:
            for p in range(parties):
                answer = await cli.receive_from(p, timeout=30)
                if answer != hashlib.sha256(b"input from client %d" % cli.client_id).digest():
                    failures.append(f"client {cli.client_id}: wrong answer from party {p}")
        # parties: all-to-all rounds
        for r in range(rounds):
            start = time.perf_counter()
            await asyncio.gather(*(net.broadcast(_payload(net.local_party_id, r, size)) for net in lan))
            for net in lan:
                for sender in range(parties):
                    got = await net.receive_from(sender, timeout=30)
                    messages += 1
                    if got != _payload(sender, r, size):
                        failures.append(f"party {net.local_party_id}: round {r} message from {sender} is wrong")
            latencies.append(time.perf_counter() - start)
            if out is not None and (r + 1) % max(1, rounds // 20) == 0:
                done = (r + 1) * 30 // rounds
                out.write(f"\r  rounds [{'#' * done}{'.' * (30 - done)}] {r + 1}/{rounds}")
                out.flush()
        if out is not None:
            out.write("\n")
        for net in lan:
            try:
                extra = await net.receive(timeout=0.05)
                failures.append(f"party {net.local_party_id}: unexpected extra message from {extra[0]}")
            except errors.Timeout:
                pass
    return DemoResult(parties, clients, rounds, size, transport, setup, tuple(latencies), messages, tuple(failures))


def report(result: DemoResult, out: TextIO = sys.stdout) -> None:
    lat = sorted(result.round_latencies_s)
    total = sum(lat)
    rows = [
        ("transport", result.transport),
        ("parties / clients", f"{result.parties} / {result.clients}"),
        ("rounds x size", f"{result.rounds} x {result.size} B"),
        ("connection set-up", f"{result.setup_s * 1000:.1f} ms"),
        ("round latency median", f"{statistics.median(lat) * 1000:.3f} ms" if lat else "-"),
        (
            "round latency p99",
            f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000:.3f} ms" if lat else "-",
        ),
        ("rounds/s", f"{len(lat) / total:.0f}" if total else "-"),
        ("bytes sent per party", f"{result.rounds * result.size * result.parties}"),
        ("messages checked", str(result.messages)),
        ("check", "PASSED" if result.ok else f"FAILED ({len(result.failures)})"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out.write(f"  {key:<{width}}  {value}\n")
    for failure in result.failures[:20]:
        out.write(f"  ! {failure}\n")
