"""The shipped pytest plugin end to end: a user's strict-mode test file run by a fresh pytest (`pytester`)."""

from __future__ import annotations

import importlib.metadata
import textwrap

import pytest

PLUGIN = "stoffelnet_core.testing.plugin"

USER_TESTS = textwrap.dedent(
    """
    import pytest

    from stoffelnet_core.testing import local_network


    def test_transport_fixture(stoffelnet_transport):
        assert stoffelnet_transport == "loopback"


    def test_options_default_to_empty(stoffelnet_network_options):
        assert stoffelnet_network_options == {}


    def test_no_autouse_fixtures(request):
        assert [name for name in request.fixturenames if name.startswith("stoffelnet")] == []


    @pytest.mark.asyncio
    async def test_local_network(stoffelnet_transport):
        async with local_network(2, transport=stoffelnet_transport) as lan:
            await lan[0].send(1, b"share")
            assert await lan[1].receive_from(0, timeout=5) == b"share"


    @pytest.mark.asyncio
    async def test_local_network_factory(stoffelnet_local_network):
        async with stoffelnet_local_network(3, clients=1) as lan:
            await lan[2].broadcast(b"hello")
            for net in lan:
                assert await net.receive(timeout=5) == (2, b"hello")
            await lan.clients[0].send(1, b"input")
            assert await lan[1].receive_from_client(timeout=5) == (0, b"input")
    """
)

STRICT_INI = textwrap.dedent(
    """
    [pytest]
    asyncio_mode = strict
    asyncio_default_fixture_loop_scope = function
    addopts = --strict-markers --strict-config
    filterwarnings = error
    """
)


def _entry_point_installed() -> bool:
    try:
        dist = importlib.metadata.distribution("stoffelnet-core")
    except importlib.metadata.PackageNotFoundError:
        return False
    return any(ep.group == "pytest11" and ep.value == PLUGIN for ep in dist.entry_points)


def _plugin_args() -> list[str]:
    """Nothing when pytest loads the plugin from its entry point (how users get it); else load it by name."""
    return [] if _entry_point_installed() else ["-p", PLUGIN]


def test_user_tests_pass_in_strict_mode(pytester: pytest.Pytester) -> None:
    pytester.makeini(STRICT_INI)
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess(*_plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["stoffelnet transport: loopback"])


def test_transport_option_and_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(STRICT_INI + "stoffelnet_transport = from-ini\n")
    pytester.makepyfile(
        test_option="""
        def test_name(stoffelnet_transport):
            print("TRANSPORT=" + stoffelnet_transport)
        """
    )
    result = pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*TRANSPORT=from-ini*"])
    result = pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider", "-s", "--stoffelnet-transport=x")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*TRANSPORT=x*"])


def test_conformance_command(pytester: pytest.Pytester) -> None:
    """The documented command for transport authors works (a few of its tests, to stay fast)."""
    pytester.makeini(STRICT_INI)
    result = pytester.runpytest_subprocess(
        *_plugin_args(),
        "-p",
        "no:cacheprovider",
        "--pyargs",
        "stoffelnet_core.testing.conformance",
        "--stoffelnet-transport=loopback",
        "-k",
        "point_to_point or unknown_party",
    )
    result.assert_outcomes(passed=2)


def test_entry_point_loads_the_plugin() -> None:
    if not _entry_point_installed():
        pytest.skip("stoffelnet-core is not installed as a distribution (only on sys.path)")
    from stoffelnet_core.testing import plugin

    [entry_point] = [
        ep for ep in importlib.metadata.distribution("stoffelnet-core").entry_points if ep.group == "pytest11"
    ]
    assert entry_point.name == "stoffelnet"
    assert entry_point.load() is plugin
