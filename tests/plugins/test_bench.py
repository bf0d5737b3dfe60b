"""`stoffelnet bench`: it completes, writes the documented JSON, and finds each transport's baseline. Speeds are
not asserted: they depend on the machine."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stoffelnet_core import bench, cli, plugins
from stoffelnet_core.bench import procs
from stoffelnet_core.runner import rss_peak_kib
from stoffelnet_core.transport import Transport

ROW_KEYS = {"transport", "case", "unit", "value", "baseline", "ratio", "better"}


def test_quick_loopback_writes_the_documented_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    assert cli.main(["bench", "--quick", "--transport", "loopback", "--json", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data) == {"machine", "rows"}
    assert {"cpu", "cpus", "python"} <= set(data["machine"])
    assert data["rows"]
    for row in data["rows"]:
        assert set(row) == ROW_KEYS
        assert row["better"] in ("higher", "lower")
        assert isinstance(row["value"], float)
        if row["baseline"] is not None:
            assert row["ratio"] > 0  # the median of the repeats' paired ratios: near, not equal to, value / baseline
    cases = {(row["transport"], row["case"]) for row in data["rows"]}
    assert ("loopback", "one-way 64 B") in cases
    assert ("loopback", "self-delivery 64 B") in cases
    assert ("core", "codec frame+unframe 64 B") in cases
    table = capsys.readouterr().out
    assert "RATIO" in table
    assert "asyncio.Queue" in table


@pytest.mark.timeout(300)
def test_the_quick_bench_of_every_installed_transport_completes(tmp_path: Path) -> None:
    """What CI runs once (issue 8): ``stoffelnet bench --quick`` as a user runs it, every installed transport and
    variant, in a process of its own; every network transport gets its rows with a ratio, the multi-process rounds
    included, and the memory rows. Completion and shape only: no speed is asserted."""
    out = tmp_path / "quick.json"
    done = subprocess.run(
        [sys.executable, "-m", "stoffelnet_core.cli", "bench", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text(encoding="utf-8"))["rows"]
    ratios = {(row["transport"], row["case"]): row["ratio"] for row in rows}
    for transport in ("tcp-tls", "quic"):
        for case in (
            "round trip 64 B, median",
            "one-way 1 KiB",
            "rounds 3 parties 64 B, 1 proc",
            "rounds 3 parties 64 B, 3 procs",
            "rounds 3 parties 4 KiB, 3 procs",
        ):
            assert ratios.get((transport, case)) is not None, (transport, case)
        assert (transport, "peak RSS per party, 3 procs") in ratios
        assert (transport, "max send buffer per peer, 3 procs") in ratios
    assert ratios.get(("quic[qh3]", "one-way 1 KiB")) is not None
    assert ratios.get(("quic[shipped]", "one-way 1 KiB")) is not None
    assert ratios.get(("quic[qh3-shipped]", "one-way 1 KiB")) is not None
    assert ratios.get(("loopback", "self-delivery 64 B")) is not None


def test_unknown_transport_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--quick", "--transport", "no-such-transport"]) == cli.EXIT_ERROR
    assert "no-such-transport" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is not None, reason="matplotlib is installed")
def test_plot_without_matplotlib_says_how_to_get_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["bench", "--quick", "--transport", "loopback", "--plot", str(tmp_path / "x.png")])
    assert status == cli.EXIT_ERROR
    assert "matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_baselines_are_found_in_each_transport_package() -> None:
    found = {info.name: info for info in plugins.default_plugins().transports()}
    names = {name: bench.find_baseline(name, found[name].transport) for name in ("tcp-tls", "quic", "loopback")}
    assert {name: b.name if b else None for name, b in names.items()} == {
        "tcp-tls": "bare asyncio TLS",
        "quic": "bare aioquic, 1 stream",
        "loopback": "asyncio.Queue",
    }


class Alien(Transport):  # its package (tests) has no baseline module
    name = "alien"

    async def listen(self, address: object, on_pipe: object) -> object:  # type: ignore[override]
        raise NotImplementedError

    async def dial(self, address: object, *, role: object) -> object:  # type: ignore[override]
        raise NotImplementedError


def test_a_transport_without_a_baseline_module_has_none() -> None:
    assert bench.find_baseline("alien", Alien) is None


@pytest.mark.parametrize("name", ["tcp-tls", "quic"])
async def test_baseline_mesh_moves_messages(name: str) -> None:
    found = {info.name: info for info in plugins.default_plugins().transports()}
    baseline = bench.find_baseline(name, found[name].transport)
    assert baseline is not None
    async with baseline.open_mesh(3) as mesh:
        for me in range(3):
            for peer, (send, _) in mesh[me].items():
                await send(f"{me}->{peer}".encode())
        for me in range(3):
            for peer, (_, recv) in mesh[me].items():
                assert await recv() == f"{peer}->{me}".encode()


@pytest.mark.parametrize(("transport", "package"), [("tcp-tls", "stoffelnet_tcp_tls"), ("quic", "stoffelnet_quic")])
def test_the_transports_have_a_multi_process_baseline_and_its_rounds_run(transport: str, package: str) -> None:
    """Each bare party in its own process (`bench.procs`): the rows of the multi-process rounds get a ratio."""
    found = {info.name: info for info in plugins.default_plugins().transports()}
    baseline = bench.find_baseline(transport, found[transport].transport)
    assert baseline is not None
    assert baseline.party_module == f"{package}.baseline"
    assert procs.process_rounds(baseline.party_module, 3, 64, 100, timeout=60) > 0


@pytest.mark.parametrize("transport", ["tcp-tls", "quic"])
def test_stoffelnet_parties_run_the_same_multi_process_rounds(transport: str) -> None:
    """stoffelnet's parties in the multi-process rounds run the baseline's code (`_cases.party_rounds`), each a
    `Network` in its own process, so the two rates compare the same work."""
    assert procs.process_rounds(procs.STOFFELNET + transport, 3, 64, 100, timeout=60) > 0


def test_runner_reports_peak_rss() -> None:
    peak = rss_peak_kib()
    assert peak is None or peak > 0


def test_quic_offers_its_qh3_variant_beside_the_same_baseline() -> None:
    found = {info.name: info for info in plugins.default_plugins().transports()}
    baseline = bench.find_baseline("quic", found["quic"].transport)
    assert baseline is not None
    # the workspace installs stoffelnet-quic[qh3]
    assert baseline.variants == {"shipped": {}, "qh3": {"engine": "qh3"}, "qh3-shipped": {"engine": "qh3"}}
    assert bench.split_variant("quic[qh3]") == ("quic", "qh3")
    assert bench.split_variant("tcp-tls") == ("tcp-tls", None)
    names = bench.baseline_names(["quic", "quic[qh3]", "quic[shipped]", "quic[qh3-shipped]"])
    assert names["quic"] == names["quic[qh3]"] == "bare aioquic, 1 stream"  # at the transport's own settings
    at_defaults = "bare aioquic, 1 stream, QuicConfiguration() defaults"
    assert names["quic[shipped]"] == names["quic[qh3-shipped]"] == at_defaults


async def test_the_shipped_rows_compare_with_aioquic_at_its_own_defaults() -> None:
    """Issue 8: the transport as shipped >= 1.5x bare aioquic at `QuicConfiguration()`'s defaults (one-way rows)."""
    found = {info.name: info for info in plugins.default_plugins().transports()}
    baseline = bench.find_baseline("quic", found["quic"].transport)
    assert baseline is not None
    _, open_mesh = baseline.for_variant("shipped")
    async with open_mesh(2) as mesh:
        (send, _), (_, recv) = mesh[0][1], mesh[1][0]
        await send(b"at aioquic's defaults")
        assert await recv() == b"at aioquic's defaults"
        conn: Any = getattr(send, "__self__")  # noqa: B009 - a BareQuic's bound send
        assert conn._quic._max_datagram_size == 1200  # QuicConfiguration()'s, not the transport's 16384
    assert bench._target("quic[shipped]", "one-way 1 KiB") == bench.Target(">=", 1.5)
    assert bench._target("quic[shipped]", "rounds 3 parties 64 B, 1 proc") == bench.Target(">=", 0.9)
    assert bench._target("quic[qh3]", "one-way 1 KiB") == bench.Target(">=", 0.9)  # its transport's


def test_unknown_variant_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--quick", "--transport", "quic[msquic]"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "quic has no variant 'msquic'" in err
    assert "quic[qh3]" in err


async def test_the_qh3_rows_measure_quic_on_qh3() -> None:
    async with bench._stoffelnet_mesh("quic", 2, options={"engine": "qh3"}) as mesh:
        (send, _), (_, recv) = mesh[0][1], mesh[1][0]
        await send(b"over qh3")
        assert await recv() == b"over qh3"
        net: Any = getattr(send, "func").__self__  # noqa: B009 - send is functools.partial(net.send, 1)
        assert net.connection(1)._pipe._engine.name == "qh3"


def test_a_rows_ratio_is_the_median_of_its_pairs_not_of_lucky_extremes() -> None:
    # Three repeats: the machine was twice as slow during the second pair, and the baseline had one lucky run.
    samples: bench.Samples = {
        ("core", "codec", "stoffelnet"): [[1.0]],
        ("core", "codec", "baseline"): [[1.0]],
        ("quic[qh3]", "round trip 64 B, median", "stoffelnet"): [[110.0, 200.0], [220.0, 400.0], [120.0, 210.0]],
        ("quic[qh3]", "round trip 64 B, median", "baseline"): [[100.0, 190.0], [200.0, 380.0], [60.0, 180.0]],
    }
    for case in bench._CASES[1:]:
        for impl in ("stoffelnet", "baseline"):
            samples[("quic[qh3]", case.name, impl)] = [[1.0]] * 3
    rows = bench._rows(["quic[qh3]"], samples, {}, bench.QUICK)  # a variant: no multi-process rows
    median, p99 = rows[1], rows[2]
    assert (median.case, p99.case) == ("round trip 64 B, median", "round trip 64 B, p99")
    assert median.value == 120.0
    assert median.baseline == 100.0
    assert median.ratio == pytest.approx(1.1)  # pairs 1.1, 1.1, 2.0 (best-of would have said 110 / 60 = 1.83)
    assert p99.ratio == pytest.approx(200 / 190)  # pairs 1.053, 1.053, 1.167
    assert median.target is not None
    assert median.target.met(median.value, median.ratio)


def test_each_repeat_measures_the_pair_back_to_back_in_turns() -> None:
    order: list[str] = []
    samples: bench.Samples = {}

    def run(name: str, figure: float) -> Callable[[], list[float]]:
        def measure() -> list[float]:
            order.append(name)
            return [figure]

        return measure

    runs = [("stoffelnet", run("A", 1.0)), ("baseline", run("B", 2.0))]
    for repeat in (1, 2, 3):
        bench._pair(samples, "t", "case", bench._turn(runs, repeat))
    assert order == ["A", "B", "B", "A", "A", "B"]  # neither side always goes first
    assert samples[("t", "case", "stoffelnet")] == [[1.0], [1.0], [1.0]]
    assert samples[("t", "case", "baseline")] == [[2.0], [2.0], [2.0]]
