"""The ``stoffelnet`` console script: `transports`, `--version`, and how errors end a run."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import shutil
import subprocess

import pytest

from stoffelnet_core import cli, errors, plugins
from stoffelnet_core.plugins import ENTRY_POINT_GROUP, PluginManager, load_plugins
from stoffelnet_core.transport import Transport


class Alpha(Transport):
    name = "alpha"

    async def listen(self, address: object, on_pipe: object) -> object:  # type: ignore[override]
        raise NotImplementedError

    async def dial(self, address: object, *, role: object) -> object:  # type: ignore[override]
        raise NotImplementedError


@pytest.fixture
def manager(monkeypatch: pytest.MonkeyPatch) -> PluginManager:
    """What `stoffelnet transports` sees: one ok transport and one whose module is missing."""
    ghost = importlib.metadata.EntryPoint(name="ghost", value="snclitest_ghost", group=ENTRY_POINT_GROUP)
    found = load_plugins(entry_points=[ghost])
    found.register(Alpha, distribution="pluggy")  # an installed distribution, so that it has a version
    monkeypatch.setattr(plugins, "default_plugins", lambda: found)
    return found


@pytest.mark.usefixtures("manager")
def test_transports_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["transports"]) == 0  # a broken plugin is listed, not fatal
    out, err = capsys.readouterr()
    assert err == ""
    header, alpha, ghost = out.splitlines()
    assert header.split() == ["NAME", "DISTRIBUTION", "VERSION", "STATUS"]
    assert alpha.split() == ["alpha", "pluggy", importlib.metadata.version("pluggy"), "ok"]
    assert ghost.split()[:3] == ["ghost", "-", "-"]
    assert ghost.endswith("broken: ModuleNotFoundError: No module named 'snclitest_ghost'")
    assert header.index("STATUS") == alpha.index("ok")  # the columns line up


@pytest.mark.usefixtures("manager")
def test_transports_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["transports", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [
        {
            "name": "alpha",
            "distribution": "pluggy",
            "version": importlib.metadata.version("pluggy"),
            "status": "ok",
            "reason": None,
            "entry_point": f"{__name__}:Alpha",
            "class": f"{__name__}:Alpha",
        },
        {
            "name": "ghost",
            "distribution": None,
            "version": None,
            "status": "broken",
            "reason": "ModuleNotFoundError: No module named 'snclitest_ghost'",
            "entry_point": "ghost = snclitest_ghost",
            "class": None,
        },
    ]


def test_transports_when_none_is_installed(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "default_plugins", lambda: load_plugins(entry_points=[]))
    assert cli.main(["transports"]) == 0
    assert capsys.readouterr().out == "no transports installed (entry point group 'stoffelnet.transports')\n"
    assert cli.main(["transports", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


class FailingEntryPoint(importlib.metadata.EntryPoint):
    def load(self) -> object:
        raise ImportError("first line\n  second line")


def test_multiline_reasons_stay_on_one_row(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    found = load_plugins(entry_points=[FailingEntryPoint(name="multi", value="multi", group=ENTRY_POINT_GROUP)])
    monkeypatch.setattr(plugins, "default_plugins", lambda: found)
    assert cli.main(["transports"]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("broken: ImportError: first line second line")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stoffelnet-core ")
    assert "plugin API 1" in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "the following arguments are required: COMMAND" in capsys.readouterr().err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert "transports" in capsys.readouterr().out


def test_a_stoffelnet_error_is_a_message_not_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(parser: argparse.ArgumentParser) -> cli.Runner:
        """Fail the way a bad config does."""

        def run(args: argparse.Namespace) -> int:
            raise errors.ConfigError("party.toml: timeout_ms must be a positive integer, got 0", key="timeout_ms")

        return run

    monkeypatch.setitem(cli.COMMANDS, "failing", failing)
    assert cli.main(["failing"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "stoffelnet: error: party.toml: timeout_ms must be a positive integer, got 0\n"


def test_other_exceptions_are_bugs_and_propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    def buggy(parser: argparse.ArgumentParser) -> cli.Runner:
        """A bug."""

        def run(args: argparse.Namespace) -> int:
            raise RuntimeError("bug")

        return run

    monkeypatch.setitem(cli.COMMANDS, "buggy", buggy)
    with pytest.raises(RuntimeError, match="bug"):
        cli.main(["buggy"])


def test_verbose_logs_for_this_run_only(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def chatty(parser: argparse.ArgumentParser) -> cli.Runner:
        """Log something."""

        def run(args: argparse.Namespace) -> int:
            logging.getLogger("stoffelnet_core.test").info("hello from the library")
            return 0

        return run

    monkeypatch.setitem(cli.COMMANDS, "chatty", chatty)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    assert cli.main(["chatty"]) == 0
    assert "hello from the library" not in capsys.readouterr().err  # warnings only by default
    assert cli.main(["-v", "chatty"]) == 0
    assert "INFO stoffelnet_core.test: hello from the library" in capsys.readouterr().err
    assert (root.handlers, root.level) == (handlers, level)


def test_a_subcommand_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        cli.command("transports")(lambda parser: lambda args: 0)


def test_the_help_of_a_subcommand_is_its_docstring(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["transports", "--help"]) == 0
    assert "List the installed transports" in capsys.readouterr().out


def test_the_installed_console_script() -> None:
    script = shutil.which("stoffelnet")
    if script is None:
        pytest.skip("the stoffelnet console script is not on PATH")
    result = subprocess.run([script, "transports"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("NAME") or result.stdout.startswith("no transports installed")
