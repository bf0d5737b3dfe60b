"""`stoffelnet demo`: a multi-party exchange over the library, every message checked.

Each of N parties broadcasts R rounds of BYTES-sized messages (itself included) while clients send an input to
every party and get an answer back. Every message is checked for content, sender, order and exactly-once
delivery; the exit status says whether all checks passed. Over a network transport every party and client is its
own OS process on 127.0.0.1, with keys and configs made in a temporary folder (`deploy.make_deployment`), started
in random order; over loopback they share one process. (The MPC computation arrives with the demo issue.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import statistics
import sys
import time
from collections.abc import Sequence
from typing import TextIO

import attrs

from . import errors
from .testing import local_network

__all__ = ["DemoResult", "run_demo"]


async def run_processes(
    *,
    parties: int = 3,
    clients: int = 2,
    rounds: int = 100,
    size: int = 1024,
    transport: str = "quic",
    out: TextIO | None = None,
    timeout: float = 300.0,
    sizes: Sequence[int] | None = None,
) -> DemoResult:
    """The exchange with one OS process per member; a member that fails stops the others, and is named."""
    import json
    import random
    import tempfile
    from pathlib import Path

    from .deploy import make_deployment

    with tempfile.TemporaryDirectory(prefix="stoffelnet-demo-") as folder:
        t0 = time.perf_counter()
        deployment = make_deployment(
            Path(folder), parties=parties, clients=clients, transport=transport, base_port=_free_port_range(parties)
        )
        commands: list[tuple[str, list[str]]] = []
        for member in deployment.parties:
            commands.append(
                (
                    member.name,
                    [
                        "party",
                        str(member.config),
                        "--rounds",
                        str(rounds),
                        "--sizes",
                        ",".join(str(n) for n in (sizes or [size])),
                        "--clients",
                        str(clients),
                    ],
                )
            )
        for member in deployment.clients:
            commands.append((member.name, ["client", str(member.config), "--input", str(member.id + 1)]))
        random.shuffle(commands)  # parties start in any order: dialers retry until their peer listens
        procs = {
            name: await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "stoffelnet_core.runner",
                *args,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for name, args in commands
        }
        if out is not None:
            out.write(f"  started {len(procs)} processes: {', '.join(sorted(procs))}\n")
        results: dict[str, dict[str, object]] = {}
        failures: list[str] = []
        pending = {asyncio.ensure_future(_collect(name, proc)): name for name, proc in procs.items()}
        try:
            async with asyncio.timeout(timeout):
                while pending:
                    done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        name = pending.pop(task)
                        code, stdout, stderr = task.result()
                        try:
                            result = json.loads(stdout.strip().splitlines()[-1])
                        except (ValueError, IndexError):
                            result = {"ok": False, "failures": [f"no result; exit {code}: {stderr.strip()[-300:]}"]}
                        results[name] = result
                        if code != 0 or not result.get("ok"):
                            failures += [f"{name}: {f}" for f in result.get("failures", [])] or [f"{name}: exit {code}"]
                            for other in pending.values():  # one member failed: the computation cannot finish
                                with contextlib.suppress(ProcessLookupError):
                                    procs[other].terminate()
                        if out is not None:
                            out.write(f"  {name} finished: {'ok' if code == 0 else f'FAILED (exit {code})'}\n")
        except TimeoutError:
            failures.append(f"timed out after {timeout:.0f}s waiting for {', '.join(sorted(pending.values()))}")
        finally:
            for proc in procs.values():
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in procs.values()))
        elapsed = time.perf_counter() - t0
    party_results = [results.get(m.name, {}) for m in deployment.parties]
    latencies = [float(x) for r in party_results for x in r.get("latencies_s", [])]  # type: ignore[attr-defined]
    setups = [float(r["setup_s"]) for r in party_results if "setup_s" in r]  # type: ignore[arg-type]
    messages = sum(int(r.get("messages_received", 0)) for r in party_results)  # type: ignore[call-overload]
    del elapsed
    return DemoResult(
        parties,
        clients,
        rounds,
        size,
        transport,
        max(setups, default=0.0),
        tuple(latencies),
        messages,
        tuple(failures),
    )


async def _collect(name: str, proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    stdout, stderr = await proc.communicate()
    return proc.returncode or 0, stdout.decode(errors="replace"), stderr.decode(errors="replace")


def _free_port_range(count: int) -> int:
    """A base port with `count` consecutive ports free on 127.0.0.1 now (the OS may reuse them: rare, retried)."""
    import random
    import socket

    for _ in range(200):
        base = random.randint(20000, 60000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise errors.InitializationFailed(f"found no {count} consecutive free ports on 127.0.0.1")


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
        (
            "rounds/s",
            f"{len(lat) / total:.0f}" if total else "-",  # rounds of every party: count over summed time
        ),
        ("bytes sent per party", f"{result.rounds * result.size * result.parties}"),
        ("messages checked", str(result.messages)),
        ("check", "PASSED" if result.ok else f"FAILED ({len(result.failures)})"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out.write(f"  {key:<{width}}  {value}\n")
    for failure in result.failures[:20]:
        out.write(f"  ! {failure}\n")
