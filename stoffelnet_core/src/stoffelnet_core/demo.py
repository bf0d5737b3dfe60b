"""`stoffelnet demo`: a real MPC computation, then a checked all-to-all exchange, over the library.

Over a network transport every party and client is its own OS process on 127.0.0.1 (`run_processes`), with keys
and configs made in a temporary folder (`deploy.make_deployment`), started in random order; over loopback they
share one process (`run_demo`). Either way:

1. **The computation** (`computation`): client ``j`` has the input ``17 * (j + 1) + 3``; it Shamir-shares it to the
   parties, which compute the sum of all inputs (local additions) and the product of the first two (one BGW
   multiplication: an all-to-all round) and open both to every client. The demo knows every input, so it tells
   each client the plain results to expect and the client checks what was opened against them.
2. **The rounds**: each party broadcasts R rounds of BYTES-sized messages (itself included); every message is
   checked for content, sender, order and exactly-once delivery. Party 0 reports its progress (``progress R/N`` on
   stderr), drawn here as a bar.

At the end `report` prints a table: round latency (median, p99), rounds/s, bytes sent per party, connection
set-up time and the checks. The run is ok only if every check passed. When a member fails, the others get a few
seconds to notice and report on their own (a party that lost its connection to a crashed one names it), then every
process still running is stopped; the result names the member(s) that failed. Cancelling `run_processes` (Ctrl-C)
stops every process it started (SIGTERM, then SIGKILL after a few seconds) and reaps them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import signal
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import attrs

from . import computation, errors
from .computation import Results, expected_results
from .runner import BufferPeaks, expected_payload, spawn
from .testing import local_network

__all__ = ["DemoResult", "client_inputs", "report", "run_demo", "run_processes"]

_RESUME_MS = 3000  # local processes: a party not back within 3 s is not coming back (the report says so)
_GRACE = 5.0  # seconds the others get to finish (and name the culprit) after a member failed, before being stopped
_STOP_WAIT = 5.0  # seconds between SIGTERM and SIGKILL when stopping processes
_STDERR_LINES = 40  # lines of each process's stderr kept for the report


def client_inputs(clients: int) -> list[int]:
    """The demo's private inputs: client ``j`` has ``17 * (j + 1) + 3``."""
    return [17 * (j + 1) + 3 for j in range(clients)]


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
    mpc_check: str = "-"  # what the clients found: "PASSED (sum = ..., product = ...)", "FAILED ..." or "skipped ..."
    bytes_sent: tuple[int, ...] = ()  # by party: bytes sent to the other parties (computation and rounds)
    rounds_s: float = 0.0  # wall time of the rounds (the slowest party's)
    failed_members: tuple[str, ...] = ()  # the member(s) that caused the failure, as far as can be told
    rss_peak_kib: tuple[int, ...] = ()  # by party, over processes: each one's peak resident set size (VmHWM)
    buffers: tuple[BufferPeaks, ...] = ()  # by party, over processes: the most its peers' buffers held, its bounds

    @property
    def ok(self) -> bool:
        return not self.failures


# -- every member its own process --------------------------------------------------------------------------------
@attrs.define
class _Process:
    """One member's process and what it said."""

    name: str
    proc: asyncio.subprocess.Process
    stderr: collections.deque[str] = attrs.field(factory=lambda: collections.deque(maxlen=_STDERR_LINES))
    stdout: str = ""
    result: dict[str, Any] | None = None  # its JSON line
    stopped: bool = False  # the demo stopped it (another member had failed, or the demo was cancelled)
    killed: bool = False  # the demo killed it on purpose (`kill_after`): a simulated crash

    @property
    def code(self) -> int | None:
        return self.proc.returncode

    @property
    def ok(self) -> bool:
        return self.code == 0 and self.result is not None and bool(self.result.get("ok"))

    def describe_failure(self) -> list[str]:
        code = self.code
        if self.result is not None and self.result.get("failures"):
            return [f"{self.name}: {f}" for f in self.result["failures"]]
        if code is not None and code < 0:
            how = f"killed by {signal.Signals(-code).name}" + (" (simulated crash)" if self.killed else "")
        else:
            how = f"exited with status {code}"
        tail = " | ".join(line.strip() for line in list(self.stderr)[-3:] if line.strip())
        return [f"{self.name}: {how} before reporting a result" + (f": {tail[-300:]}" if tail else "")]


class _View:
    """Status lines and the progress bar on `out`; a line written while the bar is drawn goes below it."""

    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self._bar_open = False
        self._tty = out is not None and out.isatty()
        self._quarter = -1  # off a terminal the bar is a line per quarter of the rounds, not redrawn in place

    def line(self, text: str) -> None:
        if self.out is None:
            return
        if self._bar_open:
            self.out.write("\n")
            self._bar_open = False
        self.out.write(f"  {text}\n")
        self.out.flush()

    def bar(self, done: int, total: int, width: int = 30) -> None:
        if self.out is None or total <= 0:
            return
        filled = done * width // total
        drawn = f"rounds [{'#' * filled}{'.' * (width - filled)}] {done}/{total}"
        if not self._tty:
            quarter = done * 4 // total
            if quarter > self._quarter:
                self._quarter = quarter
                self.line(drawn)
            return
        self.out.write(f"\r  {drawn}")
        self._bar_open = done < total
        if not self._bar_open:
            self.out.write("\n")
        self.out.flush()


async def _watch(member: _Process, on_progress: Callable[[int, int], None]) -> None:
    """Read the process's stdout (its JSON line) and stderr (progress lines and logs) until it exits."""
    assert member.proc.stdout is not None
    assert member.proc.stderr is not None
    stderr = member.proc.stderr

    async def read_stderr() -> None:
        while True:
            try:
                raw = await stderr.readline()
            except (ValueError, asyncio.LimitOverrunError):  # a line longer than the reader's limit: take a piece
                raw = await stderr.read(65536)
            if not raw:
                return
            line = raw.decode(errors="replace")
            if line.startswith("progress "):
                done, _, total = line[len("progress ") :].strip().partition("/")
                if done.isdigit() and total.isdigit():
                    on_progress(int(done), int(total))
                    continue
            member.stderr.append(line)

    stdout, _ = await asyncio.gather(member.proc.stdout.read(), read_stderr())
    await member.proc.wait()
    member.stdout = stdout.decode(errors="replace")
    lines = member.stdout.strip().splitlines()
    with contextlib.suppress(ValueError, IndexError):
        result = json.loads(lines[-1])
        if isinstance(result, dict):
            member.result = result


def _signal(members: Sequence[_Process], *, kill: bool) -> None:
    for member in members:
        if member.proc.returncode is None:
            member.stopped = member.stopped or not member.killed
            with contextlib.suppress(ProcessLookupError):
                if kill:
                    member.proc.kill()
                else:
                    member.proc.terminate()


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
    kill_after: tuple[str, int] | None = None,
    grace: float = _GRACE,
    stall: tuple[str, int] | None = None,
    event_loop: str = "asyncio",
    settings: Mapping[str, Any] | None = None,
    read_pause: tuple[str, int] | None = None,
) -> DemoResult:
    """The computation and the rounds with one OS process per member; a member that fails is named.

    `settings`: more config keys for every member (e.g. ``send_buffer_bytes``). `stall` ``(member, ms)`` makes that
    party block its event loop `ms` after every round (as MPC code computing does); `read_pause` ``(member, ms)``
    makes it stop reading for `ms` at a third of the rounds while it broadcasts on (the runner's
    ``--read-pause-ms``). `kill_after` ``(member, k)`` simulates a crash for tests: SIGKILL `member` (e.g.
    ``"party1"``) once party 0 reported `k` rounds done. `grace`: seconds the others get to finish on their own
    after a failure.
    """
    import random
    import tempfile
    from pathlib import Path

    from .deploy import make_deployment

    inputs = client_inputs(clients)
    expect = expected_results(inputs)
    view = _View(out)
    failures: list[str] = []
    members: dict[str, _Process] = {}
    watchers: dict[asyncio.Task[None], str] = {}
    with tempfile.TemporaryDirectory(prefix="stoffelnet-demo-") as folder:
        deployment = make_deployment(
            Path(folder),
            parties=parties,
            clients=clients,
            transport=transport,
            base_port=_free_port_range(parties),
            settings={"resume_ms": _RESUME_MS, "event_loop": event_loop, **(settings or {})},
        )
        commands: list[tuple[str, list[str]]] = []
        size_list = ",".join(str(n) for n in (sizes or [size]))
        for member in deployment.parties:
            args = ["party", str(member.config), "--clients", str(clients), "--rounds", str(rounds)]
            args += ["--client-timeout", "60"]
            args += ["--sizes", size_list] + (["--progress"] if member.id == 0 else [])
            if stall is not None and stall[0] == member.name:
                args += ["--stall-ms", str(stall[1])]
            if read_pause is not None and read_pause[0] == member.name:
                args += ["--read-pause-ms", str(read_pause[1])]
            commands.append((member.name, args))
        for member in deployment.clients:
            args = ["client", str(member.config), "--input", str(inputs[member.id])]
            if expect is not None:
                args += ["--expect-sum", str(expect.sum), "--expect-product", str(expect.product)]
            commands.append((member.name, args))
        random.shuffle(commands)  # members start in any order: dialers retry until their peer listens

        def on_progress(done: int, total: int) -> None:
            view.bar(done, total)
            if kill_after is not None and done >= kill_after[1]:
                victim = members.get(kill_after[0])
                if victim is not None and victim.proc.returncode is None and not victim.killed:
                    victim.killed = True
                    victim.proc.kill()

        try:
            for name, args in commands:
                members[name] = _Process(name, await spawn(*args))
                watchers[asyncio.ensure_future(_watch(members[name], on_progress))] = name
            view.line(
                f"started {len(members)} processes: "
                + ", ".join(f"{name} (pid {members[name].proc.pid})" for name in sorted(members))
            )
            await _supervise(members, watchers, view, timeout=timeout, grace=grace)
        except TimeoutError:
            waiting = sorted(name for name, m in members.items() if m.proc.returncode is None)
            failures.append(f"timed out after {timeout:g}s waiting for {', '.join(waiting)}")
        finally:
            await _shutdown(members, watchers)
    return _summarise(deployment.parties, deployment.clients, members, failures, expect, rounds, size, transport)


async def _supervise(
    members: dict[str, _Process],
    watchers: dict[asyncio.Task[None], str],
    view: _View,
    *,
    timeout: float,
    grace: float,
) -> None:
    """Wait for every process; after the first failure give the others `grace` seconds, then stop them."""
    loop = asyncio.get_running_loop()
    pending = set(watchers)
    stop_at: float | None = None  # when the remaining processes get SIGTERM
    kill_at: float | None = None  # when they get SIGKILL
    async with asyncio.timeout(timeout):
        while pending:
            deadline = kill_at if kill_at is not None else stop_at
            wait = None if deadline is None else max(0.0, deadline - loop.time())
            done, pending = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                member = members[watchers[task]]
                if member.ok:
                    status = "ok"
                elif member.stopped:
                    status = "stopped"
                else:
                    status = f"FAILED (exit {member.code})"
                view.line(f"{member.name} finished: {status}")
                if not member.ok and stop_at is None:
                    stop_at = loop.time() + grace
            if not done and deadline is not None and loop.time() >= deadline:
                alive = [m for m in members.values() if m.proc.returncode is None]
                if kill_at is None:
                    view.line(f"stopping {', '.join(sorted(m.name for m in alive))}: another member failed")
                    _signal(alive, kill=False)
                    kill_at = loop.time() + _STOP_WAIT
                else:
                    _signal(alive, kill=True)
                    kill_at = loop.time() + _STOP_WAIT  # keep waiting: the watchers end once the pipes close


async def _shutdown(members: dict[str, _Process], watchers: dict[asyncio.Task[None], str]) -> None:
    """Stop whatever still runs (SIGTERM, then SIGKILL after a while) and reap every process and watcher.

    Runs on every exit, cancellation (Ctrl-C) included, and shields itself so that nothing is left behind.
    """
    alive = [m for m in members.values() if m.proc.returncode is None]
    if not alive and all(task.done() for task in watchers):
        return

    async def stop() -> None:
        _signal(alive, kill=False)
        try:
            async with asyncio.timeout(_STOP_WAIT):
                await asyncio.gather(*(m.proc.wait() for m in alive))
        except TimeoutError:
            _signal(alive, kill=True)
            await asyncio.gather(*(m.proc.wait() for m in alive))
        await asyncio.gather(*watchers, return_exceptions=True)

    reaping = asyncio.ensure_future(stop())
    try:
        await asyncio.shield(reaping)
    except asyncio.CancelledError:
        await reaping  # cancelled again (a second Ctrl-C): still reap the children before giving up
        raise


def _summarise(
    party_members: Sequence[Any],
    client_members: Sequence[Any],
    members: dict[str, _Process],
    failures: list[str],
    expect: Results | None,
    rounds: int,
    size: int,
    transport: str,
) -> DemoResult:
    order = [m.name for m in party_members] + [m.name for m in client_members]
    ran = [members[name] for name in order if name in members]
    failed = [m for m in ran if not m.ok and not m.stopped]  # stopped by the demo: a consequence, not a cause
    stopped = [m for m in ran if not m.ok and m.stopped]
    for member in failed:
        failures.extend(member.describe_failure())
    for member in stopped:  # what each was doing when stopped says whom it was still waiting for
        failures.extend(f"{line} (stopped by the demo)" for line in member.describe_failure())
    crashed = {m.name for m in failed if m.result is None}
    named = {peer for m in failed if m.result for peer in m.result.get("lost_peers", [])}
    culprits = [name for name in order if name in crashed or (name in named and not members[name].ok)]
    if not culprits:
        culprits = [m.name for m in failed if not (m.result or {}).get("lost_peers")] or [m.name for m in failed]
    if not culprits:  # nobody failed on their own, the demo stopped them (a timeout): whom were they waiting for?
        awaited = {(m.result or {}).get("waiting_for") for m in stopped} - {None}
        culprits = [name for name in order if name in awaited]
    party_results = [members[m.name].result or {} for m in party_members if m.name in members]
    client_results = [members[m.name].result or {} for m in client_members if m.name in members]
    latencies = tuple(float(x) for r in party_results for x in r.get("latencies_s", []))
    return DemoResult(
        len(party_members),
        len(client_members),
        rounds,
        size,
        transport,
        max((float(r["setup_s"]) for r in party_results if "setup_s" in r), default=0.0),
        latencies,
        sum(int(r.get("messages_received", 0)) for r in party_results),
        tuple(failures),
        mpc_check=_mpc_check(expect, client_results),
        bytes_sent=tuple(int(r["bytes_sent"]) for r in party_results if "bytes_sent" in r),
        rounds_s=max((float(r.get("rounds_s", 0.0)) for r in party_results), default=0.0),
        failed_members=tuple(culprits),
        rss_peak_kib=tuple(int(r["rss_peak_kib"]) for r in party_results if r.get("rss_peak_kib") is not None),
        buffers=tuple(BufferPeaks.from_json(r["buffers"]) for r in party_results if r.get("buffers")),
    )


def _mpc_check(expect: Results | None, client_results: Sequence[dict[str, Any]]) -> str:
    if expect is None:
        return "skipped (no clients)"
    checked = [r for r in client_results if r.get("checked") and r.get("ok")]
    if len(checked) == len(client_results):
        return f"PASSED (sum = {expect.sum}, product = {expect.product}; {len(checked)} clients checked)"
    return f"FAILED ({len(client_results) - len(checked)} of {len(client_results)} clients could not confirm)"


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


# -- everything in this process (loopback) -----------------------------------------------------------------------
async def run_demo(
    *,
    parties: int = 3,
    clients: int = 2,
    rounds: int = 100,
    size: int = 1024,
    transport: str = "loopback",
    out: TextIO | None = None,
) -> DemoResult:
    """The computation and the rounds with every member in this process; returns what was measured and checked."""
    failures: list[str] = []
    latencies: list[float] = []
    messages = 0
    view = _View(out)
    inputs = client_inputs(clients)
    expect = expected_results(inputs)
    t0 = time.perf_counter()
    async with local_network(parties, transport=transport, clients=clients) as lan:
        setup = time.perf_counter() - t0
        # the computation: every party and client at once
        jobs = [computation.party_compute(net, clients, timeout=30, client_timeout=30) for net in lan]
        opened = await asyncio.gather(
            *(computation.client_compute(cli, inputs[cli.client_id], timeout=30) for cli in lan.clients),
            *jobs,
            return_exceptions=True,
        )
        confirmed = 0
        for j, got in enumerate(opened[: len(lan.clients)]):
            if isinstance(got, BaseException):
                failures.append(f"client {j}: {type(got).__name__}: {got}")
            elif got != expect:
                failures.append(f"client {j}: opened {got}, expected {expect}")
            else:
                confirmed += 1
        for i, outcome in enumerate(opened[len(lan.clients) :]):
            if isinstance(outcome, BaseException):
                failures.append(f"party {i}: {type(outcome).__name__}: {outcome}")
        # the rounds
        every = max(1, rounds // 100)
        for r in range(rounds):
            start = time.perf_counter()
            await asyncio.gather(*(net.broadcast(expected_payload(net.local_party_id, r, size)) for net in lan))
            for net in lan:
                for sender in range(parties):
                    got_bytes = await net.receive_from(sender, timeout=30)
                    messages += 1
                    if got_bytes != expected_payload(sender, r, size):
                        failures.append(f"party {net.local_party_id}: round {r} message from {sender} is wrong")
            latencies.append(time.perf_counter() - start)
            if (r + 1) % every == 0 or r + 1 == rounds:
                view.bar(r + 1, rounds)
        rounds_s = sum(latencies)
        for net in lan:
            try:
                extra = await net.receive(timeout=0.05)
                failures.append(f"party {net.local_party_id}: unexpected extra message from {extra[0]}")
            except errors.Timeout:
                pass
        sent = tuple(_sent(net) for net in lan)
    if expect is None:
        mpc = "skipped (no clients)"
    elif confirmed == clients:
        mpc = f"PASSED (sum = {expect.sum}, product = {expect.product}; {confirmed} clients checked)"
    else:
        mpc = f"FAILED ({clients - confirmed} of {clients} clients could not confirm)"
    return DemoResult(
        parties,
        clients,
        rounds,
        size,
        transport,
        setup,
        tuple(latencies),
        messages,
        tuple(failures),
        mpc_check=mpc,
        bytes_sent=sent,
        rounds_s=rounds_s,
    )


def _sent(net: Any) -> int:
    me = net.local_party_id
    return sum(p.bytes_sent for pid, p in net.stats().peers.items() if pid != me)


# -- the table ---------------------------------------------------------------------------------------------------
def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def report(result: DemoResult, out: TextIO | None = None) -> None:
    """The end-of-run table (and up to 20 failures) on `out` (default: the current `sys.stdout`)."""
    out = sys.stdout if out is None else out
    lat = sorted(result.round_latencies_s)
    if result.rounds_s > 0 and result.rounds:
        rate = f"{result.rounds / result.rounds_s:.0f}"
    elif lat:
        rate = f"{len(lat) / sum(lat):.0f}" if sum(lat) else "-"
    else:
        rate = "-"
    sent = result.bytes_sent
    rows = [
        ("transport", result.transport),
        ("parties / clients", f"{result.parties} / {result.clients}"),
        ("rounds x size", f"{result.rounds} x {result.size} B"),
        ("connection set-up", f"{result.setup_s * 1000:.1f} ms" if result.setup_s else "-"),
        ("round latency median", f"{statistics.median(lat) * 1000:.3f} ms" if lat else "-"),
        ("round latency p99", f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000:.3f} ms" if lat else "-"),
        ("rounds/s", rate),
        (
            "bytes sent per party",
            f"{_bytes(sum(sent) / len(sent))} (max {_bytes(max(sent))})" if sent else "-",
        ),
        ("messages checked", str(result.messages)),
        ("mpc check", result.mpc_check),
        ("check", "PASSED" if result.ok else f"FAILED ({len(result.failures)})"),
    ]
    if result.failed_members:
        rows.append(("failed member", ", ".join(result.failed_members)))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out.write(f"  {key:<{width}}  {value}\n")
    for failure in result.failures[:20]:
        out.write(f"  ! {failure}\n")
