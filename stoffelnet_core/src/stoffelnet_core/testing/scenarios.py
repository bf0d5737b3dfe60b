"""Fault scenarios across real processes: parties as separate OS processes behind chaos proxies, every message checked.

A scenario starts one ``python -m stoffelnet_core.runner party`` process per party. Each runs all-to-all broadcast
rounds and checks every message it receives (content, sender, order, exactly once: a lost message stalls its
round, a duplicate or reordered one fails the content check or shows up as an extra message at the end). The
parties reach each other through `testing.chaos` proxies (their ``address`` is the proxy, their ``listen`` the real
port) that inject the scenario's faults; a scenario may also block a party's event loop, pause its reading, or kill
and restart it. The result adds up what every party reported.

Our tests run small scenarios; ``benchmarks/bench_reliability.py`` runs larger ones for docs/RELIABILITY.md. A
third-party transport can run them too (any transport name its config accepts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..config import Config, dump_config
from ..runner import spawn
from .chaos import TcpChaosProxy, TcpPlan, UdpChaosProxy, UdpPlan, chaos_proxies, network_configs

__all__ = ["Scenario", "ScenarioResult", "run_scenario"]

_KIB = 1024


@attrs.frozen(kw_only=True)
class Scenario:
    """What to run, and which faults to inject."""

    name: str
    transport: str = "tcp-tls"
    parties: int = 3
    rounds: int = 300
    size: int = 1024  # bytes per round message
    plan: TcpPlan | UdpPlan | None = None  # faults of the proxies between the parties (None: no proxies)
    seed: int = 0  # the proxies' seed: the same seed replays the same faults
    settings: Mapping[str, Any] = attrs.field(factory=dict)  # config keys for every party (e.g. keepalive_ms)
    stall: tuple[int, int] | None = None  # (party, ms): it blocks its event loop this long after every round
    read_pause: tuple[int, int] | None = None  # (party, ms): it stops reading this long, broadcasting on
    restart: tuple[int, int] | None = None  # (party, round): SIGKILL it once party 0 did `round` rounds, start anew
    outages: tuple[int, float] = (0, 0.0)  # (count, seconds): network outages spread over the run (TCP: every
    # connection cut, then new ones refused for `seconds`; UDP: every datagram dropped for `seconds`)
    timeout: float = 120.0  # seconds for the whole run


@attrs.frozen
class ScenarioResult:
    """What the parties reported, added up. `lost` and `duplicated` must be 0 in a run that passed."""

    scenario: Scenario
    ok: bool  # every party finished its rounds with every check passed
    wall_s: float
    sent: int  # messages broadcast to the other parties: rounds x n x (n - 1)
    delivered: int  # messages from other parties received and checked
    lost: int  # sent - delivered, in a run every party finished
    duplicated: int  # extra copies the parties saw (any is also a failure)
    resent_dropped: int  # frames sent again after a loss that had arrived already: dropped below the application
    reconnects: int  # connections resumed (counted at each end)
    faults: str  # what the proxies did, in words
    peak_rss_mib: float  # the largest peak RSS of any party process
    round_median_s: float
    round_max_s: float  # the longest round: about the time to recover from the worst fault
    failures: tuple[str, ...]  # every party's failures, and the driver's
    results: tuple[Mapping[str, Any], ...]  # each party process's JSON result (restarted processes included)


class _Member:
    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.result: dict[str, Any] | None = None
        self.stderr: list[str] = []
        self.killed = False


async def _watch(member: _Member, progress: asyncio.Queue[int] | None) -> None:
    assert member.proc.stdout is not None
    assert member.proc.stderr is not None
    stderr = member.proc.stderr

    async def read_stderr() -> None:
        while raw := await stderr.readline():
            line = raw.decode(errors="replace")
            if progress is not None and line.startswith("progress "):
                progress.put_nowait(int(line.split()[1].split("/")[0]))
                continue
            member.stderr.append(line)

    stdout, _ = await asyncio.gather(member.proc.stdout.read(), read_stderr())
    await member.proc.wait()
    lines = stdout.decode(errors="replace").strip().splitlines()
    with contextlib.suppress(ValueError, IndexError):
        result = json.loads(lines[-1])
        if isinstance(result, dict):
            member.result = result


async def _start(name: str, config: Path, scenario: Scenario, party: int) -> _Member:
    args = ["party", str(config), "--clients", "0", "--rounds", str(scenario.rounds), "--sizes", str(scenario.size)]
    args += ["--timeout", str(scenario.timeout), "--log-level", "WARNING"]
    if party == 0:
        args.append("--progress")
    if scenario.stall is not None and scenario.stall[0] == party:
        args += ["--stall-ms", str(scenario.stall[1])]
    if scenario.read_pause is not None and scenario.read_pause[0] == party:
        args += ["--read-pause-ms", str(scenario.read_pause[1])]
    return _Member(name, await spawn(*args))


@contextlib.asynccontextmanager
async def _proxied(
    configs: Sequence[Config], scenario: Scenario
) -> AsyncIterator[tuple[list[Config], list[TcpChaosProxy | UdpChaosProxy]]]:
    if scenario.plan is None:
        yield list(configs), []
        return
    async with chaos_proxies(configs, scenario.plan, seed=scenario.seed) as chaos:
        yield chaos.configs, list(chaos.proxies.values())


def _describe(proxies: Sequence[TcpChaosProxy | UdpChaosProxy]) -> str:
    if not proxies:
        return "-"
    if isinstance(proxies[0], TcpChaosProxy):
        tcp = [p.stats for p in proxies if isinstance(p, TcpChaosProxy)]
        refused = sum(s.refused for s in tcp)
        return f"{sum(s.cuts for s in tcp)} cuts of {sum(s.accepted for s in tcp)} TCP connections" + (
            f", {refused} refused" if refused else ""
        )
    udp = [p.stats for p in proxies if isinstance(p, UdpChaosProxy)]
    blackholed = sum(s.blackholed for s in udp)
    return (
        f"{sum(s.dropped for s in udp) - blackholed} dropped, {sum(s.duplicated for s in udp)} duplicated, "
        f"{sum(s.reordered for s in udp)} reordered"
        + (f", {blackholed} blackholed" if blackholed else "")
        + f" of {sum(s.datagrams_in for s in udp)} datagrams"
    )


async def run_scenario(scenario: Scenario, folder: str | os.PathLike[str] | None = None) -> ScenarioResult:
    """Run `scenario` to the end (or its timeout) and add up what every party reported."""
    with contextlib.ExitStack() as stack:
        base = Path(folder) if folder is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        return await _run(scenario, base)
    raise AssertionError("unreachable")  # pragma: no cover  (mypy: the with block may swallow exceptions)


async def _run(scenario: Scenario, folder: Path) -> ScenarioResult:
    n = scenario.parties
    configs = await network_configs(n, scenario.transport, folder / "keys", **dict(scenario.settings))
    failures: list[str] = []
    members: list[_Member] = []
    watchers: list[asyncio.Task[None]] = []
    progress: asyncio.Queue[int] = asyncio.Queue()
    started = time.perf_counter()
    async with _proxied(configs, scenario) as (proxied, proxies):
        files = []
        for i, config in enumerate(proxied):
            path = folder / f"party{i}.toml"
            path.write_text(dump_config(config, relative_to=folder), encoding="utf-8")
            files.append(path)
        try:
            async with asyncio.timeout(scenario.timeout):
                for i, path in enumerate(files):
                    members.append(await _start(f"party{i}", path, scenario, i))
                    watchers.append(asyncio.ensure_future(_watch(members[-1], progress if i == 0 else None)))
                if scenario.restart is not None:
                    await _kill_and_restart(scenario, files, members, watchers, progress)
                elif scenario.outages[0]:
                    await _outages(scenario, proxies, progress)
                await asyncio.gather(*watchers)
        except TimeoutError:
            waiting = [m.name for m in members if m.proc.returncode is None]
            failures.append(f"scenario timed out after {scenario.timeout:g}s waiting for {', '.join(waiting)}")
        finally:
            for member in members:
                if member.proc.returncode is None:
                    member.proc.kill()
            await asyncio.gather(*watchers, return_exceptions=True)
        faults = _describe(proxies)
    wall = time.perf_counter() - started
    return _summarise(scenario, members, failures, faults, wall)


async def _kill_and_restart(
    scenario: Scenario,
    files: Sequence[Path],
    members: list[_Member],
    watchers: list[asyncio.Task[None]],
    progress: asyncio.Queue[int],
) -> None:
    assert scenario.restart is not None
    party, after = scenario.restart
    while await progress.get() < after:
        pass
    victim = members[party]
    victim.killed = True
    victim.proc.send_signal(signal.SIGKILL)
    await watchers[party]
    members.append(await _start(f"party{party} (restarted)", files[party], scenario, party))
    watchers.append(asyncio.ensure_future(_watch(members[-1], None)))


async def _outages(
    scenario: Scenario, proxies: Sequence[TcpChaosProxy | UdpChaosProxy], progress: asyncio.Queue[int]
) -> None:
    count, seconds = scenario.outages
    marks = [scenario.rounds * (k + 1) // (count + 1) for k in range(count)]
    for mark in marks:
        while await progress.get() < mark:
            pass
        for proxy in proxies:
            if isinstance(proxy, TcpChaosProxy):
                proxy.refuse(True)
                proxy.cut_all()
            else:
                proxy.blackhole(True)
        await asyncio.sleep(seconds)  # the outage itself is a span of time
        for proxy in proxies:
            if isinstance(proxy, TcpChaosProxy):
                proxy.refuse(False)
            else:
                proxy.blackhole(False)


def _summarise(
    scenario: Scenario, members: Sequence[_Member], failures: list[str], faults: str, wall: float
) -> ScenarioResult:
    n, rounds = scenario.parties, scenario.rounds
    results = [m.result for m in members if m.result is not None]
    for member in members:
        if member.killed:
            failures.append(f"{member.name}: killed by SIGKILL (the scenario's crash)")
        elif member.result is None:
            tail = "".join(member.stderr[-5:]).strip()
            failures.append(f"{member.name}: exit {member.proc.returncode} without a result: {tail}")
        else:
            failures += [str(f) for f in member.result.get("failures", [])]
    finished = [r for r in results if r.get("ok")]
    delivered = sum(max(0, int(r.get("messages_received", 0)) - rounds) for r in finished)  # less its own
    duplicated = sum(1 for f in failures if "an extra message" in f)
    latencies = [float(x) for r in results for x in r.get("latencies_s", [])]
    rss = [int(r["rss_peak_kib"]) for r in results if r.get("rss_peak_kib")]
    sent = rounds * n * (n - 1)
    ok = len(finished) == n and not failures
    return ScenarioResult(
        scenario=scenario,
        ok=ok,
        wall_s=wall,
        sent=sent,
        delivered=delivered,
        lost=sent - delivered if ok else 0,
        duplicated=duplicated,
        resent_dropped=sum(int(r.get("resent_dropped", 0)) for r in results),
        reconnects=sum(int(r.get("reconnects", 0)) for r in results),
        faults=faults,
        peak_rss_mib=max(rss, default=0) / _KIB,
        round_median_s=statistics.median(latencies) if latencies else 0.0,
        round_max_s=max(latencies, default=0.0),
        failures=tuple(failures),
        results=tuple(results),
    )
