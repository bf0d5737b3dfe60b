"""The plugin manager over fake entry points: every way a plugin can be broken is listed, none is fatal."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stoffelnet_core import errors
from stoffelnet_core.plugins import (
    ENTRY_POINT_GROUP,
    PluginManager,
    TransportInfo,
    default_plugins,
    load_plugins,
    reset_default_plugins,
)
from stoffelnet_core.transport import Transport

MakePlugin = Callable[..., importlib.metadata.EntryPoint]

PREFIX = "snplugtest_"  # module names no real distribution uses


def transport_source(name: str, *, class_name: str = "FakeTransport") -> str:
    """A module body defining a concrete Transport that counts its instances."""
    return textwrap.dedent(
        f"""
        class {class_name}(Transport):
            name = {name!r}

            def __init__(self, context):
                CREATED.append(self)
                super().__init__(context)

            async def listen(self, address, on_pipe):
                raise NotImplementedError

            async def dial(self, address, *, role):
                raise NotImplementedError
        """
    )


HEADER = textwrap.dedent(
    """
    from stoffelnet_core.hookspecs import hookimpl
    from stoffelnet_core.transport import Transport

    CREATED = []
    """
)


def plugin_source(*names: str, api: str = "1", extra: str = "") -> str:
    """A module that declares `api` and registers one transport per name."""
    classes = "".join(transport_source(name, class_name=f"T{i}") for i, name in enumerate(names))
    calls = "".join(f"    register(T{i})\n" for i in range(len(names)))
    hook = "\n@hookimpl\ndef stoffelnet_register_transports(register):\n" + (calls or "    pass\n")
    version = f"PLUGIN_API_VERSION = {api}\n" if api else ""
    return HEADER + version + classes + hook + textwrap.dedent(extra)


@pytest.fixture
def make_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakePlugin]:
    """Write a module under tmp_path and return an entry point naming it; forget the modules afterwards."""
    monkeypatch.syspath_prepend(tmp_path)
    before = set(sys.modules)

    def make(name: str, source: str, *, attr: str | None = None) -> importlib.metadata.EntryPoint:
        module = PREFIX + name.replace("-", "_")
        (tmp_path / f"{module}.py").write_text(source, encoding="utf-8")
        importlib.invalidate_caches()
        value = f"{module}:{attr}" if attr else module
        return importlib.metadata.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)

    yield make
    for module in set(sys.modules) - before:
        del sys.modules[module]


def by_name(manager: PluginManager) -> dict[str, TransportInfo]:
    return {info.name: info for info in manager.transports()}


def only_broken(manager: PluginManager) -> TransportInfo:
    (info,) = manager.transports()
    assert info.status == "broken"
    assert info.transport is None
    return info


# -- ok plugins ----------------------------------------------------------------------------------------------
def test_an_ok_plugin_is_listed_and_selectable(make_plugin: MakePlugin) -> None:
    entry_point = make_plugin("ok", plugin_source("ok"))
    manager = load_plugins(entry_points=[entry_point])
    (info,) = manager.transports()
    assert info.name == "ok"
    assert info.status == "ok"
    assert info.ok
    assert info.reason is None
    assert info.entry_point == f"ok = {PREFIX}ok"
    assert (info.distribution, info.version) == (None, None)  # a hand-made entry point has no distribution
    transport = manager.get("ok")
    assert isinstance(transport, type)
    assert issubclass(transport, Transport)
    assert info.transport is transport


def test_loading_never_instantiates_a_transport(make_plugin: MakePlugin) -> None:
    entry_point = make_plugin("lazy", plugin_source("lazy"))
    manager = load_plugins(entry_points=[entry_point])
    manager.get("lazy")
    module = sys.modules[f"{PREFIX}lazy"]
    assert module.CREATED == []


def test_a_plugin_may_register_several_transports(make_plugin: MakePlugin) -> None:
    manager = load_plugins(entry_points=[make_plugin("pair", plugin_source("zeta", "alpha"))])
    assert [info.name for info in manager.transports()] == ["alpha", "zeta"]  # sorted by name
    assert all(info.ok and info.entry_point == f"pair = {PREFIX}pair" for info in manager.transports())


def test_a_plugin_may_be_an_object(make_plugin: MakePlugin) -> None:
    source = (
        HEADER
        + transport_source("objected")
        + textwrap.dedent(
            """
            class _Plugin:
                PLUGIN_API_VERSION = 1

                @hookimpl
                def stoffelnet_register_transports(self, register):
                    register(FakeTransport)

            PLUGIN = _Plugin()
            """
        )
    )
    manager = load_plugins(entry_points=[make_plugin("obj", source, attr="PLUGIN")])
    assert by_name(manager)["objected"].ok


def test_an_empty_entry_point_list() -> None:
    manager = load_plugins(entry_points=[])
    assert manager.transports() == []


# -- broken plugins ------------------------------------------------------------------------------------------
def test_a_plugin_that_fails_to_import(make_plugin: MakePlugin) -> None:
    entry_point = make_plugin("crash", 'raise ImportError("needs libcrash")\n')
    info = only_broken(load_plugins(entry_points=[entry_point]))
    assert info.name == "crash"
    assert info.reason == "ImportError: needs libcrash"


def test_a_plugin_that_raises_anything_at_import(make_plugin: MakePlugin) -> None:
    entry_point = make_plugin("zero", "1 / 0\n")
    assert only_broken(load_plugins(entry_points=[entry_point])).reason == "ZeroDivisionError: division by zero"


def test_a_plugin_whose_module_is_missing() -> None:
    entry_point = importlib.metadata.EntryPoint(name="ghost", value=f"{PREFIX}ghost", group=ENTRY_POINT_GROUP)
    info = only_broken(load_plugins(entry_points=[entry_point]))
    assert info.reason == f"ModuleNotFoundError: No module named '{PREFIX}ghost'"


def test_a_plugin_whose_attribute_is_missing(make_plugin: MakePlugin) -> None:
    entry_point = make_plugin("noattr", plugin_source("noattr"), attr="nothing_here")
    assert str(only_broken(load_plugins(entry_points=[entry_point])).reason).startswith("AttributeError: ")


def test_a_plugin_of_another_api_version(make_plugin: MakePlugin) -> None:
    entry_point = make_plugin("future", plugin_source("future", api="2"))
    info = only_broken(load_plugins(entry_points=[entry_point]))
    assert info.reason == "plugin API 2, this stoffelnet-core speaks 1"
    assert info.name == "future"


def test_a_plugin_without_an_api_version(make_plugin: MakePlugin) -> None:
    entry_point = make_plugin("old", plugin_source("old", api=""))
    reason = only_broken(load_plugins(entry_points=[entry_point])).reason
    assert reason == "no PLUGIN_API_VERSION (this stoffelnet-core speaks plugin API 1)"


@pytest.mark.parametrize("api", ["'1'", "True", "1.0"])
def test_an_api_version_must_be_an_int(make_plugin: MakePlugin, api: str) -> None:
    entry_point = make_plugin("typed", plugin_source("typed", api=api))
    reason = only_broken(load_plugins(entry_points=[entry_point])).reason
    assert reason == f"PLUGIN_API_VERSION must be an int, got {api}"


def test_a_plugin_whose_hook_raises_breaks_only_itself(make_plugin: MakePlugin) -> None:
    source = HEADER + "PLUGIN_API_VERSION = 1\n" + transport_source("halfway")
    source += textwrap.dedent(
        """
        @hookimpl
        def stoffelnet_register_transports(register):
            register(FakeTransport)
            raise RuntimeError("boom")
        """
    )
    before = make_plugin("before", plugin_source("before"))
    boom = make_plugin("boom", source)
    after = make_plugin("after", plugin_source("after"))
    manager = load_plugins(entry_points=[before, boom, after])
    found = by_name(manager)
    assert found["before"].ok
    assert found["after"].ok
    assert found["boom"].status == "broken"
    assert found["boom"].reason == "RuntimeError: boom"
    assert "halfway" not in found  # what it registered before failing is not trusted
    with pytest.raises(errors.PluginError, match="is installed but broken: RuntimeError: boom"):
        manager.get("boom")


def test_a_plugin_that_registers_nothing(make_plugin: MakePlugin) -> None:
    entry_point = make_plugin("empty", plugin_source())
    assert only_broken(load_plugins(entry_points=[entry_point])).reason == "registers no transport"


def test_a_plugin_without_the_hook_registers_nothing(make_plugin: MakePlugin) -> None:
    entry_point = make_plugin("hookless", "PLUGIN_API_VERSION = 1\n")
    assert only_broken(load_plugins(entry_points=[entry_point])).reason == "registers no transport"


def test_duplicate_names_break_the_later_one(make_plugin: MakePlugin) -> None:
    first = make_plugin("first", plugin_source("same"))
    second = make_plugin("second", plugin_source("same"))
    manager = load_plugins(entry_points=[first, second])
    ok, broken = manager.transports()  # sorted: ok before broken under one name
    assert ok.ok
    assert ok.entry_point == f"first = {PREFIX}first"
    assert broken.status == "broken"
    assert broken.entry_point == f"second = {PREFIX}second"
    assert broken.reason == f"name 'same' already provided by entry point 'first = {PREFIX}first'"
    assert manager.get("same") is ok.transport  # the ok one wins


def test_duplicate_names_within_one_plugin(make_plugin: MakePlugin) -> None:
    manager = load_plugins(entry_points=[make_plugin("twice", plugin_source("dup", "dup"))])
    assert [info.status for info in manager.transports()] == ["ok", "broken"]


@pytest.mark.parametrize(
    ("registered", "reason"),
    [
        ("42", "registered 42, not a stoffelnet_core.transport.Transport subclass"),
        ("object", "registered <class 'object'>, not a stoffelnet_core.transport.Transport subclass"),
        ("Nameless", ".Nameless.name must be a transport name"),
        ("Upper", ".Upper.name must be a transport name (lowercase letters, digits, '.', '_', '-'), got 'UP'"),
        ("Abstract", ".Abstract is abstract: it does not implement dial, listen"),
    ],
)
def test_unfit_registrations_are_broken(make_plugin: MakePlugin, registered: str, reason: str) -> None:
    extra = f"""
        class Nameless(Transport):
            async def listen(self, address, on_pipe): ...
            async def dial(self, address, *, role): ...

        class Upper(Nameless):
            name = "UP"

        class Abstract(Transport):
            name = "abstract"

        @hookimpl
        def stoffelnet_register_transports(register):
            register({registered})
    """
    entry_point = make_plugin("unfit", HEADER + "PLUGIN_API_VERSION = 1\n" + textwrap.dedent(extra))
    info = only_broken(load_plugins(entry_points=[entry_point]))
    assert reason in str(info.reason)
    assert info.name == ("abstract" if registered == "Abstract" else "unfit")


def test_an_unfit_registration_does_not_spoil_the_fit_ones(make_plugin: MakePlugin) -> None:
    source = plugin_source("fit")
    source = source.replace("    register(T0)\n", "    register(T0)\n    register(42)\n")
    manager = load_plugins(entry_points=[make_plugin("mixed", source)])
    assert [(info.name, info.status) for info in manager.transports()] == [("fit", "ok"), ("mixed", "broken")]


def test_a_hookimpl_with_a_wrong_signature(make_plugin: MakePlugin) -> None:
    source = HEADER + "PLUGIN_API_VERSION = 1\n@hookimpl\ndef stoffelnet_register_transports(reg):\n    pass\n"
    reason = only_broken(load_plugins(entry_points=[make_plugin("sig", source)])).reason
    assert str(reason).startswith("PluginValidationError: ")


def test_a_hookimpl_of_an_unknown_hook(make_plugin: MakePlugin) -> None:
    source = plugin_source("typo", extra="\n@hookimpl\ndef stoffelnet_register_transport(register):\n    pass\n")
    bad = make_plugin("typo", source)
    good = make_plugin("good", plugin_source("good"))
    manager = load_plugins(entry_points=[bad, good])
    found = by_name(manager)
    assert str(found["typo"].reason).startswith("PluginValidationError: ")
    assert "stoffelnet_register_transport" in str(found["typo"].reason)
    assert found["good"].ok  # check_pending after the bad one did not blame the next


def test_the_same_module_twice(make_plugin: MakePlugin) -> None:
    entry_point = make_plugin("once", plugin_source("once"))
    again = importlib.metadata.EntryPoint(name="again", value=entry_point.value, group=ENTRY_POINT_GROUP)
    manager = load_plugins(entry_points=[entry_point, again])
    found = {info.entry_point: info for info in manager.transports()}
    assert found[f"once = {PREFIX}once"].ok
    assert found[f"again = {PREFIX}once"].status == "broken"


def test_an_exception_with_no_message(make_plugin: MakePlugin) -> None:
    entry_point = make_plugin("silent", "raise KeyError\n")
    assert only_broken(load_plugins(entry_points=[entry_point])).reason == "KeyError"


def test_broken_plugins_are_logged_at_info(make_plugin: MakePlugin, caplog: pytest.LogCaptureFixture) -> None:
    entry_point = make_plugin("logged", "raise ImportError('x')\n")
    with caplog.at_level(logging.DEBUG, logger="stoffelnet_core.plugins"):
        load_plugins(entry_points=[entry_point])
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert "ImportError: x" in record.getMessage()


def test_listing_the_entry_points_failing_is_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_metadata(**_: object) -> object:
        raise OSError("corrupt site-packages")

    monkeypatch.setattr(importlib.metadata, "entry_points", broken_metadata)
    info = only_broken(load_plugins())
    assert info.reason == "OSError: corrupt site-packages"


# -- get -----------------------------------------------------------------------------------------------------
def test_get_a_missing_transport_lists_the_installed_ones(make_plugin: MakePlugin) -> None:
    manager = load_plugins(
        entry_points=[make_plugin("b", plugin_source("bravo")), make_plugin("a", plugin_source("alpha"))]
    )
    with pytest.raises(errors.PluginError) as caught:
        manager.get("quic")
    assert str(caught.value) == (
        "no transport named 'quic' (installed: alpha, bravo); install it with: pip install stoffelnet-quic"
    )


def test_get_when_nothing_is_installed() -> None:
    with pytest.raises(errors.PluginError, match=r"no transport is installed\); install it with: pip install"):
        load_plugins(entry_points=[]).get("tcp-tls")


def test_get_a_broken_transport_says_why(make_plugin: MakePlugin) -> None:
    manager = load_plugins(entry_points=[make_plugin("crash", 'raise ImportError("needs libcrash")\n')])
    with pytest.raises(errors.PluginError) as caught:
        manager.get("crash")
    assert str(caught.value) == (
        f"transport 'crash' (entry point 'crash = {PREFIX}crash') is installed but broken: ImportError: needs libcrash"
    )


def test_broken_ones_are_not_offered_as_installed(make_plugin: MakePlugin) -> None:
    manager = load_plugins(entry_points=[make_plugin("crash", "raise ImportError\n")])
    with pytest.raises(errors.PluginError, match="no transport is installed"):
        manager.get("other")


# -- register ------------------------------------------------------------------------------------------------
class Direct(Transport):
    name = "direct"

    async def listen(self, address: object, on_pipe: object) -> object:  # type: ignore[override]
        raise NotImplementedError

    async def dial(self, address: object, *, role: object) -> object:  # type: ignore[override]
        raise NotImplementedError


def test_register_a_class_directly() -> None:
    manager = PluginManager()
    info = manager.register(Direct)
    assert info == TransportInfo(
        name="direct",
        entry_point=f"{__name__}:Direct",
        distribution=None,
        version=None,
        status="ok",
        transport=Direct,
    )
    assert manager.get("direct") is Direct
    assert manager.transports() == [info]


def test_register_with_an_installed_distribution_finds_its_version() -> None:
    info = PluginManager().register(Direct, distribution="pluggy")
    assert info.distribution == "pluggy"
    assert info.version == importlib.metadata.version("pluggy")
    assert PluginManager().register(Direct, distribution="not-installed-here").version is None


def test_register_refuses_unfit_classes() -> None:
    manager = PluginManager()
    manager.register(Direct)
    with pytest.raises(errors.PluginError, match="name 'direct' already provided by entry point"):
        manager.register(Direct)
    with pytest.raises(errors.PluginError, match=r"not a stoffelnet_core\.transport\.Transport subclass"):
        manager.register(int)  # type: ignore[arg-type]
    with pytest.raises(errors.PluginError, match="got None"):
        manager.register(Transport)  # type: ignore[type-abstract]  # no name

    class Half(Transport):
        name = "half"

    with pytest.raises(errors.PluginError, match=r"\.Half is abstract: it does not implement dial, listen"):
        manager.register(Half)  # type: ignore[type-abstract]
    assert len(manager.transports()) == 1


# -- the default manager -------------------------------------------------------------------------------------
@pytest.fixture
def fresh_default() -> Iterator[None]:
    reset_default_plugins()
    yield
    reset_default_plugins()


@pytest.mark.usefixtures("fresh_default")
def test_default_plugins_is_cached_until_reset() -> None:
    first = default_plugins()
    assert default_plugins() is first
    reset_default_plugins()
    assert default_plugins() is not first


@pytest.mark.usefixtures("fresh_default")
def test_default_plugins_reads_the_installed_entry_points() -> None:
    installed = {entry_point.name for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if "loopback" not in installed:
        pytest.skip("stoffelnet-loopback is not installed")
    info = by_name(default_plugins())["loopback"]
    assert info.ok
    assert info.distribution == "stoffelnet-loopback"
    assert info.version is not None
