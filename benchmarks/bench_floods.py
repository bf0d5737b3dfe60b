"""Slow-loris and connection floods against one party, per transport, measured: the table of docs/RELIABILITY.md.

    python benchmarks/bench_floods.py [--quick] [--transport tcp-tls|quic] [--engine aioquic|qh3]

The victim is `testing.hostile`'s: three parties and a client on 127.0.0.1, in this process, with the shipped
timeouts (each transport's ``handshake_timeout_ms`` of 10 s and ``max_pending_handshakes`` of 256, core's
``timeout_ms`` of 30 s and ``keepalive_ms`` of 5 s, so a connection silent for 15 s is dropped even before its
Handshake); ``--quick`` shortens the first two to 2 s / 3 s and runs a third of the attempts. The attackers run in a
child process (the attack tooling of tests/tcp_tls and tests/quic), so the descriptors and memory measured are the
victim's own. Each scenario attacks party 1 and is measured from a fresh baseline:

- *pending*: the peaks of handshakes in progress at the listener (tcp-tls: TLS handshakes; quic: connections without
  a completed QUIC handshake that the server holds, counting refused ones still in their closing period) and of
  connections core holds while awaiting their Handshake envelope (sampled every 10 ms);
- *fds*, *RSS*: open descriptors and resident memory of this process before, at the peak, and after (after: once
  the listener dropped every attacker and the descriptors are back, then garbage collected and glibc's free pages
  returned: `hostile.release_memory`); *blocks*: live interpreter memory blocks after minus before (a leak shows
  here whatever the allocator keeps);
- *held*: the longest any attacker connection was kept open by the listener (slow-loris: its timeout);
- *recover*: seconds from the attack's end until the descriptors and the listener's tables are back to baseline;
- *legit*: whether a legitimate client (the allowlisted spare) connected to all three parties and round-tripped a
  message with each while the slow-loris hung (or halfway through the flood), and how long that took.

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the suites' attack tooling, as pytest does

from quic import test_floods as quic_floods
from quic.conftest import RawQuicPeer, half_open
from tcp_tls import test_floods as tcp_floods
from tcp_tls.conftest import ALPN_CLIENT, client_context

from stoffelnet_core.config import TLSConfig
from stoffelnet_core.ids import Address
from stoffelnet_core.network import Network
from stoffelnet_core.testing.hostile import (
    SPARE_CLIENT,
    MiB,
    ResourceMonitor,
    Resources,
    TcpAttackers,
    Victim,
    assert_accepts_fresh_client,
    handshake_frame,
    make_identity,
    open_fds,
    start_victim,
    tls_client_hello,
)
from stoffelnet_quic.options import QuicOptions
from stoffelnet_tcp_tls.options import TcpTlsOptions
from stoffelnet_tcp_tls.transport import TcpTlsListener

TARGET = 1
CONCURRENT = 50  # flood attempts in flight at once
RECOVER_DEADLINE = 60.0  # seconds: a victim not back to baseline by then is reported as not recovered


class Job(NamedTuple):
    """What the attacker process does (picklable)."""

    scenario: str
    attempts: int
    host: str
    port: int
    hold: float  # seconds the victim is expected to hold a slow-loris connection
    party_certs: list[Path]
    client_tls: TLSConfig  # the allowlisted spare client's key (the only way past mutual TLS)
    fingerprint: str  # the attacked party's pinned key
    stranger: TLSConfig  # a key nobody pinned
    initials: int = 0  # bare QUIC Initials besides the flood of clients


class Row(NamedTuple):
    transport: str
    scenario: str
    attempts: str
    pending: str
    fds: str
    rss: str
    blocks: str
    held: str
    recover: str
    legit: str


# -- the attacker process ---------------------------------------------------------------------------------------------
def _attacker(conn: Connection, job: Job) -> None:
    try:
        asyncio.run(_attack(conn, job))
    except BaseException as exc:  # the parent reports it in the table
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _held(values: list[float]) -> dict[str, float]:
    return {"held_max": max(values, default=0.0), "held_median": statistics.median(values) if values else 0.0}


async def _attack(conn: Connection, job: Job) -> None:
    address = Address(job.host, job.port)
    n = job.attempts
    if job.scenario == "tcp-slow-loris":
        hello = tls_client_hello()
        async with TcpAttackers(address) as attackers:
            await attackers.open(n // 2)
            await attackers.open(n - n // 2, hello[: len(hello) // 2])
            conn.send(("ready", {}))
            await attackers.wait_ended(job.hold + 30)
            conn.send(("done", _held([attackers.ended[i] - t for i, t in enumerate(attackers.opened)])))
    elif job.scenario == "tcp-no-handshake":
        ctx = client_context(job.client_tls.cert, job.client_tls.key, job.party_certs, ALPN_CLIENT)
        frame = handshake_frame("client", SPARE_CLIENT)
        async with TcpAttackers(address) as attackers:
            await attackers.open(n // 2, tls=ctx)
            await attackers.open(n - n // 2, frame[: len(frame) // 2], tls=ctx)
            conn.send(("ready", {}))
            await attackers.wait_ended(job.hold + 30)
            conn.send(("done", _held([attackers.ended[i] - t for i, t in enumerate(attackers.opened)])))
    elif job.scenario == "tcp-flood":
        kinds = itertools.islice(itertools.cycle(tcp_floods.KINDS), n)
        failed = await _flood(
            conn, n, [tcp_floods.flood_attempt(k, address, job.party_certs, job.stranger) for k in kinds]
        )
        conn.send(("done", {"failed": float(failed)}))
    elif job.scenario == "quic-half-open":
        async with quic_floods.HalfOpenQuic.running(address) as half_open_quic:
            await half_open_quic.open(n, deadline=120)
            conn.send(("ready", {}))
            await half_open_quic.wait_ended(job.hold + 30)
            conn.send(("done", _held(half_open_quic.held_for())))
    elif job.scenario == "quic-no-handshake":
        peers: list[tuple[RawQuicPeer, float]] = []
        try:
            await quic_floods.open_silent_peers(address, n, peers)
            conn.send(("ready", {}))
            ends = await asyncio.gather(*(quic_floods.held_until_closed(p, job.hold + 30) for p, _ in peers))
            conn.send(("done", _held([end - opened for end, (_, opened) in zip(ends, peers, strict=True)])))
        finally:
            await asyncio.gather(*(peer.close() for peer, _ in peers))
    elif job.scenario == "quic-flood":
        kinds = itertools.islice(itertools.cycle(quic_floods.KINDS), n)
        async with quic_floods.HalfOpenQuic.running(address, complete_retry=False) as initials:
            attempts = [quic_floods.flood_attempt(k, address, job.fingerprint, job.stranger) for k in kinds]
            bare = asyncio.ensure_future(initials.open(job.initials, deadline=120))
            failed = await _flood(conn, n, attempts)
            await bare
        conn.send(("done", {"failed": float(failed)}))
    else:
        raise ValueError(job.scenario)


async def _flood(conn: Connection, n: int, attempts: list[Any]) -> int:
    """Run the attempts, `CONCURRENT` at a time; says "half" halfway; returns how many failed unexpectedly."""
    slots = asyncio.Semaphore(CONCURRENT)
    finished = 0
    failed = 0

    async def one(attempt: Any) -> None:
        nonlocal finished, failed
        async with slots:
            try:
                await attempt
            except Exception:  # refused in a way the attempt did not expect: counted, not fatal
                failed += 1
        finished += 1
        if finished == n // 2:
            conn.send(("half", {}))

    await asyncio.gather(*(one(a) for a in attempts))
    return failed


# -- the victim's side ------------------------------------------------------------------------------------------------
async def _legit(v: Victim) -> str:
    """Time a legitimate client's connect and round trip with every party, now."""
    started = time.perf_counter()
    try:
        await assert_accepts_fresh_client(v)
    except Exception as exc:
        return f"**no** ({type(exc).__name__}, after {time.perf_counter() - started:.1f} s)"
    return f"yes, {(time.perf_counter() - started) * 1000:.0f} ms"


async def _poll(check: Callable[[], bool], deadline: float) -> float | None:
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > deadline:
            return None
        await asyncio.sleep(0.02)
    return time.perf_counter() - started


def _handshakes(net: Network, transport: str) -> int:
    if transport == "tcp-tls":
        listener = net._listener
        assert isinstance(listener, TcpTlsListener)
        return len(listener._pending)
    return half_open(net)


def _live_quic(net: Network) -> int:
    return quic_floods.live_connections(net)


async def run_scenario(v: Victim, transport: str, label: str, job: Job) -> Row:
    party = v.parties[TARGET]
    loop = asyncio.get_running_loop()
    tasks = len(party._tasks)  # dials and such; each accepted connection adds one until its Handshake is checked
    live = _live_quic(party) if transport == "quic" else 0
    before = Resources.now()
    legit = "-"
    info: dict[str, float] = {}
    error = ""
    recover: float | None = None
    ctx = multiprocessing.get_context("spawn")
    receiving, sending = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_attacker, args=(sending, job), daemon=True)
    async with ResourceMonitor(
        handshakes=lambda: _handshakes(party, transport), awaiting=lambda: len(party._tasks) - tasks
    ) as monitor:
        process.start()
        sending.close()
        while True:
            try:
                kind, payload = await loop.run_in_executor(None, receiving.recv)
            except EOFError:
                kind, payload = "error", f"the attacker process died (exit code {process.exitcode})"
            if kind in ("ready", "half"):
                legit = await _legit(v)
            elif kind == "done":
                info = payload
                break
            else:
                error = str(payload)
                break
        ended = time.perf_counter()
        await loop.run_in_executor(None, process.join)
        process.close()  # its sentinel descriptor
        receiving.close()

        def back() -> bool:
            Resources.now()  # a garbage collection first
            quic_back = transport != "quic" or (half_open(party) == 0 and _live_quic(party) <= live)
            return open_fds() <= before.fds and _handshakes(party, transport) == 0 and quic_back

        if await _poll(back, RECOVER_DEADLINE) is not None:
            recover = time.perf_counter() - ended
    after = Resources.now()
    peak = monitor.peak
    if error:
        legit = f"{legit}; attacker: {error[:80]}"
    return Row(
        transport,
        label,
        f"{job.attempts}"
        + (f" + {job.initials} Initials" if job.initials else "")
        + (f" ({info['failed']:.0f} failed on the attacker's side)" if info.get("failed") else ""),
        f"{monitor.peaks['handshakes']} / {monitor.peaks['awaiting']}",
        f"{before.fds} / {peak.fds} / {after.fds}",
        f"{before.rss / MiB:.0f} / {peak.rss / MiB:.0f} / {after.rss / MiB:.0f}",
        f"{after.blocks - before.blocks:+d}",
        f"{info['held_max']:.1f}" if "held_max" in info else "-",
        f"{recover:.2f}" if recover is not None else f"**not in {RECOVER_DEADLINE:.0f} s**",
        legit,
    )


async def _warm_up() -> None:
    """Start what the first scenario would otherwise start inside its measurement and keep: multiprocessing's
    resource tracker (a process and a pipe) and the loop's default executor."""
    await asyncio.get_running_loop().run_in_executor(None, resource_tracker.ensure_running)


async def bench_transport(transport: str, engine: str, quick: bool, folder: Path) -> list[Row]:
    scale = 3 if quick else 1
    defaults = TcpTlsOptions() if transport == "tcp-tls" else QuicOptions()
    handshake_ms = 2000 if quick else defaults.handshake_timeout_ms
    timeout_ms = 3000 if quick else 30_000
    options: dict[str, dict[str, Any]] = {transport: {"handshake_timeout_ms": handshake_ms}}
    if transport == "quic":
        options[transport]["engine"] = engine
    stranger = make_identity(folder, f"stranger-{transport}")
    rows: list[Row] = []
    async with start_victim(folder / transport, transport, transport_options=options, timeout_ms=timeout_ms) as v:
        address = v.address(TARGET)

        def job(scenario: str, attempts: int, hold_ms: int, initials: int = 0) -> Job:
            return Job(
                scenario,
                attempts // scale,
                address.host,
                address.port,
                hold_ms / 1000,
                v.party_certs,
                v.client_tls(SPARE_CLIENT),
                v.fingerprint(TARGET),
                stranger,
                initials // scale,
            )

        if transport == "tcp-tls":
            cases = [
                ("slow-loris: TCP silent / half a ClientHello", job("tcp-slow-loris", 1200, handshake_ms)),
                ("slow-loris: TLS done (pinned key), no Handshake", job("tcp-no-handshake", 600, timeout_ms)),
                ("flood: not TLS, no cert, stranger's cert, reset", job("tcp-flood", 3000, 0)),
            ]
        else:
            cases = [
                ("slow-loris: QUIC handshake never completed", job("quic-half-open", 1200, handshake_ms)),
                ("slow-loris: QUIC done (no key needed), no Handshake", job("quic-no-handshake", 600, timeout_ms)),
                (
                    "flood: garbage, no proof, stranger's proof, hang-up",
                    job("quic-flood", 1500, 0, initials=6000),
                ),
            ]
        for label, case in cases:
            print(f"  {transport}: {label} ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            rows.append(await run_scenario(v, transport, label, case))
            print(f"    {time.perf_counter() - started:.1f} s: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def print_table(rows: list[Row], header: str) -> None:
    print(header)
    print()
    titles = (
        "transport",
        "scenario",
        "attempts",
        "peak pending (handshakes / awaiting Handshake)",
        "fds before / peak / after",
        "RSS MiB before / peak / after",
        "live blocks after",
        "held (s)",
        "recover (s)",
        "legit client during the attack",
    )
    print("| " + " | ".join(titles) + " |")
    print("|" + "---|" * len(titles))
    for row in rows:
        print("| " + " | ".join(row) + " |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s / 3 s timeouts and a third of the attempts")
    parser.add_argument("--transport", choices=["tcp-tls", "quic"], action="append")
    parser.add_argument("--engine", default="aioquic", choices=["aioquic", "qh3"], help="the quic victim's engine")
    args = parser.parse_args()
    logging.getLogger("stoffelnet").setLevel(logging.ERROR)  # every refusal is a warning: thousands of them
    transports = args.transport or ["tcp-tls", "quic"]
    rows: list[Row] = []
    started = time.perf_counter()
    await _warm_up()
    with tempfile.TemporaryDirectory(prefix="stoffelnet-floods-") as folder:
        for transport in transports:
            rows += await bench_transport(transport, args.engine, args.quick, Path(folder))
    timeouts = (
        "handshake_timeout_ms 2 s, timeout_ms 3 s"
        if args.quick
        else "handshake_timeout_ms 10 s, timeout_ms 30 s, keepalive_ms 5 s (the defaults)"
    )
    header = (
        f"Python {platform.python_version()}, {os.cpu_count()} cores, quic engine {args.engine}, {timeouts}, "
        f"max_pending_handshakes 256; {time.perf_counter() - started:.0f} s in all"
    )
    print_table(rows, header)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
