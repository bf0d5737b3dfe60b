"""One member of the demo's computation, run from its own config: what `stoffelnet demo` starts per process, and
what `stoffelnet party` / `stoffelnet client` run.

    python -m stoffelnet_core.runner party party0.toml --clients 2 --rounds 50 --sizes 64,1024,1048576 --progress
    python -m stoffelnet_core.runner client client0.toml --input 7 --expect-sum 66 --expect-product 680

A party first runs its part of the MPC computation for its clients (`computation.party_compute`), then the rounds:
each round it broadcasts a message whose content is fixed by (sender, round, size) and takes one message from
every party, in order, checking content, sender, order and exactly-once delivery. A client gives its input
(`computation.client_compute`), prints the opened results (``sum = ...``, ``product = ...``) and checks them against
the expected values when it is given them. The last line on stdout is one JSON object saying what was measured and
checked; the exit status is 0 only if every check passed. A party's JSON also says (under ``buffers``) the most bytes
any one of its peer connections held during the run, in each of its three bounded buffers, beside the configured
bounds (`BufferPeaks`; the rule they are held to is `buffer_allowance`).

When something fails the JSON names the failure and, under ``lost_peers``, every member whose connection was lost
(not closed) at that moment: when a party crashes, the others name it. SIGINT and SIGTERM stop a member cleanly (its
connections are closed, the JSON says ``interrupted``) with exit status 130 or 143.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from . import computation, errors, logs, mpc, mux
from .computation import Results
from .config import EVENT_LOOPS, Config, load_config
from .flow import DEFAULT_WINDOW
from .loops import LoopFactory, loop_factory
from .network import Client, Network, open_client, open_network
from .peer import ConnectionState, PeerConnection

__all__ = [
    "BUFFER_KINDS",
    "MESSAGE_OVERHEAD",
    "BufferPeaks",
    "Interrupted",
    "RunState",
    "add_member_arguments",
    "buffer_allowance",
    "expected_payload",
    "member_name",
    "print_results",
    "rss_peak_kib",
    "run_client",
    "run_interruptible",
    "run_member",
    "run_party",
]

_TIMEOUT = 60.0  # seconds any one wait may take before the run is declared failed
_CLOSE_GRACE = 3.0  # seconds an interrupted run gets to close its connections before it stops waiting for peers
_T = TypeVar("_T")
ProgressCallback = Callable[[int, int], None]
"""Called with (rounds done, rounds in all)."""


def expected_payload(sender: int, round_no: int, size: int) -> bytes:
    """The message `sender` broadcasts in round `round_no`: checkable by anyone, different for every round."""
    head = f"{sender}:{round_no}:".encode()
    block = hashlib.sha256(head).digest()
    body = (block * (size // len(block) + 1))[: max(0, size - len(head))]
    return (head + body)[:size] if size >= len(head) else head[:size]


def rss_peak_kib() -> int | None:
    """This process's peak resident set size in KiB (``VmHWM`` in /proc/self/status); None where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


# -- the buffers per peer -----------------------------------------------------------------------------------------
BUFFER_KINDS = ("send", "receive", "unacknowledged")
"""A peer connection's bounded buffers: `PeerConnection.send_buffered` (accepted for sending, not yet handed to the
transport; bounded by ``send_buffer_bytes``), `receive_buffered` (received, not yet consumed by the application;
``receive_window_bytes``) and `unacknowledged` (sent, not yet acknowledged: the resend buffer; ``resend_buffer_bytes``).
"""

MESSAGE_OVERHEAD = 40 + mux.HEADER.size
"""Bytes one message may take in a buffer beyond its payload: its frame's head (length prefix and envelope up to the
payload: at most 40 bytes, as `Session.max_payload` counts it, for an untagged or int-tagged message) and one mux
frame header (9 bytes)."""

_SAMPLE_EVERY = 0.01  # seconds between the periodic samples of the buffers (besides one per round)


def buffer_allowance(kind: str, bound: int, largest_message: int) -> int:
    """The most bytes one peer's buffer of `kind` (one of `BUFFER_KINDS`) may hold and still be within its configured
    `bound`, when no message is larger than `largest_message` bytes: ``bound + largest_message + MESSAGE_OVERHEAD``.

    The rule `stoffelnet bench` and the tests hold every party to. Why one message over: `send` waits while a
    stream's queued bytes are at the bound or above, so the message that finds them just below it is still queued;
    the resend buffer likewise (a sender waits while it is full); a receiver holds at most its window (the credit it
    granted), and the one frame more is slack for a frame the window cuts. The receive window is never below
    `flow.DEFAULT_WINDOW` (64 KiB: every stream starts with that much credit), whatever ``receive_window_bytes``
    says. The bounds are per peer and stream; the runner uses one stream at a time (the computation's, then the
    rounds'), and the control channel's few bytes (acks, pings) fit in the margin of `MESSAGE_OVERHEAD`.
    """
    if kind not in BUFFER_KINDS:
        raise ValueError(f"kind must be one of {', '.join(BUFFER_KINDS)}, got {kind!r}")
    if kind == "receive":
        bound = max(bound, DEFAULT_WINDOW)
    return bound + largest_message + MESSAGE_OVERHEAD


@attrs.define
class BufferPeaks:
    """The most bytes any one peer connection of a party held in each buffer during its run (sampled), and the
    bounds of its config. `violations` holds them to `buffer_allowance`."""

    send: int = 0  # max over peers and samples of PeerConnection.send_buffered()
    receive: int = 0  # ... of receive_buffered()
    unacknowledged: int = 0  # ... of unacknowledged()
    send_bound: int = 0  # Config.send_buffer_bytes
    receive_bound: int = 0  # Config.receive_window_bytes
    resend_bound: int = 0  # Config.resend_buffer_bytes
    largest_message: int = 0  # the largest payload the party sent
    samples: int = 0

    @classmethod
    def for_config(cls, config: Config, largest_message: int) -> BufferPeaks:
        return cls(
            send_bound=config.send_buffer_bytes,
            receive_bound=config.receive_window_bytes,
            resend_bound=config.resend_buffer_bytes,
            largest_message=largest_message,
        )

    def peak(self, kind: str) -> int:
        return {"send": self.send, "receive": self.receive, "unacknowledged": self.unacknowledged}[kind]

    def bound(self, kind: str) -> int:
        return {"send": self.send_bound, "receive": self.receive_bound, "unacknowledged": self.resend_bound}[kind]

    def allowance(self, kind: str) -> int:
        return buffer_allowance(kind, self.bound(kind), self.largest_message)

    def within(self, kind: str) -> bool:
        return self.peak(kind) <= self.allowance(kind)

    def violations(self) -> list[str]:
        """One line per buffer whose peak is over its allowance (none: every buffer stayed within its bound)."""
        return [
            f"{kind} buffer reached {self.peak(kind)} B per peer, over its bound {self.bound(kind)} B "
            f"+ one {self.largest_message} B message + {MESSAGE_OVERHEAD} B"
            for kind in BUFFER_KINDS
            if not self.within(kind)
        ]

    def merged(self, other: BufferPeaks) -> BufferPeaks:
        """The larger of each figure: the worst of two parties (or runs)."""
        return BufferPeaks(*(max(a, b) for a, b in zip(attrs.astuple(self), attrs.astuple(other), strict=True)))

    def as_json(self) -> dict[str, int]:
        return {
            "send_buffered_max": self.send,
            "receive_buffered_max": self.receive,
            "unacknowledged_max": self.unacknowledged,
            "send_buffer_bytes": self.send_bound,
            "receive_window_bytes": self.receive_bound,
            "resend_buffer_bytes": self.resend_bound,
            "largest_message": self.largest_message,
            "samples": self.samples,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BufferPeaks:
        return cls(
            int(data["send_buffered_max"]),
            int(data["receive_buffered_max"]),
            int(data["unacknowledged_max"]),
            int(data["send_buffer_bytes"]),
            int(data["receive_window_bytes"]),
            int(data["resend_buffer_bytes"]),
            int(data["largest_message"]),
            int(data.get("samples", 0)),
        )


class _BufferWatch:
    """Samples every peer connection's buffers into `peaks`: when the caller says (`sample`: right after a round's
    sends are queued, before its receives, when the buffers are fullest) and every `_SAMPLE_EVERY` seconds on a
    loop timer. A sample reads three figures per peer: cheap enough for a benchmark's rounds."""

    def __init__(self, net: Network, peaks: BufferPeaks) -> None:
        self.peaks = peaks
        me = net.local_party_id
        self._conns: list[PeerConnection] = []
        for party in net.parties():
            if party != me:
                try:
                    self._conns.append(net.connection(party))
                except errors.StoffelnetError:  # not connected (open_network returned without it): nothing to watch
                    continue
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(_SAMPLE_EVERY, self._tick)

    def sample(self) -> None:
        peaks = self.peaks
        for conn in self._conns:
            if (n := conn.send_buffered()) > peaks.send:
                peaks.send = n
            if (n := conn.receive_buffered()) > peaks.receive:
                peaks.receive = n
            if (n := conn.unacknowledged()) > peaks.unacknowledged:
                peaks.unacknowledged = n
        peaks.samples += 1

    def _tick(self) -> None:
        self.sample()
        self._timer = self._loop.call_later(_SAMPLE_EVERY, self._tick)

    def stop(self) -> None:
        """A last sample, and no more."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self.sample()


def member_name(config: Config) -> str:
    """``party<i>`` or ``client<j>``: the member a config is for, as `deploy` names its files."""
    return f"party{config.party_id}" if config.party_id is not None else f"client{config.client_id}"


@attrs.define
class RunState:
    """Where a run is, for the report when it is interrupted: phase, round and whom it is waiting for."""

    phase: str = "connecting"  # connecting, computation, rounds, closing
    round: int | None = None
    waiting_for: str | None = None  # the member whose message it waits for, when it waits for one

    def as_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "round": self.round, "waiting_for": self.waiting_for}

    def describe(self) -> str:
        where = self.phase + (f" (round {self.round})" if self.round is not None else "")
        return where + (f", waiting for {self.waiting_for}" if self.waiting_for else "")


def _lost_peers(member: Network | Client) -> list[str]:
    """The members whose connection to `member` was lost (not closed): who crashed, as far as it can tell."""
    stats = member.stats()
    lost = [f"party{p}" for p, s in stats.peers.items() if s.state is ConnectionState.DISCONNECTED]
    return lost + [f"client{c}" for c, s in stats.clients.items() if s.state is ConnectionState.DISCONNECTED]


def _lost_note(lost: Sequence[str], exc: BaseException) -> str:
    """Names the lost peers after an error that does not name them already (e.g. a party that gave up closed)."""
    unnamed = [name for name in lost if _spaced(name) not in str(exc)]
    return f" (lost the connection to {', '.join(_spaced(name) for name in unnamed)})" if unnamed else ""


def _spaced(member: str) -> str:
    """``party1`` as messages write it: ``party 1``."""
    digits = len(member) - len(member.rstrip("0123456789"))
    return f"{member[:-digits]} {member[-digits:]}" if digits else member


async def run_party(
    config: Config,
    *,
    rounds: int,
    sizes: Sequence[int],
    clients: int,
    timeout: float = _TIMEOUT,
    client_timeout: float | None = _TIMEOUT,
    progress: ProgressCallback | None = None,
    state: RunState | None = None,
    stall_ms: int = 0,
    read_pause_ms: int = 0,
) -> dict[str, Any]:
    """Compute for `clients` clients, then run `rounds` all-to-all rounds; returns what was measured and checked.

    `read_pause_ms` makes this party a reader that stops for that long at a third of the rounds while it goes on
    broadcasting (its sending runs ahead, limited only by backpressure): memory must stay bounded everywhere.

    A `StoffelnetError` on the way is recorded in the result (``failures``, ``lost_peers``), not raised. `state` is
    kept up to date (phase, round, whom it waits for) for a caller that reports an interruption. Every peer
    connection's buffers are sampled throughout (`BufferPeaks`, under ``buffers``).
    """
    state = RunState() if state is None else state
    failures: list[str] = []
    latencies: list[float] = []
    lost: list[str] = []
    received = served = 0
    mpc_s = rounds_s = 0.0
    started = time.perf_counter()
    async with open_network(config) as net:
        setup = time.perf_counter() - started
        me = net.local_party_id
        ahead: asyncio.Task[None] | None = None
        peaks = BufferPeaks.for_config(config, max([*sizes, mpc.ELEMENT_SIZE]))  # every party sends these sizes
        watch = _BufferWatch(net, peaks)
        try:
            state.phase = "computation"
            t0 = time.perf_counter()
            await computation.party_compute(net, clients, timeout=timeout, client_timeout=client_timeout)
            mpc_s = time.perf_counter() - t0
            served = clients
            every = max(1, rounds // 100)
            state.phase = "rounds"
            t0 = time.perf_counter()
            if read_pause_ms:

                async def send_ahead() -> None:
                    for r in range(rounds):
                        await net.broadcast(expected_payload(me, r, sizes[r % len(sizes)]), timeout=timeout)
                        watch.sample()

                ahead = asyncio.ensure_future(send_ahead())
            for r in range(rounds):
                size = sizes[r % len(sizes)]
                start = time.perf_counter()
                state.round, state.waiting_for = r, None
                if ahead is None:
                    await net.broadcast(expected_payload(me, r, size), timeout=timeout)
                elif r == rounds // 3:
                    await asyncio.sleep(read_pause_ms / 1000)  # a reader that stops; the loop itself runs on
                if ahead is not None and ahead.done():
                    ahead.result()  # a send that failed fails the run
                watch.sample()  # this round's sends queued, its receives not yet taken: the buffers at their fullest
                for sender in range(net.party_count):
                    state.waiting_for = f"party{sender}"
                    got = await net.receive_from(sender, timeout=timeout)
                    received += 1
                    if got != expected_payload(sender, r, size):
                        failures.append(f"party {me}: round {r}: message from {sender} is wrong ({len(got)} bytes)")
                latencies.append(time.perf_counter() - start)
                if stall_ms:  # MPC code often blocks the loop computing; the transport must ride it out
                    time.sleep(stall_ms / 1000)  # noqa: ASYNC251 - blocking on purpose
                if progress is not None and ((r + 1) % every == 0 or r + 1 == rounds):
                    progress(r + 1, rounds)
            if ahead is not None:
                await ahead
            rounds_s = time.perf_counter() - t0
            state.round = state.waiting_for = None
            try:
                extra = await net.receive(timeout=0.05)
                failures.append(f"party {me}: an extra message from party {extra[0]}")
            except errors.Timeout:
                pass
        except errors.StoffelnetError as exc:
            lost = _lost_peers(net)
            failures.append(f"party {me}: {type(exc).__name__}: {exc}{_lost_note(lost, exc)}")
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()
            watch.stop()
        stats = net.stats()
        state.phase = "closing"
        sent = sum(p.bytes_sent for pid, p in stats.peers.items() if pid != me)
        reconnects = sum(p.reconnects for p in stats.peers.values())
        dropped = sum(
            c.ledger.duplicates
            for pid in net.parties()
            if pid != me and (c := net._parties.get(pid)) is not None and c.ledger is not None
        )
    return {
        "role": "party",
        "id": me,
        "ok": not failures,
        "failures": failures[:20],
        "lost_peers": lost,
        "clients_served": served,
        "setup_s": setup,
        "mpc_s": mpc_s,
        "rounds_s": rounds_s,
        "latencies_s": latencies,
        "messages_received": received,
        "bytes_sent": sent,
        "reconnects": reconnects,  # connections resumed after a loss
        "resent_dropped": dropped,  # frames sent again after a loss that had arrived before: dropped, not delivered
        "rss_peak_kib": rss_peak_kib(),
        "buffers": peaks.as_json(),  # per peer, the most each buffer held, and the config's bounds
    }


async def run_client(
    config: Config,
    *,
    value: int,
    expect: Results | None = None,
    timeout: float = _TIMEOUT,
    state: RunState | None = None,
) -> dict[str, Any]:
    """Give `value` to the computation; check the opened results against `expect` when given.

    A `StoffelnetError` on the way is recorded in the result (``failures``, ``lost_peers``), not raised.
    """
    state = RunState() if state is None else state
    failures: list[str] = []
    lost: list[str] = []
    results: Results | None = None
    started = time.perf_counter()
    async with open_client(config) as cli:
        setup = time.perf_counter() - started
        me = cli.client_id
        try:
            state.phase = "computation"
            results = await computation.client_compute(cli, value, timeout=timeout)
        except errors.StoffelnetError as exc:
            lost = _lost_peers(cli)
            failures.append(f"client {me}: {type(exc).__name__}: {exc}{_lost_note(lost, exc)}")
        state.phase = "closing"
    if results is not None and expect is not None:
        for name, got, want in zip(Results._fields, results, expect, strict=True):
            if got != want:
                failures.append(f"client {me}: {name} = {got}, expected {want}")
    return {
        "role": "client",
        "id": me,
        "ok": not failures,
        "failures": failures,
        "lost_peers": lost,
        "input": value,
        "sum": None if results is None else results.sum,
        "product": None if results is None else results.product,
        "checked": results is not None and expect is not None,
        "setup_s": setup,
    }


# -- signals -----------------------------------------------------------------------------------------------------
class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: the run was cancelled, and everything it opened was closed."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.name}")

    @property
    def exit_status(self) -> int:
        """What shells report for a process ended by this signal: 128 + its number (130 SIGINT, 143 SIGTERM)."""
        return 128 + self.signum


async def spawn(*args: str) -> asyncio.subprocess.Process:
    """Start ``python -m stoffelnet_core.runner ARGS`` (one member, in its own process) with its output piped: the
    demo's members and the fault scenarios' parties."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stoffelnet_core.runner",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def run_interruptible(main: Coroutine[Any, Any, _T], loop_factory: LoopFactory | None = None) -> _T:
    """`asyncio.run(main)` (on the loop `loop_factory` makes, if given); SIGINT or SIGTERM cancels `main` (so its
    ``finally`` and ``async with`` blocks close what it opened) and then raises `Interrupted`. A close that still
    waits for its peers after a few seconds (or after a second signal) is cancelled too."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_interruptible(main))


async def _interruptible(main: Coroutine[Any, Any, _T]) -> _T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if not received:  # the first: cancel, so that everything open is closed gracefully
            received.append(signum)
            task.cancel()
            loop.call_later(_CLOSE_GRACE, task.cancel)  # a graceful close waits for peers; this one is bounded
        else:  # the second: stop waiting for the close
            task.cancel()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals (Windows)
            continue
        installed.append(signum)
    try:
        return await main
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


# -- command line ------------------------------------------------------------------------------------------------
def _expectation(args: argparse.Namespace) -> Results | None:
    if args.expect_sum is None and args.expect_product is None:
        return None
    if args.expect_sum is None or args.expect_product is None:
        raise errors.ConfigError("--expect-sum and --expect-product go together", key="expect")
    return Results(args.expect_sum, args.expect_product)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 0:
        raise errors.ConfigError(f"--sizes must be comma-separated byte counts >= 0, got {text!r}", key="sizes")
    return sizes


def _check_arguments(role: str, args: argparse.Namespace) -> None:
    """Usage errors, found before anything connects: `errors.ConfigError` naming the option."""
    logs.parse_level(args.log_level)
    if not args.timeout > 0:
        raise errors.ConfigError(f"--timeout must be > 0 seconds, got {args.timeout}", key="timeout")
    if getattr(args, "client_timeout", None) is not None and not args.client_timeout > 0:
        raise errors.ConfigError(
            f"--client-timeout must be > 0 seconds, got {args.client_timeout}", key="client-timeout"
        )
    if role == "party":
        _sizes(args.sizes)
        if args.rounds < 0:
            raise errors.ConfigError(f"--rounds must be >= 0, got {args.rounds}", key="rounds")
        if args.clients is not None and args.clients < 0:
            raise errors.ConfigError(f"--clients must be >= 0, got {args.clients}", key="clients")
    else:
        try:
            mpc.check_element(args.input, "--input")
        except errors.InvalidArgument as exc:
            raise errors.ConfigError(str(exc), key="input", value=args.input) from None
        _expectation(args)


def add_member_arguments(parser: argparse.ArgumentParser, role: str, *, input_required: bool = False) -> None:
    """The options of one member's run (shared by this module's command line and `stoffelnet party`/`client`);
    `role` is ``"party"``, ``"client"`` or ``"any"`` (both sets)."""
    if role in ("party", "any"):
        parser.add_argument("--rounds", type=int, default=0, help="all-to-all rounds after the computation (default 0)")
        parser.add_argument(
            "--sizes",
            "--size",
            default="1024",
            help="bytes per round message; comma-separated sizes are cycled over the rounds (default 1024)",
        )
        parser.add_argument(
            "--clients",
            type=int,
            default=None,
            help="clients to serve (default: every client the config allows)",
        )
        parser.add_argument("--progress", action="store_true", help="print 'progress R/N' lines to stderr")
        parser.add_argument(
            "--stall-ms", type=int, default=0, help="block the event loop this long after every round (testing)"
        )
        parser.add_argument(
            "--read-pause-ms",
            type=int,
            default=0,
            help="stop reading this long at a third of the rounds while still broadcasting ahead (testing)",
        )
    if role in ("client", "any"):
        parser.add_argument(
            "--input",
            type=int,
            required=input_required,
            default=0,
            help="this client's private input, an integer 0 <= X < 2**61-1",
        )
        parser.add_argument("--expect-sum", type=int, help="check the opened sum against this value")
        parser.add_argument("--expect-product", type=int, help="check the opened product against this value")
    parser.add_argument(
        "--timeout", type=float, default=_TIMEOUT, help=f"seconds any one step may wait (default {_TIMEOUT:g})"
    )
    if role in ("party", "any"):
        parser.add_argument(
            "--client-timeout",
            type=float,
            default=None,
            help="seconds to wait for the clients to connect and give their inputs (default: no limit)",
        )
    parser.add_argument(
        "--loop",
        choices=EVENT_LOOPS,
        default=None,
        help="the event loop (default: the config's event_loop); uvloop only for a transport not slower on it",
    )
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default) or ERROR, to stderr")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines (ts, level, logger, member, message)")


def run_member(role: str, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """Run one member from parsed arguments; returns its JSON result and exit status (logs to stderr meanwhile).

    Exit status: 0 every check passed, 1 something failed (the result says what), 2 a bad config or option (nothing
    was started), 130/143 interrupted by SIGINT/SIGTERM.
    """
    try:
        _check_arguments(role, args)
        config = load_config(args.config)
    except errors.StoffelnetError as exc:
        return {"role": role, "ok": False, "failures": [f"{type(exc).__name__}: {exc}"]}, 2
    if (role == "party") != (config.party_id is not None):
        problem = f"{args.config} is the config of {member_name(config)}, not of a {role}"
        return {"role": role, "ok": False, "failures": [f"ConfigError: {problem}"]}, 2
    state = RunState()
    with logs.member_logging(member_name(config), level=args.log_level, json_lines=args.log_json):
        try:
            factory = loop_factory(args.loop or config.event_loop, config.transport)
        except errors.ConfigError as exc:
            return {"role": role, "ok": False, "failures": [f"ConfigError: {exc}"]}, 2
        try:
            result = run_interruptible(_member_main(role, config, args, state), factory)
        except Interrupted as exc:
            failure = f"{exc} during {state.describe()}"
            interrupted = {"role": role, "id": _id(config), "ok": False, "failures": [failure], "interrupted": exc.name}
            return interrupted | state.as_json(), exc.exit_status
        except errors.StoffelnetError as exc:  # could not even start (e.g. InitializationFailed)
            result = {"role": role, "id": _id(config), "ok": False, "failures": [f"{type(exc).__name__}: {exc}"]}
    return result, 0 if result["ok"] else 1


def _id(config: Config) -> int | None:
    return config.party_id if config.party_id is not None else config.client_id


async def _member_main(role: str, config: Config, args: argparse.Namespace, state: RunState) -> dict[str, Any]:
    if role == "party":
        sizes = _sizes(args.sizes)
        clients = len(config.clients.allow) if args.clients is None else args.clients

        def progress(done: int, total: int) -> None:
            sys.stderr.write(f"progress {done}/{total}\n")
            sys.stderr.flush()

        return await run_party(
            config,
            rounds=args.rounds,
            sizes=sizes,
            clients=clients,
            timeout=args.timeout,
            client_timeout=args.client_timeout,
            progress=progress if args.progress else None,
            state=state,
            stall_ms=args.stall_ms,
            read_pause_ms=args.read_pause_ms,
        )
    return await run_client(config, value=args.input, expect=_expectation(args), timeout=args.timeout, state=state)


def print_results(result: dict[str, Any]) -> None:
    """A client's opened results as ``sum = ...`` and ``product = ...`` lines on stdout (nothing if none)."""
    if result.get("role") == "client" and result.get("sum") is not None:
        print(f"sum = {result['sum']}")
        print(f"product = {result['product']}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stoffelnet_core.runner", description=__doc__)
    parser.add_argument("role", choices=("party", "client"))
    parser.add_argument("config")
    add_member_arguments(parser, "any")
    args = parser.parse_args(argv)
    try:
        result, status = run_member(args.role, args)
    except KeyboardInterrupt:  # a second Ctrl-C while closing
        return 130
    print_results(result)
    print(json.dumps(result), flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
