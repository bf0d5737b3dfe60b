"""The fault scenarios of issue "Nothing lost", small and bounded: parties are separate processes, every message is
checked by the receiving party (content, sender, order, exactly once). The larger runs behind docs/RELIABILITY.md
are ``python benchmarks/bench_reliability.py``."""

from __future__ import annotations

from stoffelnet_core.testing.chaos import TcpPlan, UdpPlan
from stoffelnet_core.testing.scenarios import Scenario, ScenarioResult, run_scenario

MIB = 1024 * 1024


def assert_nothing_lost(result: ScenarioResult) -> None:
    assert result.ok, result.failures
    assert result.delivered == result.sent > 0
    assert result.lost == 0
    assert result.duplicated == 0


async def test_tcp_cut_every_few_hundred_messages_loses_nothing() -> None:
    # 1 KiB messages, each proxied connection cut after ~150 KB (about 150 messages each way): many cuts per run
    scenario = Scenario(name="cuts", rounds=400, plan=TcpPlan(cut_after_bytes=150_000), seed=7, timeout=60)
    result = await run_scenario(scenario)
    assert_nothing_lost(result)
    assert result.reconnects >= 4, result.faults
    assert result.faults.split()[0] != "0", result.faults


async def test_a_party_killed_and_restarted_is_reported_never_mixed() -> None:
    scenario = Scenario(
        name="restart", rounds=5000, restart=(1, 200), settings={"resume_ms": 5000, "max_retries": 5}, timeout=60
    )
    result = await run_scenario(scenario)
    assert not result.ok
    said = {survivor: [f for f in result.failures if f.startswith(f"party {survivor}: ")] for survivor in (0, 2)}
    assert all(len(lines) == 1 for lines in said.values()), result.failures
    # A survivor learns of the restart when the new process reaches it. One that only dials the new process may
    # miss it (not yet listening, or already gone): then party 1 is lost for good; or it first sees the other
    # survivor give up and close. Never anything else, and never a message mixed in.
    assert any("PeerRestarted: party 1 restarted" in lines[0] for lines in said.values()), said
    for [line] in said.values():
        assert any(
            outcome in line
            for outcome in ("PeerRestarted: party 1 restarted", "party 1 lost and not resumed", "closed the connection")
        ), line
    assert not any("is wrong" in f or "extra message" in f for f in result.failures), result.failures


async def test_quic_under_udp_loss_duplication_and_reordering_loses_nothing() -> None:
    plan = UdpPlan(drop=0.05, duplicate=0.02, reorder=0.05, jitter=0.002)
    result = await run_scenario(Scenario(name="udp", transport="quic", rounds=200, plan=plan, seed=3, timeout=60))
    assert_nothing_lost(result)
    assert not result.faults.startswith("0 dropped"), result.faults


async def test_a_peer_that_stops_reading_keeps_every_process_bounded() -> None:
    # party 2 broadcasts 40 MiB to each peer while not reading for 1.5 s: backpressure must hold everyone's memory
    scenario = Scenario(name="unread", rounds=40, size=MIB, read_pause=(2, 1500), timeout=60)
    result = await run_scenario(scenario)
    assert_nothing_lost(result)
    assert result.round_max_s >= 1.4  # the pause really happened
    assert result.peak_rss_mib < 150, result.peak_rss_mib  # 80 MiB went through each party; buffers hold ~20
