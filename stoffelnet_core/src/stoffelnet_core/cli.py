"""The ``stoffelnet`` console script: one function per subcommand, registered with `command`.

A subcommand is one function that configures its parser and returns the function that runs it; the first line
of its docstring is its help::

    @command("demo")
    def _demo(parser: argparse.ArgumentParser) -> Runner:
        \"\"\"Run a real MPC computation among N local processes.\"\"\"
        parser.add_argument("--parties", type=int, default=3)

        def run(args: argparse.Namespace) -> int:
            return asyncio.run(_run_demo(args.parties))

        return run

A `StoffelnetError` from a runner ends the process with its message on stderr and exit status 2, no traceback.
Only this module prints; the library logs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from . import deploy, errors, plugins
from .config import EVENT_LOOPS
from .ping import setup_ping_command
from .transport import PLUGIN_API_VERSION

__all__ = ["COMMANDS", "Runner", "Setup", "command", "main"]

Runner = Callable[[argparse.Namespace], int]
"""Runs a parsed subcommand; returns the exit status."""

Setup = Callable[[argparse.ArgumentParser], Runner]
"""Adds a subcommand's arguments to its parser and returns its runner."""

COMMANDS: dict[str, Setup] = {}
"""The subcommands by name, in the order ``--help`` lists them; `command` adds to it."""

EXIT_OK = 0
EXIT_ERROR = 2  # as argparse uses for bad usage: the user must change something before trying again
EXIT_INTERRUPTED = 130  # what shells report for Ctrl-C


def command(name: str) -> Callable[[Setup], Setup]:
    """Register a subcommand's setup function under `name` (a decorator)."""

    def decorate(setup: Setup) -> Setup:
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} is registered twice")
        COMMANDS[name] = setup
        return setup

    return decorate


def _version() -> str:
    try:
        version = importlib.metadata.version("stoffelnet-core")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    return f"stoffelnet-core {version} (plugin API {PLUGIN_API_VERSION}, Python {platform.python_version()})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stoffelnet", description="Secure, fast networking for multi-party computation."
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v: info, -vv: debug) to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, setup in COMMANDS.items():
        doc = (setup.__doc__ or "").strip()
        summary = doc.splitlines()[0] if doc else None
        sub = subparsers.add_parser(name, help=summary, description=doc or None)
        sub.set_defaults(run=setup(sub))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: argparse has printed; keep main returning
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)  # for this run only: main() may be called many times in one process (tests)
    root.setLevel((logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)])
    try:
        run: Runner = args.run
        return run(args)
    except errors.StoffelnetError as exc:
        print(f"stoffelnet: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("stoffelnet: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)


# -- subcommands ---------------------------------------------------------------------------------------------
@command("transports")
def _transports(parser: argparse.ArgumentParser) -> Runner:
    """List the installed transports: name, distribution, version, and ok or broken with the reason.

    A broken plugin is listed, not fatal: the exit status is 0 whatever the plugins' state.
    """
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")

    def run(args: argparse.Namespace) -> int:
        found = plugins.default_plugins().transports()
        if args.json:
            json.dump([_as_json(info) for info in found], sys.stdout, indent=2)
            sys.stdout.write("\n")
        elif not found:
            print(f"no transports installed (entry point group {plugins.ENTRY_POINT_GROUP!r})")
        else:
            _table(found, sys.stdout)
        return EXIT_OK

    return run


def _as_json(info: plugins.TransportInfo) -> dict[str, Any]:
    transport = info.transport
    return {
        "name": info.name,
        "distribution": info.distribution,
        "version": info.version,
        "status": info.status,
        "reason": info.reason,
        "entry_point": info.entry_point,
        "class": None if transport is None else f"{transport.__module__}:{transport.__qualname__}",
    }


def _table(found: Sequence[plugins.TransportInfo], out: TextIO) -> None:
    rows = [("NAME", "DISTRIBUTION", "VERSION", "STATUS")]
    for info in found:
        status = "ok" if info.ok else f"broken: {' '.join(str(info.reason).split())}"  # one line per transport
        rows.append((info.name, info.distribution or "-", info.version or "-", status))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[3]]), file=out)


@command("demo")
def _demo(parser: argparse.ArgumentParser) -> Runner:
    """The main job: a real MPC computation among N parties and M clients, then checked all-to-all rounds.

    Makes keys and configs in a temporary folder and starts every party and client as its own OS process on
    127.0.0.1. Clients Shamir-share their inputs; the parties compute the sum and the product of the first two
    (BGW) and open them; each client checks them. Then R rounds of all-to-all broadcast of BYTES-sized messages,
    every message checked. Exits 0 only if every check passed; when a member fails it is named and the exit
    status is 1. Ctrl-C stops every process cleanly.
    """
    parser.add_argument("--parties", type=int, default=3, help="number of parties (default 3)")
    parser.add_argument("--clients", type=int, default=2, help="number of clients (default 2)")
    parser.add_argument("--rounds", type=int, default=200, help="all-to-all broadcast rounds (default 200)")
    parser.add_argument("--size", type=int, default=1024, help="bytes per message (default 1024)")
    parser.add_argument(
        "--transport",
        default="quic",
        help="transport name (default quic, the seed's: one OS process per member; loopback runs all in one)",
    )
    parser.add_argument(
        "--loop",
        choices=EVENT_LOOPS,
        default="asyncio",
        help="event loop of every member (uvloop: pip install 'stoffelnet-core[uvloop]'; used only where a "
        "transport is not slower on it)",
    )

    def run(args: argparse.Namespace) -> int:
        from .demo import report, run_demo, run_processes
        from .loops import loop_factory
        from .runner import Interrupted, run_interruptible

        if args.parties < 1 or args.clients < 0 or args.rounds < 0 or args.size < 0:
            raise errors.ConfigError("--parties must be >= 1; --clients, --rounds and --size >= 0")
        print(
            f"stoffelnet demo: {args.parties} parties, {args.clients} clients, {args.rounds} rounds of "
            f"{args.size} B over {args.transport}",
            flush=True,
        )
        # This process's loop: the members' own when they run here (loopback); each member process applies the
        # same policy to the loop its config names. Also says at once when uvloop is asked for but missing.
        factory = loop_factory(args.loop, args.transport)
        try:
            if args.transport == "loopback":
                main = run_demo(
                    parties=args.parties, clients=args.clients, rounds=args.rounds, size=args.size, out=sys.stdout
                )
            else:  # each member's config names the loop; the runner in each process applies the policy
                main = run_processes(
                    parties=args.parties,
                    clients=args.clients,
                    rounds=args.rounds,
                    size=args.size,
                    transport=args.transport,
                    out=sys.stdout,
                    event_loop=args.loop,
                )
            result = run_interruptible(main, factory)
        except Interrupted as exc:  # every process it started has been stopped and reaped
            print(f"stoffelnet: {exc}; every member was stopped", file=sys.stderr)
            return exc.exit_status
        report(result)
        return EXIT_OK if result.ok else 1

    return run


@command("certs")
def _certs(parser: argparse.ArgumentParser) -> Runner:
    """Make a deployment: each member's key and certificate, and one ready-to-run config per party and client.

    Every config pins every party's key (fingerprint and certificate file) and each party's allowlists every
    client. Keys are written with mode 0600; existing files are never replaced without --force.
    """
    parser.add_argument("--parties", type=int, required=True, help="number of parties (ids 0..N-1)")
    parser.add_argument("--clients", type=int, default=0, help="number of clients (default 0)")
    parser.add_argument("--out", required=True, help="folder to write into (made if missing)")
    parser.add_argument("--transport", default="quic", help="transport the configs select (default quic)")
    parser.add_argument("--base-port", type=int, default=9000, help="party i listens on port P+i (default 9000)")
    parser.add_argument(
        "--hosts", help="comma-separated host of each party, in id order (default 127.0.0.1 for every party)"
    )
    parser.add_argument("--force", action="store_true", help="replace existing keys, certificates and configs")

    def run(args: argparse.Namespace) -> int:
        hosts = None if args.hosts is None else [host.strip() for host in args.hosts.split(",")]
        try:
            deployment = deploy.make_deployment(
                args.out,
                parties=args.parties,
                clients=args.clients,
                transport=args.transport,
                base_port=args.base_port,
                hosts=hosts,
                force=args.force,
            )
        except errors.ConfigError as exc:
            option = _CERTS_OPTIONS.get((exc.key or "").partition("[")[0])
            if option is None:
                raise
            raise errors.ConfigError(f"argument {option}: {exc}", key=exc.key, value=exc.value) from None
        _certs_summary(deployment, sys.stdout)
        installed = {info.name for info in plugins.default_plugins().transports() if info.ok}
        if deployment.transport not in installed:
            print(
                f"stoffelnet: note: transport {deployment.transport!r} is not installed here (see `stoffelnet "
                "transports`); the hosts that run these configs need it",
                file=sys.stderr,
            )
        return EXIT_OK

    return run


_CERTS_OPTIONS = {
    "parties": "--parties",
    "clients": "--clients",
    "transport": "--transport",
    "base_port": "--base-port",
    "hosts": "--hosts",
    "out": "--out",
}


def _certs_summary(deployment: deploy.Deployment, out: TextIO) -> None:
    parties, clients = deployment.parties, deployment.clients
    print(
        f"wrote {len(parties)} part{'y' if len(parties) == 1 else 'ies'} and {len(clients)} "
        f"client{'' if len(clients) == 1 else 's'} ({deployment.transport}) to {deployment.out}",
        file=out,
    )
    print(file=out)
    rows = [("MEMBER", "ADDRESS", "LISTEN", "FINGERPRINT")]
    for member in deployment.members:
        rows.append(
            (
                member.name,
                "-" if member.address is None else str(member.address),
                "-" if member.listen is None else str(member.listen),
                member.fingerprint[: len("sha256:") + 16] + "...",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[3]]), file=out)
    print(file=out)
    print("Next steps (keep each member's files together in one folder: the configs name them relatively):", file=out)
    print("  party K's host:   partyK.toml, partyK.key and every *.pem", file=out)
    if clients:
        print("  client J's host:  clientJ.toml, clientJ.key, clientJ.pem and every party*.pem", file=out)
    print("  a key (*.key) is secret: copy it only to its own member's host, and keep it mode 0600", file=out)
    print("  then each member runs with its own config: stoffelnet_core.load_config('partyK.toml')", file=out)
    print("  or runs the demo's computation: stoffelnet party partyK.toml / client clientJ.toml --input X", file=out)


@command("party")
def _party(parser: argparse.ArgumentParser) -> Runner:
    """One party of the demo's MPC computation, from its config (as `stoffelnet certs` writes it).

    Joins the network, takes a Shamir share of each client's input, computes its shares of the sum and of the
    product of the first two inputs (one BGW multiplication with the other parties) and sends them to every client;
    then runs --rounds all-to-all rounds, every message checked. Exits 0 once it has served every configured client
    (and the rounds passed); 1 when something failed (stderr says what and, for a crash, which member); 130/143 on
    SIGINT/SIGTERM, after closing its connections.
    """
    from .runner import add_member_arguments

    parser.add_argument("config", help="this party's config file (partyK.toml)")
    add_member_arguments(parser, "party")
    parser.add_argument("--json", action="store_true", help="print the run's result as one JSON line on stdout")

    def run(args: argparse.Namespace) -> int:
        return _run_member("party", args)

    return run


@command("client")
def _client(parser: argparse.ArgumentParser) -> Runner:
    """One client of the demo's MPC computation: give --input, print the opened `sum = ...` and `product = ...`.

    Shamir-shares the input to every party and reconstructs the results from the parties' shares, checking that
    all shares agree. The plain results cannot be checked by a client alone (it knows only its own input); give
    --expect-sum and --expect-product to check them. Exits 0 when the results were opened (and matched any
    expectation), 1 otherwise.
    """
    from .runner import add_member_arguments

    parser.add_argument("config", help="this client's config file (clientJ.toml)")
    add_member_arguments(parser, "client", input_required=True)
    parser.add_argument("--json", action="store_true", help="also print the run's result as one JSON line")

    def run(args: argparse.Namespace) -> int:
        return _run_member("client", args)

    return run


def _run_member(role: str, args: argparse.Namespace) -> int:
    from .runner import print_results, run_member

    result, status = run_member(role, args)
    print_results(result)
    if role == "party" and result.get("ok"):
        served = result.get("clients_served", 0)
        line = f"party {result.get('id')}: served {served} client{'' if served == 1 else 's'}"
        latencies = sorted(result.get("latencies_s", []))
        if latencies:
            line += f"; {len(latencies)} rounds checked, median {latencies[len(latencies) // 2] * 1000:.3f} ms"
        print(line)
    if args.json:
        print(json.dumps(result))
    sys.stdout.flush()
    for failure in result.get("failures", []):
        print(f"stoffelnet: {'error' if status == EXIT_ERROR else role}: {failure}", file=sys.stderr)
    if result.get("lost_peers"):
        print(f"stoffelnet: lost the connection to {', '.join(result['lost_peers'])}", file=sys.stderr)
    return int(status)


command("ping")(setup_ping_command)


@command("bench")
def _bench(parser: argparse.ArgumentParser) -> Runner:
    """Measure each installed transport beside its bare baseline, in one run, and print the ratios.

    Cases: 64 B round trip (median, p99), one-way msg/s at 64 B and 1 KiB, MiB/s at 64 KiB and 1 MiB, 3-party
    rounds in one process, and all-to-all rounds/s of 3, 5 and 8 parties as separate processes at 64 B and 4 KiB
    with each party's peak RSS. Each repeat measures stoffelnet and the baseline back to back (A B, then B A), and
    a row's ratio is the median of the repeats' ratios: only ratios from one run count, absolute figures drift.
    """
    parser.add_argument(
        "--transport",
        action="append",
        metavar="NAME",
        help="measure this transport, or a variant such as quic[qh3] (repeatable; default: every installed transport "
        "that is ok, and its variants)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer messages and repeats, 3-party rounds only")
    parser.add_argument("--json", metavar="FILE", help="also write the machine and the rows as JSON to FILE")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw the ratios into FILE.png (needs matplotlib)")

    def run(args: argparse.Namespace) -> int:
        from . import bench

        if args.plot:
            bench.require_matplotlib()  # before minutes of measuring, not after

        def progress(line: str) -> None:
            print(f"bench: {line}", file=sys.stderr, flush=True)

        started = time.perf_counter()
        sizes = bench.QUICK if args.quick else bench.FULL
        rows = bench.run_bench(args.transport, sizes, progress=progress)
        info = bench.machine()
        names = list(dict.fromkeys(row.transport for row in rows if row.transport != "core"))
        print(
            f"machine: {info['cpu']}, {info['cpus']} cpus, {info['system']}, {info['python']}, {info['openssl']}; "
            f"core {info['core']}; "
            f"{'--quick, ' if args.quick else ''}median of {sizes.repeats} pairs, interleaved; "
            f"{time.perf_counter() - started:.0f} s"
        )
        bench.format_table(rows, sys.stdout, bench.baseline_names(names))
        if args.json:
            bench.write_json(rows, args.json, info)
        if args.plot:
            bench.plot(rows, args.plot)
        return EXIT_OK

    return run


if __name__ == "__main__":
    raise SystemExit(main())
