"""A real third-party distribution on sys.path: found by importlib.metadata, listed with its name and version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import thirdparty

import stoffelnet_core.plugins
from stoffelnet_core import errors
from stoffelnet_core.plugins import load_plugins
from stoffelnet_core.transport import Transport

CORE_SRC = Path(stoffelnet_core.plugins.__file__).resolve().parent.parent  # so the child imports this checkout


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder holding stoffelnet-foo (ok) and stoffelnet-bad (fails to import), on sys.path for this test."""
    thirdparty.make_distribution(tmp_path, "foo", thirdparty.FOO_SOURCE)
    thirdparty.make_distribution(tmp_path, "bad", thirdparty.BAD_SOURCE, version="2.0")
    monkeypatch.syspath_prepend(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for module in set(sys.modules) - before:
        del sys.modules[module]


def test_the_distributions_are_found_with_name_and_version(site: Path) -> None:
    manager = load_plugins(entry_points=thirdparty.transport_entry_points(site))
    found = {info.name: info for info in manager.transports()}
    foo, bad = found["foo"], found["bad"]
    assert (foo.status, foo.distribution, foo.version) == ("ok", "stoffelnet-foo", "0.1.0")
    assert foo.entry_point == "foo = stoffelnet_foo"
    transport = manager.get("foo")
    assert issubclass(transport, Transport)
    assert transport.name == "foo"
    assert (bad.status, bad.distribution, bad.version) == ("broken", "stoffelnet-bad", "2.0")
    assert bad.reason == "ImportError: stoffelnet-bad needs libbad, which is not installed"
    with pytest.raises(errors.PluginError) as caught:
        manager.get("bad")
    assert str(caught.value) == (
        "transport 'bad' (distribution stoffelnet-bad) is installed but broken: "
        "ImportError: stoffelnet-bad needs libbad, which is not installed"
    )


def test_a_name_taken_by_another_distribution(site: Path) -> None:
    thirdparty.make_distribution(site, "foo2", thirdparty.FOO_SOURCE)  # also registers "foo"
    entry_points = sorted(thirdparty.transport_entry_points(site), key=lambda entry_point: entry_point.name)
    manager = load_plugins(entry_points=entry_points)
    ok, broken = (info for info in manager.transports() if info.name == "foo")
    assert ok.distribution == "stoffelnet-foo"
    assert broken.distribution == "stoffelnet-foo2"
    assert broken.reason == "name 'foo' already provided by distribution stoffelnet-foo"


def run_cli(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(CORE_SRC)]))
    return subprocess.run(
        [sys.executable, "-m", "stoffelnet_core.cli", "transports", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_stoffelnet_transports_lists_them(site: Path) -> None:
    result = run_cli(site)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert rows["foo"].split() == ["foo", "stoffelnet-foo", "0.1.0", "ok"]
    assert rows["bad"].split()[:4] == ["bad", "stoffelnet-bad", "2.0", "broken:"]
    assert rows["bad"].endswith("broken: ImportError: stoffelnet-bad needs libbad, which is not installed")


def test_stoffelnet_transports_json(site: Path) -> None:
    result = run_cli(site, "--json")
    assert result.returncode == 0, result.stderr
    found = {info["name"]: info for info in json.loads(result.stdout)}
    assert found["foo"]["class"] == "stoffelnet_foo:FooTransport"
    assert found["bad"]["status"] == "broken"
