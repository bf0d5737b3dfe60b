"""All-to-all rounds of a bare baseline with each party in its own OS process, beside stoffelnet's own.

A baseline module (``<transport package>.baseline``) that also has ``open_party(keys, me, ports)`` -- an async
context manager yielding ``{peer: (send, recv)}`` for party `me` of ``len(ports)``, each in its own process -- gets
its multi-process rounds measured too: `baseline_rounds` starts one ``python -m stoffelnet_core.bench.procs``
process per party, each runs warm-up rounds (which also wait for everyone) and then the timed ones, and the
slowest party's time gives the rate, as for stoffelnet's parties.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import errors
from . import _cases
from .support import Keys, free_ports, make_keys

__all__ = ["baseline_rounds"]

_WARM = 50


def baseline_rounds(module: str, parties: int, size: int, rounds: int, timeout: float) -> float:
    """Rounds/s of `parties` processes of the baseline in `module` (the slowest party's time)."""
    return asyncio.run(_run(module, parties, size, rounds, timeout))


async def _run(module: str, parties: int, size: int, rounds: int, timeout: float) -> float:
    with tempfile.TemporaryDirectory(prefix="stoffelnet-bare-procs-") as folder:
        keys = make_keys(Path(folder), parties)
        (Path(folder) / "keys.json").write_text(json.dumps(keys._asdict()), encoding="utf-8")
        ports = ",".join(map(str, free_ports(parties)))
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
            raise errors.NetworkError(f"{module}: a bare party failed: {err.decode(errors='replace')[-400:]}")
        elapsed.append(float(json.loads(out.decode().strip().splitlines()[-1])["elapsed_s"]))
    return rounds / max(elapsed)


async def _party(module: str, folder: str, ports: list[int], me: int, rounds: int, size: int) -> float:
    baseline: Any = importlib.import_module(module)
    data = json.loads((Path(folder) / "keys.json").read_text(encoding="utf-8"))
    keys = Keys(tuple(data["certs"]), tuple(data["keys"]), tuple(data["fingerprints"]))
    payload = b"p" * size
    async with baseline.open_party(keys, me, ports) as links:
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
    sys.stdout.write(json.dumps({"elapsed_s": elapsed}) + "\n")  # the result, for `baseline_rounds`
    sys.stdout.flush()


if __name__ == "__main__":
    main()
