"""The plugin manager: finds transports through entry points, and never lets a broken plugin break the host.

Built by `load_plugins`, never at import time. Each entry point in the group ``stoffelnet.transports`` is
loaded, version-checked and asked for its transports on its own. Anything that goes wrong becomes a *broken*
entry with its reason: ``stoffelnet transports`` lists it, and `PluginManager.get` raises it only when a
config asks for that name. Loading creates no transport: being installed never activates one, only the
config does.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import logging
import re
from collections.abc import Iterable
from typing import Literal

import attrs
import pluggy

from . import errors, hookspecs
from .config import TRANSPORT_NAME_PATTERN
from .transport import PLUGIN_API_VERSION, Transport

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginManager",
    "Status",
    "TransportInfo",
    "default_plugins",
    "load_plugins",
    "reset_default_plugins",
]

ENTRY_POINT_GROUP = "stoffelnet.transports"

Status = Literal["ok", "broken"]

_log = logging.getLogger(__name__)
_NAME = re.compile(TRANSPORT_NAME_PATTERN)
_HOOK = "stoffelnet_register_transports"


@attrs.frozen(kw_only=True)
class TransportInfo:
    """One transport as the manager found it: where it came from, and whether it can be used (and why not)."""

    name: str  # the transport's name; for a plugin that failed before naming one, its entry point's name
    entry_point: str  # "name = module:attr" as the distribution declares it (or "module:Class" if registered)
    distribution: str | None
    version: str | None
    status: Status
    reason: str | None = None  # why it is broken; None when ok
    transport: type[Transport] | None = None  # the class (never an instance); None when broken

    @property
    def ok(self) -> bool:
        """True when `get` would return this transport."""
        return self.status == "ok"


@attrs.frozen
class _Origin:
    entry_point: str
    distribution: str | None
    version: str | None

    @property
    def owner(self) -> str:
        if self.distribution is not None:
            return f"distribution {self.distribution}"
        return f"entry point {self.entry_point!r}"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _origin(entry_point: importlib.metadata.EntryPoint) -> _Origin:
    distribution = version = None
    dist = getattr(entry_point, "dist", None)  # None for entry points built by hand (tests)
    if dist is not None:
        try:
            distribution = dist.name or None
            version = dist.version or None
        except Exception:  # metadata is the plugin's file; a bad one must not stop us
            _log.debug("unreadable metadata for entry point %r", entry_point.name, exc_info=True)
    return _Origin(f"{entry_point.name} = {entry_point.value}", distribution, version)


def _api_problem(plugin: object) -> str | None:
    """Why `plugin` does not speak our plugin API, or None when it does."""
    version = getattr(plugin, "PLUGIN_API_VERSION", None)
    if version is None:
        return f"no PLUGIN_API_VERSION (this stoffelnet-core speaks plugin API {PLUGIN_API_VERSION})"
    if type(version) is not int:
        return f"PLUGIN_API_VERSION must be an int, got {version!r}"
    if version != PLUGIN_API_VERSION:
        return f"plugin API {version}, this stoffelnet-core speaks {PLUGIN_API_VERSION}"
    return None


class PluginManager:
    """The installed transports, each ok or broken; `get` hands out a transport class by its config name.

    A typed front for pluggy, so nothing else in stoffelnet calls pluggy.
    """

    def __init__(self) -> None:
        self._pluggy = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pluggy.add_hookspecs(hookspecs)
        self._infos: list[TransportInfo] = []

    # -- loading ---------------------------------------------------------------------------------------------
    def load_entry_points(self, entry_points: Iterable[importlib.metadata.EntryPoint]) -> None:
        """Load each entry point on its own; a failure is recorded as a broken entry, never raised."""
        for entry_point in entry_points:
            try:
                self._load(entry_point)
            except Exception as exc:  # a bug of ours must not stop the other plugins either
                _log.exception("loading transport plugin %r failed", getattr(entry_point, "name", entry_point))
                self._broken(str(getattr(entry_point, "name", "?")), _Origin(repr(entry_point), None, None), exc)

    def _load(self, entry_point: importlib.metadata.EntryPoint) -> None:
        origin = _origin(entry_point)
        try:
            plugin = entry_point.load()
        except Exception as exc:
            self._broken(entry_point.name, origin, exc)
            return
        problem = _api_problem(plugin)
        if problem is not None:
            self._broken(entry_point.name, origin, problem)
            return
        try:
            self._pluggy.register(plugin, name=f"{ENTRY_POINT_GROUP}:{origin.entry_point}")
            self._pluggy.check_pending()  # impls of hooks we lack; only this plugin can have added one
        except Exception as exc:
            if self._pluggy.is_registered(plugin):
                self._pluggy.unregister(plugin)
            self._broken(entry_point.name, origin, exc)
            return
        others = [other for other in self._pluggy.get_plugins() if other is not plugin]
        call = self._pluggy.subset_hook_caller(_HOOK, remove_plugins=others)
        found: list[TransportInfo] = []
        try:
            call(register=functools.partial(self._collect, plugin=entry_point.name, origin=origin, found=found))
        except Exception as exc:
            # What it registered before failing is not trusted either: the whole plugin is broken.
            self._pluggy.unregister(plugin)
            self._broken(entry_point.name, origin, exc)
            return
        if not found:
            self._broken(entry_point.name, origin, "registers no transport")
            return
        for info in found:
            self._record(info)

    def _collect(
        self, transport_cls: type[Transport], *, plugin: str, origin: _Origin, found: list[TransportInfo]
    ) -> None:
        """The `register` callback handed to a plugin's hook: it records, and never raises into the plugin."""
        try:
            name, problem = self._check(transport_cls, pending=found)
        except Exception as exc:
            name, problem = None, _describe(exc)
        if problem is not None:
            found.append(self._info(name or plugin, origin, problem))
        else:
            found.append(attrs.evolve(self._info(str(name), origin, None), transport=transport_cls))

    def _check(self, transport_cls: object, *, pending: Iterable[TransportInfo] = ()) -> tuple[str | None, str | None]:
        """The transport's name (if it has a usable one) and why it cannot be registered (None if it can)."""
        if not (isinstance(transport_cls, type) and issubclass(transport_cls, Transport)):
            return None, f"registered {transport_cls!r}, not a stoffelnet_core.transport.Transport subclass"
        label = f"{transport_cls.__module__}.{transport_cls.__qualname__}"
        name = getattr(transport_cls, "name", None)
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            return None, (
                f"{label}.name must be a transport name (lowercase letters, digits, '.', '_', '-'), got {name!r}"
            )
        if inspect.isabstract(transport_cls):
            missing = ", ".join(sorted(getattr(transport_cls, "__abstractmethods__", ())))
            return name, f"{label} is abstract: it does not implement {missing}"
        for info in [*self._infos, *pending]:
            if info.ok and info.name == name:
                owner = _Origin(info.entry_point, info.distribution, info.version).owner
                return name, f"name {name!r} already provided by {owner}"
        return name, None

    @staticmethod
    def _info(name: str, origin: _Origin, problem: str | None) -> TransportInfo:
        return TransportInfo(
            name=name,
            entry_point=origin.entry_point,
            distribution=origin.distribution,
            version=origin.version,
            status="ok" if problem is None else "broken",
            reason=problem,
        )

    def _broken(self, name: str, origin: _Origin, reason: str | BaseException) -> None:
        text = reason if isinstance(reason, str) else _describe(reason)
        self._record(self._info(name, origin, text))

    def _record(self, info: TransportInfo) -> None:
        if info.ok:
            _log.debug("transport %r from %s is available", info.name, info.entry_point)
        else:
            # INFO, not WARNING: an installed plugin nobody selected should not print on every run.
            _log.info("transport plugin %r (%s) is broken: %s", info.name, info.entry_point, info.reason)
        self._infos.append(info)

    # -- use -------------------------------------------------------------------------------------------------
    def register(self, transport_cls: type[Transport], *, distribution: str | None = None) -> TransportInfo:
        """Add a transport class directly (tests, embedding); raises `errors.PluginError` if it is unfit."""
        name, problem = self._check(transport_cls)
        if problem is not None:
            raise errors.PluginError(f"cannot register transport: {problem}")
        version = None
        if distribution is not None:
            try:
                version = importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                pass
        origin = _Origin(f"{transport_cls.__module__}:{transport_cls.__qualname__}", distribution, version)
        info = attrs.evolve(self._info(str(name), origin, None), transport=transport_cls)
        self._record(info)
        return info

    def transports(self) -> list[TransportInfo]:
        """Every transport found, ok or broken, sorted by name (ok before broken under one name)."""
        return sorted(self._infos, key=lambda info: (info.name, not info.ok, info.entry_point))

    def get(self, name: str) -> type[Transport]:
        """The transport class a config's ``transport = "<name>"`` selects (creating it is the caller's job).

        Raises `errors.PluginError` saying why when it is broken, or what is installed when it is missing.
        """
        broken = []
        for info in self._infos:
            if info.name == name:
                if info.ok and info.transport is not None:
                    return info.transport
                broken.append(info)
        if broken:
            info = broken[0]
            origin = _Origin(info.entry_point, info.distribution, info.version)
            raise errors.PluginError(f"transport {name!r} ({origin.owner}) is installed but broken: {info.reason}")
        available = sorted({info.name for info in self._infos if info.ok})
        installed = f"installed: {', '.join(available)}" if available else "no transport is installed"
        raise errors.PluginError(
            f"no transport named {name!r} ({installed}); install it with: pip install stoffelnet-{name}"
        )


def load_plugins(*, entry_points: Iterable[importlib.metadata.EntryPoint] | None = None) -> PluginManager:
    """Build a manager from the installed ``stoffelnet.transports`` entry points (or from `entry_points`)."""
    manager = PluginManager()
    if entry_points is None:
        try:
            entry_points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
        except Exception as exc:  # a corrupt installation: report it like a broken plugin
            _log.exception("cannot list the %s entry points", ENTRY_POINT_GROUP)
            manager._broken(ENTRY_POINT_GROUP, _Origin(ENTRY_POINT_GROUP, None, None), exc)
            return manager
    manager.load_entry_points(entry_points)
    return manager


@functools.cache
def default_plugins() -> PluginManager:
    """The installed transports, loaded on first use and cached; `reset_default_plugins` forgets them."""
    return load_plugins()


def reset_default_plugins() -> None:
    """Forget the cached manager (tests; after installing a plugin at run time)."""
    default_plugins.cache_clear()
