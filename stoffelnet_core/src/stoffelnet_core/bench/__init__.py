"""`stoffelnet bench`: every installed transport beside its bare baseline, measured in one run.

Only ratios measured in one run count: absolute figures on shared machines drift by up to 2x between runs, and the
drift comes in phases of seconds. So each case measures stoffelnet and its baseline back to back, as a pair (A B,
then B A in the next repeat, so neither always goes first; the garbage of one is collected before the other starts),
and a row's ratio is the median over the repeats of each pair's ratio: drift cancels within a pair, and one lucky or
unlucky phase does not decide the row. A row's value and baseline are the medians of their repeats.

**Baselines belong to their transport.** Core never imports a transport: for a transport whose class lives in
package ``P``, the harness imports ``P.baseline`` when it exists (``stoffelnet_tcp_tls.baseline``,
``stoffelnet_quic.baseline``). A third-party transport offers one the same way; the module needs two names:

- ``NAME``: a short string saying what the baseline is (``"bare asyncio TLS"``);
- ``open_mesh(n)``: an async context manager yielding ``mesh[me][peer] == (send, recv)`` for `n` parties connected
  pairwise in this process, where ``await send(data)`` sends one message and ``await recv()`` returns the next one.

and may have a third: ``VARIANTS``, a mapping from a variant's name to the transport options it sets (its
``[transport_options.<name>]``). Each variant gets rows of its own, ``<name>[<variant>]``, beside the same baseline:
``quic[qh3]`` is the quic transport with ``engine = "qh3"`` beside bare aioquic at the same settings. A variant is
measured by default like its transport, or on its own with ``--transport quic[qh3]``; its rows cover the cases in one
process (the multi-process rounds start parties from config files written by `deploy`, which sets no options).
A fourth, ``VARIANT_BASELINES``, maps some variants to another baseline, ``(label, open_mesh)``: ``quic[shipped]``
is the transport as shipped beside bare aioquic at `QuicConfiguration()`'s own defaults.

Write it on the same library as the transport, with the same keys and settings, as a competent hand-written program
would (coalesced writes, reads parsed in place): a weak baseline flatters the ratio. Without such a module the rows
show the transport's figures with no ratio. Loopback's baseline is core's `asyncio.Queue` (`queue_baseline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import importlib
import json
import os
import platform
import ssl
import statistics
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Literal, TextIO

import attrs

from .. import errors, plugins
from ..runner import BUFFER_KINDS, BufferPeaks
from ..testing import local_network
from . import _cases, procs, queue_baseline
from ._cases import Link, Mesh, Recv, Send
from .support import network_ends

__all__ = [
    "FULL",
    "QUICK",
    "Baseline",
    "Link",
    "Mesh",
    "OpenMesh",
    "Recv",
    "Row",
    "Send",
    "Sizes",
    "as_json",
    "baseline_names",
    "buffer_rows",
    "find_baseline",
    "format_table",
    "machine",
    "paired_ratio",
    "plot",
    "require_matplotlib",
    "run_bench",
    "split_variant",
    "warm_malloc",
    "write_json",
]

Better = Literal["higher", "lower"]
OpenMesh = Callable[[int], AbstractAsyncContextManager[Mesh]]
"""``open_mesh(n)``: `n` parties connected pairwise in this process (see the module docstring)."""
Progress = Callable[[str], None]
"""Called with a short line before each measurement."""

_TIMEOUT = 300.0  # seconds one measurement may take before the run fails


@attrs.frozen
class Sizes:
    """How much each case moves, and how often it is repeated."""

    rtt: int  # timed 64 B round trips
    small: int  # 64 B one-way messages
    kib: int  # 1 KiB one-way messages
    big: int  # 64 KiB one-way messages
    huge: int  # 1 MiB one-way messages
    rounds: int  # all-to-all rounds, in one process and across processes
    parties: tuple[int, ...]  # party counts of the multi-process rounds
    repeats: int
    codec: int = 20_000  # envelopes framed and unframed


QUICK = Sizes(rtt=600, small=15_000, kib=8000, big=200, huge=12, rounds=500, parties=(3,), repeats=2, codec=5000)
FULL = Sizes(rtt=5000, small=100_000, kib=100_000, big=3000, huge=150, rounds=2000, parties=(3, 5, 8), repeats=3)


@attrs.frozen
class Baseline:
    """A transport's bare baseline: what it is, and how to open `n` parties of it in this process; and the
    transport's variants measured beside it (variant name -> transport options)."""

    name: str
    open_mesh: OpenMesh
    variants: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    party_module: str | None = None  # the module, when it has `open_party` (multi-process rounds: `bench.procs`)
    # the variants measured beside another baseline: variant name -> (what that baseline is, its open_mesh)
    variant_baselines: Mapping[str, tuple[str, OpenMesh]] = attrs.field(factory=dict)

    def for_variant(self, variant: str | None) -> tuple[str, OpenMesh]:
        """What `variant` (None: the transport itself) is measured beside: the label and its ``open_mesh``."""
        if variant is not None and variant in self.variant_baselines:
            return self.variant_baselines[variant]
        return self.name, self.open_mesh


@attrs.frozen
class Target:
    """What a row should reach: the ratio to the baseline, or (`absolute`) the value itself."""

    op: Literal[">=", "<="]
    value: float
    absolute: bool = False
    shown: str | None = None  # the TARGET cell, when it says more than op and value (value is what `met` checks)

    def met(self, value: float, ratio: float | None) -> bool | None:
        got = value if self.absolute else ratio
        if got is None:
            return None
        return got >= self.value if self.op == ">=" else got <= self.value

    def text(self, unit: str) -> str:
        if self.shown is not None:
            return self.shown
        if self.absolute:
            return f"{self.op} {_number(self.value)} {unit}"
        return f"{self.op} {self.value:.2f}x"


@attrs.frozen
class Row:
    """One cell of the table: a transport's figure for a case, beside its baseline's."""

    transport: str
    case: str
    unit: str
    value: float
    baseline: float | None
    better: Better
    target: Target | None = None
    paired: float | None = None  # the median of the repeats' own ratios (`run_bench`), when there were repeats

    @property
    def ratio(self) -> float | None:
        """value / baseline (whichever way is better: see `better`); from a run, the median of the repeats' paired
        ratios."""
        if self.paired is not None:
            return self.paired
        return None if self.baseline is None or self.baseline == 0 else self.value / self.baseline


# -- baselines and targets ---------------------------------------------------------------------------------------
def find_baseline(name: str, transport: type[Any] | None) -> Baseline | None:
    """The baseline of transport `name` (class `transport`): ``<its package>.baseline``, or None if it has none.

    Raises `errors.PluginError` when the module exists but lacks `NAME` or `open_mesh` or fails to import.
    """
    if transport is not None:
        module_name = transport.__module__.partition(".")[0] + ".baseline"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise errors.PluginError(f"{name}: baseline {module_name} failed to import: {exc}") from exc
        except Exception as exc:
            raise errors.PluginError(f"{name}: baseline {module_name} failed to import: {exc}") from exc
        else:
            label, open_mesh = getattr(module, "NAME", None), getattr(module, "open_mesh", None)
            if not isinstance(label, str) or not callable(open_mesh):
                raise errors.PluginError(f"{name}: {module_name} needs a NAME string and an open_mesh(n) function")
            variants = getattr(module, "VARIANTS", {})
            if not isinstance(variants, Mapping) or not all(
                isinstance(k, str) and isinstance(v, Mapping) for k, v in variants.items()
            ):
                raise errors.PluginError(f"{name}: {module_name}.VARIANTS must map variant names to option tables")
            others = getattr(module, "VARIANT_BASELINES", {})
            if not isinstance(others, Mapping) or not all(
                k in variants and isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) and callable(v[1])
                for k, v in others.items()
            ):
                raise errors.PluginError(
                    f"{name}: {module_name}.VARIANT_BASELINES must map some of its VARIANTS to (label, open_mesh)"
                )
            party_module = module_name if callable(getattr(module, "open_party", None)) else None
            return Baseline(label, open_mesh, dict(variants), party_module, dict(others))
    if name == "loopback":
        return Baseline(queue_baseline.NAME, queue_baseline.open_mesh)
    return None


_AS_FAST = Target("<=", round(1 / 0.9, 2))  # >= 0.9x as fast: <= 1.11x the time
_RATIO_TARGETS: dict[str, dict[str, Target]] = {
    # the targets, as ratios to the bare baseline in the same run (a variant: its transport's, unless named)
    "tcp-tls": {"rtt": Target("<=", 1.15), "rate": Target(">=", 0.9)},
    "quic": {"rtt": _AS_FAST, "rate": Target(">=", 0.9)},
    # as shipped, beside bare aioquic at its own defaults: >= 1.5x on the one-way rows, where the defaults differ
    # (datagram size, flow-control windows); a round trip or a round of 64 B is the same work at any of them
    "quic[shipped]": (_SHIPPED := {"rtt": _AS_FAST, "rate": Target(">=", 1.5), "rounds": Target(">=", 0.9)}),
    "quic[qh3-shipped]": _SHIPPED,
}


def split_variant(name: str) -> tuple[str, str | None]:
    """``"quic[qh3]"`` -> ``("quic", "qh3")``; a plain transport name -> ``(name, None)``."""
    if name.endswith("]") and "[" in name:
        base, _, variant = name[:-1].partition("[")
        return base, variant
    return name, None


def _target(transport: str, case: str) -> Target | None:
    if transport == "core" and case.startswith("codec"):
        return Target("<=", 5.0, absolute=True)
    if split_variant(transport)[0] == "loopback":
        if case == "self-delivery 64 B":
            return Target(">=", 0.5)
        if case == "one-way 64 B":
            return Target(">=", 200_000, absolute=True)
        return None
    targets = _RATIO_TARGETS.get(transport) or _RATIO_TARGETS.get(split_variant(transport)[0], {})
    if case == "round trip 64 B, median":
        return targets.get("rtt")
    if case.startswith("rounds"):
        return targets.get("rounds", targets.get("rate"))
    if case.startswith("one-way"):
        return targets.get("rate")
    return None


# -- meshes ------------------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def _stoffelnet_mesh(transport: str, n: int, options: Mapping[str, Any] | None = None) -> AsyncIterator[Mesh]:
    overrides: dict[str, Any] = {"transport_options": {transport: dict(options)}} if options else {}
    async with local_network(n, transport=transport, **overrides) as lan:
        yield network_ends(lan)


@contextlib.asynccontextmanager
async def _self_mesh(transport: str) -> AsyncIterator[Link]:
    async with local_network(1, transport=transport) as lan:
        net = lan[0]
        yield functools.partial(net.send, 0), functools.partial(net.receive_from, 0)


@contextlib.asynccontextmanager
async def _queue_self() -> AsyncIterator[Link]:
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=65536)
    yield queue.put, queue.get


# -- the in-process cases ----------------------------------------------------------------------------------------
_SMALL = b"p" * 64


Measure = Callable[[OpenMesh, Sizes], Coroutine[Any, Any, list[float]]]
"""One measurement of a case over a mesh: its figures (the first decides which repeat is best)."""


@attrs.frozen
class _Case:
    name: str
    unit: str
    better: Better
    measure: Measure


async def _rtt(open_mesh: OpenMesh, s: Sizes) -> list[float]:
    async with open_mesh(2) as mesh:
        return list(await _cases.round_trips_us(mesh[0][1], mesh[1][0], _SMALL, s.rtt, warm=min(100, s.rtt)))


def _one_way(size: int, count: Callable[[Sizes], int], per_mib: bool) -> Measure:
    payload = b"m" * size

    async def measure(open_mesh: OpenMesh, s: Sizes) -> list[float]:
        n = count(s)
        async with open_mesh(2) as mesh:
            elapsed = await _cases.one_way_s(mesh[0][1][0], mesh[1][0][1], payload, n, warm=max(1, n // 10))
        return [n * size / 2**20 / elapsed if per_mib else n / elapsed]

    return measure


async def _rounds3(open_mesh: OpenMesh, s: Sizes) -> list[float]:
    async with open_mesh(3) as mesh:
        return [s.rounds / await _cases.rounds_s(mesh, _SMALL, s.rounds, warm=min(50, s.rounds))]


_CASES = [
    _Case("round trip 64 B, median", "µs", "lower", _rtt),  # the p99 row comes from the same measurement
    _Case("one-way 64 B", "msg/s", "higher", _one_way(64, lambda s: s.small, per_mib=False)),
    _Case("one-way 1 KiB", "msg/s", "higher", _one_way(1024, lambda s: s.kib, per_mib=False)),
    _Case("one-way 64 KiB", "MiB/s", "higher", _one_way(64 * 1024, lambda s: s.big, per_mib=True)),
    _Case("one-way 1 MiB", "MiB/s", "higher", _one_way(2**20, lambda s: s.huge, per_mib=True)),
    _Case("rounds 3 parties 64 B, 1 proc", "rounds/s", "higher", _rounds3),
]


async def _timed(coro: Coroutine[Any, Any, list[float]]) -> list[float]:
    async with asyncio.timeout(_TIMEOUT):
        return await coro


async def _self_delivery(link: AbstractAsyncContextManager[Link], n: int) -> list[float]:
    async with link as (send, recv):
        return [n / await _cases.one_way_s(send, recv, _SMALL, n, warm=max(1, n // 10))]


# -- the multi-process rounds ------------------------------------------------------------------------------------
def _demo_memory(
    transport: str, parties: int, size: int, rounds: int
) -> tuple[tuple[int, ...], tuple[BufferPeaks, ...]]:
    """`stoffelnet demo`'s rounds (no clients): each party's peak RSS in KiB, and the most each party's peer
    connections held in their buffers."""
    from ..demo import run_processes

    result = asyncio.run(
        run_processes(parties=parties, clients=0, rounds=rounds, size=size, transport=transport, timeout=_TIMEOUT)
    )
    if not result.ok or result.rounds_s <= 0:
        raise errors.NetworkError(f"{transport}: {parties}-party rounds failed: {'; '.join(result.failures[:3])}")
    return result.rss_peak_kib, result.buffers


# -- the run -----------------------------------------------------------------------------------------------------
Samples = dict[tuple[str, str, str], list[list[float]]]
"""``(transport, case, "stoffelnet" | "baseline")`` -> each repeat's figures, in repeat order."""


def paired_ratio(mine: Sequence[float], theirs: Sequence[float]) -> float:
    """The median of ``mine[i] / theirs[i]``: each repeat's pair, measured back to back, gives one ratio."""
    return statistics.median(a / b for a, b in zip(mine, theirs, strict=True))


def _pair(samples: Samples, transport: str, case: str, impls: Sequence[tuple[str, Callable[[], list[float]]]]) -> None:
    """One repeat of `case`: each of `impls` measured back to back, garbage collected before each (no measurement
    pays for another's), in the order given."""
    for impl, measure in impls:
        gc.collect()
        samples.setdefault((transport, case, impl), []).append(measure())


def warm_malloc() -> None:
    """Put the C allocator where a long-running party's is, before anything is measured.

    glibc serves blocks above its mmap threshold (128 KiB at start) with mmap and a munmap on free, 5-8 µs each,
    and raises the threshold to the size of the first such block a process frees. A fresh process therefore pays
    that for every 256 KiB datagram read asyncio makes (bare aioquic does, per datagram) until some case happens to
    free a large block: which side of a pair ran in which state used to depend on the order of the cases. One freed
    4 MiB block settles it for every measurement alike (and is harmless where malloc is not glibc's)."""
    block = bytearray(4 << 20)
    del block


def _run_case(case: _Case, open_mesh: OpenMesh, sizes: Sizes) -> list[float]:
    return asyncio.run(_timed(case.measure(open_mesh, sizes)))


def _run_self(link: Callable[[], AbstractAsyncContextManager[Link]], n: int) -> list[float]:
    return asyncio.run(_timed(_self_delivery(link(), n)))


def _process_rounds(module: str, parties: int, size: int, rounds: int) -> list[float]:
    return [procs.process_rounds(module, parties, size, rounds, _TIMEOUT)]


def _turn(impls: list[Any], repeat: int) -> list[Any]:
    """`impls` in order on odd repeats, reversed on even ones: neither side always goes first."""
    return impls if repeat % 2 else impls[::-1]


def run_bench(
    transports: Sequence[str] | None = None, sizes: Sizes = FULL, progress: Progress | None = None
) -> list[Row]:
    """Measure every case for each of `transports` (default: every installed transport that is ok) beside its
    baseline, in pairs measured back to back, ``sizes.repeats`` times (see the module docstring); returns the rows in
    table order.

    Raises `errors.ConfigError` for an unknown or broken transport name, `errors.PluginError` for a broken baseline
    module, `errors.NetworkError` when a multi-process run fails.
    """
    say = progress or (lambda _line: None)
    found = {info.name: info for info in plugins.default_plugins().transports()}
    names = list(transports) if transports else [name for name, info in found.items() if info.ok]
    for name in names:
        info = found.get(split_variant(name)[0])
        if info is None or not info.ok:
            why = "not installed" if info is None else f"broken: {info.reason}"
            raise errors.ConfigError(f"transport {name!r} is {why} (see `stoffelnet transports`)", key="transport")
    baselines = {base: find_baseline(base, found[base].transport) for base in {split_variant(n)[0] for n in names}}
    if not transports:  # by default, every variant too, each after its transport
        names = [v for name in names for v in [name, *(f"{name}[{x}]" for x in _variants(baselines[name]))]]
    options: dict[str, Mapping[str, Any] | None] = {}
    for name in names:
        base, variant = split_variant(name)
        known = _variants(baselines[base])
        if variant is not None and variant not in known:
            offered = ", ".join(f"{base}[{x}]" for x in known) or "none"
            raise errors.ConfigError(
                f"transport {name!r}: {base} has no variant {variant!r} here (variants: {offered})", key="transport"
            )
        options[name] = known[variant] if variant is not None else None
    warm_malloc()
    samples: Samples = {}
    rss: dict[tuple[str, int], int] = {}
    buffers: dict[tuple[str, int], BufferPeaks] = {}  # the worst party's, over every run of that party count
    for repeat in range(1, sizes.repeats + 1):
        say(f"repeat {repeat}/{sizes.repeats}: codec")
        codec_impls = [
            ("stoffelnet", lambda: [_cases.codec_us(_SMALL, sizes.codec)]),
            ("baseline", lambda: [_cases.cbor_us(_SMALL, sizes.codec)]),
        ]
        _pair(samples, "core", "codec", _turn(codec_impls, repeat))
        for name in names:
            base, variant = split_variant(name)
            baseline = baselines[base]
            mesh = functools.partial(_stoffelnet_mesh, base, options=options[name])
            meshes: list[tuple[str, OpenMesh]] = [("stoffelnet", mesh)]
            if baseline is not None:
                meshes.append(("baseline", baseline.for_variant(variant)[1]))
            for case in _CASES:
                say(f"repeat {repeat}/{sizes.repeats}: {name} {case.name}")
                runs = [(impl, functools.partial(_run_case, case, open_mesh, sizes)) for impl, open_mesh in meshes]
                _pair(samples, name, case.name, _turn(runs, repeat))
            if name == "loopback":
                say(f"repeat {repeat}/{sizes.repeats}: loopback self-delivery")
                selves = [
                    ("stoffelnet", functools.partial(_run_self, functools.partial(_self_mesh, name), sizes.small)),
                    ("baseline", functools.partial(_run_self, _queue_self, sizes.small)),
                ]
                _pair(samples, name, "self", _turn(selves, repeat))
                continue  # loopback lives in one process: no multi-process rounds
            if variant is not None:
                continue  # the multi-process rounds run parties from `deploy`'s config files: no options there
            for parties in sizes.parties:
                for size in (64, 4096):
                    say(f"repeat {repeat}/{sizes.repeats}: {name} {parties} processes, rounds of {size} B")
                    modules = [("stoffelnet", procs.STOFFELNET + name)]
                    if baseline is not None and baseline.party_module is not None:
                        modules.append(("baseline", baseline.party_module))
                    rounds = [
                        (impl, functools.partial(_process_rounds, module, parties, size, sizes.rounds))
                        for impl, module in modules
                    ]
                    _pair(samples, name, f"procs {parties} {size}", _turn(rounds, repeat))
            if repeat == 1:  # memory: the demo's parties (every message checked) at the largest party count, once
                parties = max(sizes.parties)
                say(f"{name} {parties} processes: memory (stoffelnet demo, rounds of 4 KiB)")
                peaks, held = _demo_memory(name, parties, 4096, sizes.rounds)
                if peaks:
                    rss[(name, parties)] = max(peaks)
                for party in held:
                    worst = buffers.get((name, parties))
                    buffers[(name, parties)] = party if worst is None else worst.merged(party)
    return _rows(names, samples, rss, sizes, buffers)


def _variants(baseline: Baseline | None) -> Mapping[str, Mapping[str, Any]]:
    return baseline.variants if baseline is not None else {}


def _rows(
    names: Sequence[str],
    samples: Samples,
    rss: dict[tuple[str, int], int],
    sizes: Sizes,
    buffers: Mapping[tuple[str, int], BufferPeaks] | None = None,
) -> list[Row]:
    rows: list[Row] = []

    def add(transport: str, key: str, case: str, unit: str, better: Better, figure: int = 0) -> None:
        mine = [figures[figure] for figures in samples[(transport, key, "stoffelnet")]]
        theirs = [figures[figure] for figures in samples.get((transport, key, "baseline"), [])]
        base = statistics.median(theirs) if theirs else None
        paired = paired_ratio(mine, theirs) if theirs and all(theirs) else None  # else: value / baseline, or none
        rows.append(Row(transport, case, unit, statistics.median(mine), base, better, _target(transport, case), paired))

    add("core", "codec", "codec frame+unframe 64 B", "µs", "lower")
    for name in names:
        for case in _CASES:
            add(name, case.name, case.name, case.unit, case.better)
            if case.name.startswith("round trip"):
                add(name, case.name, "round trip 64 B, p99", case.unit, case.better, figure=1)
        if name == "loopback":
            add(name, "self", "self-delivery 64 B", "msg/s", "higher")
            continue
        if split_variant(name)[1] is not None:
            continue  # no multi-process rounds for a variant
        for parties in sizes.parties:
            for size in (64, 4096):
                label = f"rounds {parties} parties {_size(size)}, {parties} procs"
                add(name, f"procs {parties} {size}", label, "rounds/s", "higher")
        largest = max(sizes.parties)
        if (name, largest) in rss:
            rows.append(
                Row(name, f"peak RSS per party, {largest} procs", "MiB", rss[(name, largest)] / 1024, None, "lower")
            )
        if buffers and (name, largest) in buffers:
            rows.extend(buffer_rows(name, largest, buffers[(name, largest)]))
    return rows


_BUFFER_CASES = {"send": "max send buffer", "receive": "max receive buffer", "unacknowledged": "max unacknowledged"}


def buffer_rows(transport: str, parties: int, peaks: BufferPeaks) -> list[Row]:
    """The rows ``max send buffer per peer, N procs`` (and receive, unacknowledged): the most one peer connection
    of any party held, in KiB, against its configured bound; MET by `runner.buffer_allowance`'s rule (the bound plus
    one largest message and its framing), which the TARGET cell writes as ``<= BOUND + 1 msg``."""
    rows = []
    for kind in BUFFER_KINDS:
        bound = f"<= {_number(peaks.bound(kind) / 1024)} KiB + 1 msg"
        target = Target("<=", peaks.allowance(kind) / 1024, absolute=True, shown=bound)
        case = f"{_BUFFER_CASES[kind]} per peer, {parties} procs"
        rows.append(Row(transport, case, "KiB", peaks.peak(kind) / 1024, None, "lower", target))
    return rows


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


# -- output ------------------------------------------------------------------------------------------------------
def core_build() -> str:
    """``compiled (mypyc)`` when stoffelnet-core's hot-path modules are the optional compiled build, else
    ``pure Python``."""
    import importlib.machinery

    from .. import peer

    compiled = str(peer.__file__).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    return "compiled (mypyc)" if compiled else "pure Python"


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, OS, Python, OpenSSL, and the versions that matter."""
    import importlib.metadata

    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    versions: dict[str, str] = {}
    for dist in ("stoffelnet-core", "aioquic", "qh3", "cbor2", "uvloop"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "openssl": ssl.OPENSSL_VERSION,
        "event_loop": "asyncio",
        "core": core_build(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def as_json(rows: Iterable[Row], machine_info: dict[str, Any]) -> dict[str, Any]:
    """``{"machine": {...}, "rows": [{"transport", "case", "unit", "value", "baseline", "ratio", "better"}]}``."""
    return {
        "machine": machine_info,
        "rows": [
            {
                "transport": row.transport,
                "case": row.case,
                "unit": row.unit,
                "value": row.value,
                "baseline": row.baseline,
                "ratio": row.ratio,
                "better": row.better,
            }
            for row in rows
        ],
    }


def _number(value: float) -> str:
    if value >= 100_000:
        return f"{value / 1000:,.0f}k"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def format_table(rows: Sequence[Row], out: TextIO, baselines: dict[str, str] | None = None) -> None:
    """The table: each row's value, its baseline's, the ratio, the target and whether it is met."""
    head = ("TRANSPORT", "CASE", "VALUE", "UNIT", "BASELINE", "RATIO", "TARGET", "MET")
    lines = [head]
    for row in rows:
        ratio = row.ratio
        met = None if row.target is None else row.target.met(row.value, ratio)
        lines.append(
            (
                row.transport,
                row.case,
                _number(row.value),
                row.unit,
                "-" if row.baseline is None else _number(row.baseline),
                "-" if ratio is None else f"{ratio:.2f}",
                "-" if row.target is None else row.target.text(row.unit),
                "-" if met is None else ("yes" if met else "NO"),
            )
        )
    right = {2, 4, 5}
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for line in lines:
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.write("  ".join(cells).rstrip() + "\n")
    if baselines:
        out.write("baselines: " + "; ".join(f"{name}: {label}" for name, label in baselines.items()) + "\n")
    out.write(
        "ratio = value / baseline, the median of each repeat's pair measured back to back (value, baseline: medians);"
        " see each row's unit for which way is better: µs lower, rates higher\n"
    )


def require_matplotlib() -> Any:
    """The matplotlib module; `errors.ConfigError` saying how to install it when it is missing."""
    try:
        return importlib.import_module("matplotlib")
    except ImportError as exc:
        raise errors.ConfigError(
            "--plot needs matplotlib, which is not installed: pip install 'stoffelnet-core[plot]'", key="plot"
        ) from exc


def plot(rows: Sequence[Row], path: str | Path) -> None:
    """Draw each row's ratio to its baseline as a bar chart in `path` (PNG). Needs matplotlib (the ``plot`` extra);
    raises `errors.ConfigError` without it."""
    matplotlib = require_matplotlib()
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    shown = [row for row in rows if row.ratio is not None]
    labels = [f"{row.transport}: {row.case}" for row in shown]
    ratios = [row.ratio for row in shown]
    figure, axes = pyplot.subplots(figsize=(10, 0.35 * len(shown) + 1.5))
    good = [(r or 0) >= 1 if row.better == "higher" else (r or 0) <= 1 for r, row in zip(ratios, shown, strict=True)]
    colors = ["tab:green" if ok else "tab:orange" for ok in good]
    axes.barh(labels, ratios, color=colors)
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.invert_yaxis()
    axes.set_xlabel("ratio to the bare baseline (same run)")
    figure.tight_layout()
    figure.savefig(str(path))
    pyplot.close(figure)


def write_json(rows: Sequence[Row], path: str | Path, machine_info: dict[str, Any]) -> None:
    """`as_json` into `path`."""
    Path(path).write_text(json.dumps(as_json(rows, machine_info), indent=2) + "\n", encoding="utf-8")


def baseline_names(transports: Sequence[str]) -> dict[str, str]:
    """Each transport's baseline label (``"-"`` when it has none), for the table's footer."""
    found = {info.name: info for info in plugins.default_plugins().transports()}
    out = {"core": "bare cbor2 dumps+loads"}
    for name in transports:
        base, variant = split_variant(name)
        info = found.get(base)
        baseline = find_baseline(base, None if info is None else info.transport)
        out[name] = "-" if baseline is None else baseline.for_variant(variant)[0]
    return out
