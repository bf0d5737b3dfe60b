"""``stoffelnet ping CONFIG``: can this member reach every party, and is each one who the config pins?

The first thing to run when a deployment does not come up. From a party's or a client's config, each party is
probed `count` times, each probe a new connection made exactly as this member makes its real ones:

1. the transport's dial, in this member's role (for tcp-tls: TCP connect, then the TLS 1.3 handshake in which the
   party proves the key of its certificate and the dialer checks it against the pinned party certificates; for
   quic: the QUIC handshake, likewise);
2. the key the party proved is looked up among the config's pins: the key pinned for that party is a success, a
   key pinned for another member is *wrong key* ("is party 2"), a key nobody pins is *unpinned*;
3. a graceful close, before any stoffelnet Handshake.

Ping never sends a Handshake, because a claim can be *accepted*: a party that waits for this member would take the
probe for the member itself, see it leave, and fail its computation (``StreamClosed``) -- precisely when an operator
pings, while a deployment is coming up. So ping proves who each party is (by its key) and that its transport
speaks stoffelnet's protocol (by ALPN), and leaves each party unchanged; each probe shows in the party's log as a
refused connection (``ConnectionLost`` before the Handshake). Whether a party admits *this member's* key is in that
party's log.

Timing: ``connect_ms``, best of the probes, is the transport's connection set-up including TLS (tcp-tls: TCP
connect plus the TLS 1.3 handshake, about two network round trips; quic: about one), measured from this process.

Failure causes (`PingStatus`): refused (nothing listens: ECONNREFUSED), timeout, unreachable (no route, unknown
host), wrong-key, unpinned, tls (another TLS failure), protocol (not stoffelnet, or another protocol version),
unproven (the transport showed no key to check), no-address. Library code here logs; only the command prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import errno
import json
import logging
import re
import ssl
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import attrs

from . import errors, keys
from .config import Config, load_config
from .ids import Node
from .network import _make_transport
from .transport import BytePipe, Transport

__all__ = ["PingResult", "PingStatus", "format_matrix", "main", "ping", "results_json", "setup_ping_command"]

log = logging.getLogger("stoffelnet.ping")

DEFAULT_TIMEOUT = 5.0  # seconds for one probe's dial (connect and TLS)
DEFAULT_COUNT = 3
_CLOSE_TIMEOUT = 1.0  # a probe's graceful close waits at most this long for the party's side, then aborts
_ALPN = re.compile(r"stoffelnet/(\d+)-(?:party|client)")


class PingStatus(enum.StrEnum):
    """What a probe of one party found."""

    OK = "ok"  # reachable, and it proved the key pinned for it
    SELF = "self"  # the config's own party: not probed
    REFUSED = "refused"  # nothing listens there (ECONNREFUSED)
    TIMEOUT = "timeout"  # no answer in time (connect or TLS)
    UNREACHABLE = "unreachable"  # no route to the host, unknown host name, network down
    WRONG_KEY = "wrong-key"  # it proved a key the config pins for another member
    UNPINNED = "unpinned"  # it proved a key nobody pins (for tcp-tls: not among the pinned party certificates)
    TLS = "tls"  # another TLS failure
    PROTOCOL = "protocol"  # it does not speak stoffelnet's protocol (or another version of it)
    UNPROVEN = "unproven"  # reachable, but the transport showed no key to check
    NO_ADDRESS = "no-address"  # the config gives no address for it


_REACHED = frozenset(
    {
        PingStatus.OK,
        PingStatus.WRONG_KEY,
        PingStatus.UNPINNED,
        PingStatus.TLS,
        PingStatus.PROTOCOL,
        PingStatus.UNPROVEN,
    }
)


@attrs.frozen(kw_only=True)
class PingResult:
    """The outcome of probing one party; `cause` says exactly what failed."""

    party: int
    address: str | None
    status: PingStatus
    cause: str = ""  # for a failure, the exact cause; empty when ok
    note: str = ""  # anything else worth knowing (e.g. a probe failed after others succeeded)
    identity: str | None = None  # whom the peer's key belongs to: "party 1", "client 0"; None when unknown
    fingerprint: str | None = None  # the key it proved ("sha256:<hex>"), when the transport showed it
    connect_ms: float | None = None  # the transport's connection set-up incl. TLS, best of the probes
    transport: str = ""
    alpn: str | None = None  # the application protocol negotiated in TLS (tcp-tls, quic: "stoffelnet/1-party")
    protocol_version: int | None = None  # stoffelnet's protocol version the party agreed to (from `alpn`)
    probes: int = 0  # probes that succeeded

    @property
    def reachable(self) -> bool:
        """A connection to the party's address was made (whatever happened next)."""
        return self.status in _REACHED

    @property
    def authenticated(self) -> bool:
        """The peer proved the key pinned for this party."""
        return self.status is PingStatus.OK

    @property
    def ok(self) -> bool:
        """Reachable and authenticated (the config's own party counts as ok: it is not probed)."""
        return self.status in (PingStatus.OK, PingStatus.SELF)

    def to_json(self) -> dict[str, Any]:
        return {
            "party": self.party,
            "address": self.address,
            "status": self.status.value,
            "ok": self.ok,
            "reachable": self.reachable,
            "authenticated": self.authenticated,
            "identity": self.identity,
            "fingerprint": self.fingerprint,
            "connect_ms": self.connect_ms,
            "transport": self.transport,
            "alpn": self.alpn,
            "protocol_version": self.protocol_version,
            "probes": self.probes,
            "cause": self.cause,
            "note": self.note,
        }


# -- probing -----------------------------------------------------------------------------------------------------
def _member(config: Config) -> str:
    return f"party {config.party_id}" if config.party_id is not None else f"client {config.client_id}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and its causes and contexts, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _classify_dial(exc: BaseException, party: int, address: str, timeout: float) -> tuple[PingStatus, str]:
    """Why a transport dial failed, from the exception and its causes."""
    where = f"party {party} at {address}"
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return (
                PingStatus.UNPINNED,
                f"{where} proved a key that is pinned for no party here ({e.verify_message}): its certificate is "
                "not the one this config pins for it (a rotated or wrong key, or another service on that port)",
            )
    if isinstance(exc, errors.AuthenticationError):
        text = str(exc)
        status = PingStatus.UNPINNED if "not pinned" in text or "unpinned" in text else PingStatus.TLS
        return status, f"{where}: {text}"
    for e in chain:
        if isinstance(e, ssl.SSLError):
            text = str(e)
            if any(m in text for m in ("APPLICATION_PROTOCOL", "WRONG_VERSION_NUMBER", "UNSUPPORTED_PROTOCOL")):
                return (
                    PingStatus.PROTOCOL,
                    f"{where} does not speak this stoffelnet protocol over TLS 1.3 ({text}): is it a stoffelnet "
                    "party of the same version, and is this the right port?",
                )
            return PingStatus.TLS, f"TLS handshake with {where} failed: {text}"
        if isinstance(e, ConnectionRefusedError) or f"[Errno {errno.ECONNREFUSED}]" in str(e):
            return (
                PingStatus.REFUSED,
                f"connection refused by {address}: nothing listens there (is party {party} running, listening "
                "on that port, and does no firewall reject it?)",
            )
        if isinstance(e, TimeoutError):
            return (
                PingStatus.TIMEOUT,
                f"no answer from {where} within {timeout:g}s (a firewall dropping packets, a wrong address, a "
                "UDP port closed for quic, or a party too busy to finish the handshake)",
            )
    for e in chain:
        if isinstance(e, OSError):
            return PingStatus.UNREACHABLE, f"cannot reach {where}: {e.strerror or e}"
    return PingStatus.UNREACHABLE, f"cannot reach {where}: {type(exc).__name__}: {exc}"


class _Closing:
    """A probe's receiver: the party sends nothing before our Handshake; this only learns when the pipe is gone."""

    def __init__(self) -> None:
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes | memoryview) -> None:
        pass

    def stream_data_received(self, index: int, data: bytes | memoryview) -> None:
        pass

    def eof_received(self) -> None:
        pass

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


async def _close(pipe: BytePipe, timeout: float) -> None:
    """Close gracefully (TLS close_notify, FIN), wait boundedly until the pipe is gone, else abort it."""
    closing = _Closing()
    pipe.set_receiver(closing)
    pipe.close()
    try:
        async with asyncio.timeout(timeout):
            await closing.lost
    except TimeoutError:
        pipe.abort()


@attrs.frozen
class _Sample:
    connect: float
    identity: str
    fingerprint: str | None
    alpn: str | None


class _Prober:
    """Probes the parties of one config over one transport."""

    def __init__(self, config: Config, transport: Transport, timeout: float) -> None:
        self.config = config
        self.transport = transport
        self.timeout = timeout
        self.owners: dict[str, str] = {}
        for node in config.parties:
            if node.fingerprint is not None:
                self.owners.setdefault(node.fingerprint, f"party {node.id}")
        for index, pin in enumerate(config.clients.allow):
            self.owners.setdefault(pin, f"client {index}")
        if config.tls is not None:
            with contextlib.suppress(errors.ConfigError):
                own = keys.fingerprint(keys.load_certificate(config.tls.cert, check_validity=False))
                self.owners.setdefault(own, f"{_member(config)} (this config's own key)")

    async def probe_all(self, count: int) -> list[PingResult]:
        """The first probe of every party at once (dead parties cost one timeout, not one each); the other probes
        one at a time, only to parties that passed the first, so that they do not slow each other down."""
        nodes = list(self.config.parties)
        firsts = await asyncio.gather(*(self._first(node) for node in nodes))
        results = []
        for node, first in zip(nodes, firsts, strict=True):
            if isinstance(first, PingResult):
                results.append(first)
                continue
            results.append(await self._more(node, first, count))
        return results

    def _base(self, node: Node) -> PingResult:
        address = None if node.address is None else str(node.address)
        return PingResult(party=node.id, address=address, status=PingStatus.OK, transport=self.transport.name)

    async def _first(self, node: Node) -> _Sample | PingResult:
        base = self._base(node)
        if self.config.party_id == node.id:
            return attrs.evolve(base, status=PingStatus.SELF, note="this config's own party: not probed")
        if node.address is None:
            return attrs.evolve(
                base, status=PingStatus.NO_ADDRESS, cause=f"parties[{node.id}] has no address: nothing to dial"
            )
        outcome = await self._attempt(node, base)
        self._log(node, 1, outcome)
        return outcome

    async def _more(self, node: Node, first: _Sample, count: int) -> PingResult:
        base = self._base(node)
        samples = [first]
        for attempt in range(2, count + 1):
            outcome = await self._attempt(node, base)
            self._log(node, attempt, outcome)
            if isinstance(outcome, PingResult):
                note = f"{len(samples)} of {attempt} probes succeeded before this one failed"
                return attrs.evolve(outcome, note=note, probes=len(samples))
            samples.append(outcome)
        last = samples[-1]
        version = _ALPN.fullmatch(last.alpn or "")
        return attrs.evolve(
            base,
            identity=last.identity,
            fingerprint=last.fingerprint,
            connect_ms=round(min(s.connect for s in samples) * 1000, 3),
            alpn=last.alpn,
            protocol_version=int(version.group(1)) if version else None,
            probes=len(samples),
        )

    @staticmethod
    def _log(node: Node, attempt: int, outcome: _Sample | PingResult) -> None:
        if isinstance(outcome, PingResult):
            log.info("ping party %d: probe %d: %s: %s", node.id, attempt, outcome.status, outcome.cause)
        else:
            log.debug("ping party %d: probe %d ok, connect %.2f ms", node.id, attempt, outcome.connect * 1000)

    async def _attempt(self, node: Node, base: PingResult) -> _Sample | PingResult:
        address = node.address
        assert address is not None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                pipe = await self.transport.dial(address, role=self.config.role)
        except (errors.StoffelnetError, OSError, TimeoutError) as exc:
            status, cause = _classify_dial(exc, node.id, str(address), self.timeout)
            return attrs.evolve(base, status=status, cause=cause)
        connect = time.perf_counter() - started
        try:
            return self._check(node, base, pipe, connect)
        finally:
            await _close(pipe, min(self.timeout, _CLOSE_TIMEOUT))

    def _check(self, node: Node, base: PingResult, pipe: BytePipe, connect: float) -> _Sample | PingResult:
        """Whose key the party proved, against the pins."""
        info = pipe.info
        alpn = info.alpn
        reached = attrs.evolve(base, alpn=alpn, connect_ms=round(connect * 1000, 3))
        where = f"party {node.id} at {node.address}"
        if alpn is not None and not _ALPN.fullmatch(alpn):
            return attrs.evolve(
                reached, status=PingStatus.PROTOCOL, cause=f"{where} agreed to application protocol {alpn!r}"
            )
        if info.peer_certificate is None:
            if info.trusted:  # an in-process transport: nothing to prove
                return _Sample(connect, f"party {node.id}", None, alpn)
            return attrs.evolve(
                reached,
                status=PingStatus.UNPROVEN,
                cause=f"{where} is reachable, but transport {self.transport.name!r} showed no certificate to check "
                "its key against the pin",
            )
        try:
            fingerprint = keys.fingerprint(info.peer_certificate)
        except ValueError as exc:
            return attrs.evolve(reached, status=PingStatus.TLS, cause=f"{where} sent an unreadable certificate: {exc}")
        owner = self.owners.get(fingerprint)
        reached = attrs.evolve(reached, fingerprint=fingerprint, identity=owner)
        if owner == f"party {node.id}":
            return _Sample(connect, owner, fingerprint, alpn)
        if owner is None:
            return attrs.evolve(
                reached,
                status=PingStatus.UNPINNED,
                cause=f"{where} proved key {fingerprint}, which this config pins for nobody (a rotated or wrong key: "
                f"compare with parties[{node.id}].fingerprint)",
            )
        return attrs.evolve(
            reached,
            status=PingStatus.WRONG_KEY,
            cause=f"the peer at party {node.id}'s address {node.address} is {owner}: it proved the key this config "
            f"pins for {owner}, not party {node.id}'s (swapped keys, or the wrong address)",
        )


async def ping(config: Config, *, timeout: float = DEFAULT_TIMEOUT, count: int = DEFAULT_COUNT) -> list[PingResult]:
    """Probe every party of `config` with `count` new connections each; one result per party, in id order.

    A probe dials as this config's member, checks the key the party proves against the pins, and closes before
    any stoffelnet Handshake: running or waiting parties are left as they were (see the module docstring).
    `timeout` bounds each probe's dial (connect and TLS); its close takes at most one second more. Raises
    `errors.InvalidArgument` for a bad `timeout` or `count`, `errors.ConfigError` / `errors.PluginError` when
    `config`'s transport cannot be made.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise errors.InvalidArgument(f"timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise errors.InvalidArgument(f"count must be an integer >= 1, got {count!r}")
    config = attrs.evolve(config, timeout_ms=max(1, round(timeout * 1000)))
    transport = _make_transport(config)
    try:
        return await _Prober(config, transport, float(timeout)).probe_all(count)
    finally:
        await transport.aclose()


# -- presenting --------------------------------------------------------------------------------------------------
def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _short(fingerprint: str | None) -> str:
    return "" if fingerprint is None else f" {fingerprint[: len('sha256:') + 12]}..."


def format_matrix(results: Sequence[PingResult]) -> str:
    """The results as an aligned table, one row per party, then a summary line; ends with a newline."""
    header = ("PARTY", "ADDRESS", "STATUS", "IDENTITY", "CONNECT_MS", "TRANSPORT", "PROTO", "DETAIL")
    rows = [header]
    for r in results:
        identity = "-" if r.identity is None else f"{r.identity}{_short(r.fingerprint)}"
        transport = r.transport + (f" {r.alpn}" if r.alpn else "")
        detail = "; ".join(part for part in (r.cause, r.note) if part) or "-"
        rows.append(
            (
                str(r.party),
                r.address or "-",
                r.status.value,
                identity,
                _ms(r.connect_ms),
                transport or "-",
                "-" if r.protocol_version is None else f"v{r.protocol_version}",
                detail,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]) for row in rows]
    probed = [r for r in results if r.status is not PingStatus.SELF]
    good = sum(r.ok for r in probed)
    verdict = "all reachable and authenticated" if good == len(probed) else "NOT all reachable and authenticated"
    lines.append(f"{good} of {len(probed)} parties probed ok: {verdict}")
    return "\n".join(lines) + "\n"


def results_json(config: Config, results: Sequence[PingResult], *, timeout: float, count: int) -> dict[str, Any]:
    """What ``ping --json`` prints: the member, the settings, the verdict and one object per party."""
    return {
        "member": _member(config),
        "config": None if config.source is None else str(config.source),
        "transport": config.transport,
        "timeout_s": timeout,
        "count": count,
        "ok": all(r.ok for r in results),
        "parties": [r.to_json() for r in results],
    }


def setup_ping_command(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """Check every party from a party's or client's config: reachable, proven key, connect time, protocol.

    Each party is dialed COUNT times as this config's member: the transport's dial with TLS, in which the party
    proves its key, checked against the config's pins; then a graceful close, before any Handshake, so that running
    or waiting parties are left as they were. A failure names its cause: refused, timeout, unreachable, wrong-key
    ("is party 2"), unpinned, tls, protocol. Exit status 0 only when every party is reachable and authenticated,
    1 otherwise, 2 when the config cannot be used.
    """
    parser.add_argument("config", metavar="CONFIG", help="a party's or a client's config file (TOML)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds one probe's dial (connect and TLS) may take (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help=f"probes per party (default {DEFAULT_COUNT})")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the matrix")

    def run(args: argparse.Namespace) -> int:
        return _run(args.config, timeout=args.timeout, count=args.count, as_json=args.json, out=sys.stdout)

    return run


def _run(path: str, *, timeout: float, count: int, as_json: bool, out: TextIO) -> int:
    config = load_config(path)
    results = asyncio.run(ping(config, timeout=timeout, count=count))
    if as_json:
        out.write(json.dumps(results_json(config, results, timeout=timeout, count=count), indent=2) + "\n")
    else:
        out.write(
            f"stoffelnet ping: {_member(config)} ({path}), {config.transport}, {len(results)} parties, "
            f"{count} probe{'s' if count != 1 else ''} each, timeout {timeout:g}s\n"
        )
        out.write(format_matrix(results))
    out.flush()
    return 0 if all(r.ok for r in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m stoffelnet_core.ping CONFIG``: the ``stoffelnet ping`` command on its own."""
    from .logs import configure_logging, remove_logging

    parser = argparse.ArgumentParser(prog="python -m stoffelnet_core.ping", description=setup_ping_command.__doc__)
    parser.add_argument("--log-level", default="WARNING", help="log level on stderr (default WARNING)")
    run = setup_ping_command(parser)
    args = parser.parse_args(argv)
    try:
        configure_logging(args.log_level, json_lines=False, member="ping")
        return run(args)
    except errors.StoffelnetError as exc:
        sys.stderr.write(f"stoffelnet ping: error: {exc}\n")
        return 2
    finally:
        remove_logging()


if __name__ == "__main__":
    raise SystemExit(main())
