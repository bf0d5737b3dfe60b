"""All-to-all rounds with each party in its own OS process: stoffelnet's, and a bare baseline's, doing the same work.

A party is an ``open_party(keys, me, ports)``: an async context manager yielding ``{peer: (send, recv)}`` for party
`me` of ``len(ports)``, each in its own process. stoffelnet's is `stoffel_party` (a `Network` on the transport
named by ``stoffelnet:<transport>``); a baseline module (``<transport package>.baseline``) that has one gets its
multi-process rounds measured too. `process_rounds` starts one ``python -m stoffelnet_core.bench.procs`` process
per party; each runs `_cases.party_rounds` (the code the in-process rounds run): warm-up rounds (which also wait
for everyone), then the timed ones, and the slowest party's time gives the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import errors
from ..network import open_network
from ..testing import free_port
from . import _cases
from .support import Keys, Recv, Send, make_keys, party_ends, stoffel_config

__all__ = ["STOFFELNET", "process_rounds", "stoffel_party"]

STOFFELNET = "stoffelnet:"  # ``stoffelnet:<transport>`` names stoffelnet's own parties instead of a baseline module
_WARM = 50


def process_rounds(module: str, parties: int, size: int, rounds: int, timeout: float) -> float:
    """Rounds/s of `parties` processes running the parties of `module` (a baseline module, or ``stoffelnet:`` and a
    transport name): the slowest party's time."""
    return asyncio.run(_run(module, parties, size, rounds, timeout))


@contextlib.asynccontextmanager
async def stoffel_party(
    transport: str, k: Keys, me: int, ports: Sequence[int]
) -> AsyncIterator[Mapping[int, tuple[Send, Recv]]]:
    """Party `me` as a stoffelnet `Network` on `transport` (the config `local_network` makes, with these keys and
    ports); yields ``{peer: (send, recv)}`` once connected to every other party."""
    async with open_network(stoffel_config(transport, k, ports, me)) as net:
        yield party_ends(net, len(ports))


async def _run(module: str, parties: int, size: int, rounds: int, timeout: float) -> float:
    with tempfile.TemporaryDirectory(prefix="stoffelnet-bare-procs-") as folder:
        keys = make_keys(Path(folder), parties)
        (Path(folder) / "keys.json").write_text(json.dumps(keys._asdict()), encoding="utf-8")
        ports = ",".join(str(free_port()) for _ in range(parties))  # free for TCP and UDP
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "stoffelnet_core.bench.procs",
                module,
                folder,
                ports,
                str(me),
                str(rounds),
                str(size),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for me in range(parties)
        ]
        try:
            async with asyncio.timeout(timeout):
                outputs = await asyncio.gather(*(p.communicate() for p in procs))
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    elapsed = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            raise errors.NetworkError(f"{module}: a party failed: {err.decode(errors='replace')[-400:]}")
        elapsed.append(float(json.loads(out.decode().strip().splitlines()[-1])["elapsed_s"]))
    return rounds / max(elapsed)


async def _party(module: str, folder: str, ports: list[int], me: int, rounds: int, size: int) -> float:
    if module.startswith(STOFFELNET):
        open_party: Any = functools.partial(stoffel_party, module[len(STOFFELNET) :])
    else:
        open_party = importlib.import_module(module).open_party
    data = json.loads((Path(folder) / "keys.json").read_text(encoding="utf-8"))
    keys = Keys(tuple(data["certs"]), tuple(data["keys"]), tuple(data["fingerprints"]))
    payload = b"p" * size
    async with open_party(keys, me, ports) as links:
        await _cases.party_rounds(links, payload, _WARM)
        start = time.perf_counter()
        await _cases.party_rounds(links, payload, rounds)
        elapsed = time.perf_counter() - start
        await _cases.party_rounds(links, payload, 1)  # nobody closes while another still waits for its last round
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stoffelnet_core.bench.procs", description=__doc__)
    parser.add_argument("module")
    parser.add_argument("folder")
    parser.add_argument("ports")
    parser.add_argument("me", type=int)
    parser.add_argument("rounds", type=int)
    parser.add_argument("size", type=int)
    args = parser.parse_args()
    ports = [int(p) for p in args.ports.split(",")]
    elapsed = asyncio.run(_party(args.module, args.folder, ports, args.me, args.rounds, args.size))
    sys.stdout.write(json.dumps({"elapsed_s": elapsed}) + "\n")  # the result, for `process_rounds`
    sys.stdout.flush()


if __name__ == "__main__":
    main()
