"""``stoffelnet certs``: from nothing to a working deployment, and the errors that stop it (exit 2, nothing written)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from pathlib import Path

import pytest

import stoffelnet_core as sn
from stoffelnet_core import cli, keys
from stoffelnet_core.config import load_config


def certs(*argv: str) -> int:
    return cli.main(["certs", *argv])


def test_writes_the_folder_and_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "deploy"
    assert certs("--parties", "3", "--clients", "2", "--out", str(out)) == 0
    printed, err = capsys.readouterr()
    assert err == ""  # quic (the default) is installed: no note
    stems = ["party0", "party1", "party2", "client0", "client1"]
    assert {p.name for p in out.iterdir()} == {f"{s}.{ext}" for s in stems for ext in ("key", "pem", "toml")}
    for stem in stems:
        assert stat.S_IMODE(os.stat(out / f"{stem}.key").st_mode) == 0o600
    lines = printed.splitlines()
    assert lines[0] == f"wrote 3 parties and 2 clients (quic) to {out}"
    assert lines[2].split() == ["MEMBER", "ADDRESS", "LISTEN", "FINGERPRINT"]
    rows = {line.split()[0]: line.split() for line in lines[3:8]}
    for i in range(3):
        fingerprint = keys.fingerprint(keys.load_certificate(out / f"party{i}.pem"))
        assert rows[f"party{i}"] == [f"party{i}", f"127.0.0.1:{9000 + i}", "-", fingerprint[:23] + "..."]
    assert rows["client1"][1:3] == ["-", "-"]
    assert lines[2].index("FINGERPRINT") == lines[3].index("sha256:")  # the columns line up
    assert "partyK.toml, partyK.key and every *.pem" in printed
    assert "clientJ.toml, clientJ.key, clientJ.pem and every party*.pem" in printed


def test_configs_pin_every_party_and_allowlist_the_clients(tmp_path: Path) -> None:
    assert certs("--parties", "2", "--clients", "2", "--out", str(tmp_path), "--transport", "loopback") == 0
    party_keys = [keys.fingerprint(keys.load_certificate(tmp_path / f"party{i}.pem")) for i in range(2)]
    client_keys = [keys.fingerprint(keys.load_certificate(tmp_path / f"client{j}.pem")) for j in range(2)]
    for i in range(2):
        config = load_config(tmp_path / f"party{i}.toml")
        assert config.transport == "loopback"
        assert config.party_id == i
        assert [node.fingerprint for node in config.parties] == party_keys
        assert list(config.clients.allow) == client_keys
    client = load_config(tmp_path / "client1.toml")
    assert client.client_id == 1
    assert [node.fingerprint for node in client.parties] == party_keys


def test_hosts_and_base_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--parties", "3", "--out", str(tmp_path), "--base-port", "7100", "--hosts", "10.1.0.1, mpc.example,::1"]
    assert certs(*argv) == 0
    config = load_config(tmp_path / "party2.toml")
    assert [str(node.address) for node in config.parties] == ["10.1.0.1:7100", "mpc.example:7101", "[::1]:7102"]
    assert [None if n.listen is None else str(n.listen) for n in config.parties] == [
        "0.0.0.0:7100",
        "0.0.0.0:7101",
        None,
    ]
    rows = capsys.readouterr().out.splitlines()[3:6]
    assert rows[0].split()[:3] == ["party0", "10.1.0.1:7100", "0.0.0.0:7100"]
    assert rows[2].split()[:3] == ["party2", "[::1]:7102", "-"]


def test_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert certs("--parties", "2", "--out", str(tmp_path)) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    capsys.readouterr()
    assert certs("--parties", "3", "--clients", "1", "--out", str(tmp_path)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("stoffelnet: error: refusing to overwrite 6 existing file(s)")
    assert "--force" in err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # party2, client0: not written either

    assert certs("--parties", "2", "--out", str(tmp_path), "--force") == 0
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after.keys() == before.keys()
    assert after["party0.key"] != before["party0.key"]
    assert stat.S_IMODE(os.stat(tmp_path / "party0.key").st_mode) == 0o600
    assert load_config(tmp_path / "party1.toml").parties[0].fingerprint == keys.fingerprint(
        keys.load_certificate(tmp_path / "party0.pem")
    )


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--parties", "0"], "--parties"),
        (["--parties", "2", "--clients", "-1"], "--clients"),
        (["--parties", "2", "--base-port", "0"], "--base-port"),
        (["--parties", "3", "--base-port", "65534"], "--base-port"),
        (["--parties", "2", "--hosts", "a"], "--hosts"),
        (["--parties", "2", "--hosts", "a,"], "--hosts"),
        (["--parties", "2", "--hosts", "a,b:9000"], "--hosts"),
        (["--parties", "2", "--transport", "Not A Name"], "--transport"),
        (["--parties", "two"], "--parties"),  # argparse's own check, same exit status
        (["--clients", "1"], "--parties"),  # required
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], option: str
) -> None:
    out = tmp_path / "deploy"
    assert certs(*argv, "--out", str(out)) == 2
    printed, err = capsys.readouterr()
    assert printed == ""
    assert f"argument {option}" in err or f"arguments are required: {option}" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_out_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    assert certs("--parties", "1", "--out", str(file)) == 2
    assert "argument --out:" in capsys.readouterr().err


def test_an_unknown_transport_is_written_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert certs("--parties", "1", "--out", str(tmp_path), "--transport", "carrier-pigeon") == 0
    assert "transport 'carrier-pigeon' is not installed here" in capsys.readouterr().err
    assert load_config(tmp_path / "party0.toml").transport == "carrier-pigeon"


def test_the_folder_moves_as_a_whole(tmp_path: Path) -> None:
    assert certs("--parties", "2", "--clients", "1", "--out", str(tmp_path / "a")) == 0
    (tmp_path / "a").rename(tmp_path / "b")
    for name in ("party0.toml", "party1.toml", "client0.toml"):
        config = load_config(tmp_path / "b" / name)
        assert config.tls is not None
        assert config.tls.key.parent == tmp_path / "b"


def free_ports(count: int) -> int:
    """A base port whose `count` consecutive TCP ports on 127.0.0.1 are free right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count - 1 > 65535:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    pytest.skip("no run of free ports on 127.0.0.1")


async def test_the_written_configs_run_a_network_over_tcp_tls(tmp_path: Path) -> None:
    """The point of the command: its output is a deployment that works, mutual TLS and pins included."""
    base = free_ports(2)
    argv = ["--parties", "2", "--clients", "1", "--out", str(tmp_path), "--base-port", str(base)]
    assert certs(*argv) == 0
    parties = [load_config(tmp_path / f"party{i}.toml") for i in range(2)]
    async with contextlib.AsyncExitStack() as stack:
        nets = await asyncio.gather(*(stack.enter_async_context(sn.open_network(c)) for c in parties))
        client = await stack.enter_async_context(sn.open_client(load_config(tmp_path / "client0.toml")))
        await asyncio.gather(*(net.wait_for_clients(1, timeout=10) for net in nets))
        await nets[0].send(1, b"share", timeout=10)
        assert await nets[1].receive_from(0, timeout=10) == b"share"
        await client.send(1, b"input", timeout=10)
        assert await nets[1].receive_from_client(timeout=10) == (0, b"input")
        await nets[1].send_to_client(0, b"output", timeout=10)
        assert await client.receive(timeout=10) == (1, b"output")
