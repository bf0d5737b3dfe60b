"""The pytest plugin's `stoffelnet_chaos_seed`: fresh by default, replayed from the environment, shown on failure."""

from __future__ import annotations

import importlib.metadata
import textwrap

import pytest

PLUGIN = "stoffelnet_core.testing.plugin"
INI = "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"

USER_TESTS = textwrap.dedent(
    """
    def test_replayed(stoffelnet_chaos_seed):
        assert stoffelnet_chaos_seed == 1234

    def test_fails(stoffelnet_chaos_seed):
        assert False, "a chaos failure"
    """
)


def _plugin_args() -> list[str]:
    """Nothing when pytest loads the plugin from its entry point (how users get it); else load it by name."""
    try:
        dist = importlib.metadata.distribution("stoffelnet-core")
    except importlib.metadata.PackageNotFoundError:
        return ["-p", PLUGIN]
    installed = any(ep.group == "pytest11" and ep.value == PLUGIN for ep in dist.entry_points)
    return [] if installed else ["-p", PLUGIN]


def test_the_seed_comes_from_the_environment_and_a_failure_shows_how_to_replay(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOFFELNET_CHAOS_SEED", "1234")
    pytester.makeini(INI)
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*stoffelnet chaos seed*", "1234 (replay with STOFFELNET_CHAOS_SEED=1234)"])


def test_without_the_variable_each_run_gets_a_fresh_seed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STOFFELNET_CHAOS_SEED", raising=False)
    pytester.makeini(INI)
    pytester.makepyfile(
        test_user="""
        seen = []

        def test_a(stoffelnet_chaos_seed):
            seen.append(stoffelnet_chaos_seed)

        def test_b(stoffelnet_chaos_seed):
            seen.append(stoffelnet_chaos_seed)
            assert isinstance(seen[0], int) and seen[0] != seen[1]
        """
    )
    pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider").assert_outcomes(passed=2)
