"""The fault scenarios of docs/RELIABILITY.md at full size: parties as processes behind chaos proxies.

    python benchmarks/bench_reliability.py [--quick] [--only NAME ...] [--seed N]

Each scenario runs many rounds of all-to-all broadcast; every party checks every message it receives (content,
sender, order, exactly once). Prints one markdown row per scenario: what was sent and delivered, lost and
duplicated (both must be 0), frames resent after a loss and dropped as duplicates below the application,
connections resumed, the proxies' faults, the peak RSS of the largest party process, and the median and longest
round (the longest is about the time to recover from the worst fault). Not part of the test suite (the small
versions are tests/chaos/test_scenarios.py).
"""

from __future__ import annotations

import argparse
import asyncio
import platform

from stoffelnet_core.testing.chaos import TcpPlan, UdpPlan
from stoffelnet_core.testing.scenarios import Scenario, ScenarioResult, run_scenario

MIB = 1024 * 1024


def scenarios(seed: int, quick: bool) -> list[Scenario]:
    k = 4 if quick else 1  # --quick: a quarter of the rounds
    return [
        Scenario(name="baseline (no faults)", parties=5, rounds=2000 // k, seed=seed),
        Scenario(
            name="TCP cut every ~300 messages (RST)",
            parties=5,
            rounds=2000 // k,
            plan=TcpPlan(cut_after_bytes=300_000),
            seed=seed,
        ),
        Scenario(
            name="TCP cut every ~300 messages (FIN)",
            parties=3,
            rounds=2000 // k,
            plan=TcpPlan(cut_after_bytes=300_000, cut_mode="close"),
            seed=seed,
        ),
        Scenario(
            name="TCP outages of 1 s (all cut, redials refused)",
            parties=5,
            rounds=3000 // k,
            plan=TcpPlan(),
            outages=(3, 1.0),
            seed=seed,
        ),
        Scenario(
            name="QUIC 5% loss, 2% duplication, 5% reordering",
            transport="quic",
            parties=5,
            rounds=1000 // k,
            plan=UdpPlan(drop=0.05, duplicate=0.02, reorder=0.05, jitter=0.002),
            seed=seed,
        ),
        Scenario(
            name="QUIC outages of 1.5 s (keep-alive 200 ms)",
            transport="quic",
            parties=3,
            rounds=2000 // k,
            plan=UdpPlan(),
            outages=(2, 1.5),
            settings={"keepalive_ms": 200},
            seed=seed,
        ),
        Scenario(
            name="party 1 killed and restarted",
            parties=3,
            rounds=100_000,
            restart=(1, 500),
            settings={"resume_ms": 5000, "max_retries": 2},
            seed=seed,
        ),
        Scenario(name="a peer stops reading 3 s (1 MiB messages)", rounds=120 // k, size=MIB, read_pause=(2, 3000)),
        Scenario(name="event loop blocked 200 ms per round (tcp-tls)", rounds=100 // k, stall=(1, 200)),
        Scenario(name="event loop blocked 200 ms per round (quic)", transport="quic", rounds=100 // k, stall=(1, 200)),
    ]


def row(r: ScenarioResult) -> str:
    s = r.scenario
    if s.restart is not None:
        survivors = [f for f in r.failures if "PeerRestarted" in f]
        mixed = [f for f in r.failures if "is wrong" in f or "extra message" in f]
        outcome = f"PeerRestarted at {len(survivors)} survivors, {len(mixed)} mixed"
    else:
        outcome = "ok" if r.ok else "FAILED: " + "; ".join(r.failures[:2])
    cells = [
        s.name,
        s.transport,
        str(s.parties),
        f"{s.rounds} x {s.size // 1024} KiB" if s.size >= 1024 else f"{s.rounds} x {s.size} B",
        r.faults,
        str(r.sent) if s.restart is None else "-",
        str(r.delivered) if s.restart is None else "-",
        str(r.lost) if s.restart is None else "-",
        str(r.duplicated),
        str(r.resent_dropped),
        str(r.reconnects),
        f"{r.peak_rss_mib:.0f}",
        f"{r.round_median_s * 1000:.2f}",
        f"{r.round_max_s * 1000:.0f}",
        f"{r.wall_s:.1f}",
        outcome,
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| scenario | transport | parties | rounds | faults | sent | delivered | lost | duplicated | resent, dropped "
    "| resumed | peak RSS MiB | median round ms | longest round ms | wall s | outcome |"
)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the rounds")
    parser.add_argument("--only", nargs="*", default=[], help="run only scenarios whose name contains one of these")
    parser.add_argument("--seed", type=int, default=1, help="the proxies' seed (the same seed replays the faults)")
    args = parser.parse_args()
    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"machine: {platform.machine()}, {python}, seed {args.seed}")
    print()
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for scenario in scenarios(args.seed, args.quick):
        if args.only and not any(word in scenario.name for word in args.only):
            continue
        print(row(await run_scenario(scenario)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
