"""make_deployment: the files it writes, the configs pinning every key, hosts and listen, refusal and --force."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import attrs
import pytest

from stoffelnet_core import errors, keys
from stoffelnet_core.config import load_config
from stoffelnet_core.deploy import Deployment, make_deployment
from stoffelnet_core.ids import Address, ClientType


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def names(parties: int, clients: int) -> set[str]:
    stems = [f"party{i}" for i in range(parties)] + [f"client{j}" for j in range(clients)]
    return {f"{stem}.{ext}" for stem in stems for ext in ("key", "pem", "toml")}


@pytest.fixture
def made(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path / "deploy", parties=3, clients=2)


def test_writes_a_key_certificate_and_config_per_member(made: Deployment, tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    assert made.out == out
    assert {path.name for path in out.iterdir()} == names(3, 2)  # nothing else: no temporary files left
    assert set(made.files) == {out / name for name in names(3, 2)}
    assert made.party_configs == tuple(out / f"party{i}.toml" for i in range(3))
    assert made.client_configs == tuple(out / f"client{j}.toml" for j in range(2))
    assert [m.name for m in made.members] == ["party0", "party1", "party2", "client0", "client1"]
    assert [m.role for m in made.members] == [ClientType.SERVER] * 3 + [ClientType.CLIENT] * 2
    assert [m.id for m in made.members] == [0, 1, 2, 0, 1]
    assert made.transport == "quic"  # the default


def test_keys_are_mode_0600_and_the_rest_is_not_writable_by_others(made: Deployment) -> None:
    for member in made.members:
        assert mode(member.key) == 0o600, member.key
        assert not mode(member.cert) & 0o022
        assert not mode(member.config) & 0o022


def test_fingerprints_are_those_of_the_written_keys(made: Deployment) -> None:
    for member in made.members:
        identity = keys.load_identity(member.cert, member.key)  # valid now, and the key matches the certificate
        assert member.fingerprint == keys.fingerprint(keys.load_certificate(member.cert)) == identity.fingerprint
    assert len(set(made.party_fingerprints + made.client_fingerprints)) == 5


def test_configs_load_back_equal(made: Deployment) -> None:
    paths = made.party_configs + made.client_configs
    for path, expected in zip(paths, made.configs(), strict=True):
        loaded = load_config(path)
        assert loaded == expected
        assert loaded.source == path


def test_party_configs_pin_every_party_and_allowlist_the_clients_in_order(made: Deployment) -> None:
    out = made.out
    for i, path in enumerate(made.party_configs):
        config = load_config(path)
        assert config.transport == "quic"
        assert config.party_id == i
        assert config.client_id is None
        assert config.tls is not None
        assert (config.tls.cert, config.tls.key) == (out / f"party{i}.pem", out / f"party{i}.key")
        assert [node.id for node in config.parties] == [0, 1, 2]
        assert tuple(node.fingerprint for node in config.parties) == made.party_fingerprints
        assert [node.cert for node in config.parties] == [out / f"party{k}.pem" for k in range(3)]
        assert [node.address for node in config.parties] == [Address("127.0.0.1", 9000 + k) for k in range(3)]
        assert config.clients.allow == made.client_fingerprints
        assert config.clients.certs == (out / "client0.pem", out / "client1.pem")
        for j, fingerprint in enumerate(made.client_fingerprints):
            assert config.clients.client_id_for(fingerprint) == j


def test_client_configs_pin_the_parties_and_admit_no_one(made: Deployment) -> None:
    for j, path in enumerate(made.client_configs):
        config = load_config(path)
        assert config.client_id == j
        assert config.party_id is None
        assert config.role is ClientType.CLIENT
        assert config.tls is not None
        assert config.tls.key == made.out / f"client{j}.key"
        assert tuple(node.fingerprint for node in config.parties) == made.party_fingerprints
        assert config.clients.allow == ()
        assert "[clients]" not in path.read_text()


def test_configs_name_files_relative_to_the_folder(made: Deployment) -> None:
    text = made.party_configs[1].read_text()
    assert 'cert = "party1.pem"' in text
    assert 'key = "party1.key"' in text
    assert 'cert = "party2.pem"' in text
    assert str(made.out) not in text


@pytest.mark.parametrize("relocate", [shutil.move, shutil.copytree])
def test_the_folder_can_be_moved_or_copied_as_a_whole(made: Deployment, tmp_path: Path, relocate: Any) -> None:
    moved = tmp_path / "elsewhere" / "deploy"
    moved.parent.mkdir()
    relocate(made.out, moved)
    for name, expected in zip([p.name for p in made.party_configs + made.client_configs], made.configs(), strict=True):
        loaded = load_config(moved / name)
        assert loaded.tls is not None
        assert loaded.tls.cert.parent == moved
        assert [node.cert for node in loaded.parties] == [moved / f"party{k}.pem" for k in range(3)]
        assert tuple(node.fingerprint for node in loaded.parties) == made.party_fingerprints
        assert loaded.clients.allow == expected.clients.allow
        assert all(cert.parent == moved for cert in loaded.clients.certs)


def test_a_relative_out_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    made = make_deployment("rel", parties=1)
    assert made.out == tmp_path / "rel"
    assert load_config(tmp_path / "rel" / "party0.toml") == made.configs()[0]


def test_one_party_no_clients(tmp_path: Path) -> None:
    made = make_deployment(tmp_path, parties=1, transport="loopback", base_port=65535)
    assert made.clients == ()
    config = load_config(made.party_configs[0])
    assert config.transport == "loopback"
    assert config.parties[0].address == Address("127.0.0.1", 65535)
    assert config.clients.allow == ()


def test_default_hosts_are_loopback_and_bind_where_they_are_reached(made: Deployment) -> None:
    for member in made.parties:
        assert member.address == Address("127.0.0.1", 9000 + member.id)
        assert member.listen is None
    assert all(m.address is None and m.listen is None for m in made.clients)


def test_hosts_give_addresses_and_non_loopback_parties_bind_all_interfaces(tmp_path: Path) -> None:
    hosts = ["10.0.0.5", "mpc1.example.org", "::1", "[2001:db8::7]", "localhost", "127.0.0.2"]
    made = make_deployment(tmp_path, parties=6, hosts=hosts, base_port=7000)
    addresses = [str(m.address) for m in made.parties]
    assert addresses == [
        "10.0.0.5:7000",
        "mpc1.example.org:7001",
        "[::1]:7002",
        "[2001:db8::7]:7003",
        "localhost:7004",
        "127.0.0.2:7005",
    ]
    listens = [None if m.listen is None else str(m.listen) for m in made.parties]
    assert listens == ["0.0.0.0:7000", "0.0.0.0:7001", None, "[::]:7003", None, None]
    config = load_config(made.party_configs[0])
    assert [str(node.address) for node in config.parties] == addresses
    assert [node.bind_address for node in config.parties] == [
        m.listen if m.listen is not None else m.address for m in made.parties
    ]
    text = made.party_configs[0].read_text()
    assert 'address = "10.0.0.5:7000"\nlisten = "0.0.0.0:7000"' in text


@pytest.mark.parametrize(
    ("arguments", "key", "words"),
    [
        ({"parties": 0}, "parties", ">= 1"),
        ({"parties": -2}, "parties", ">= 1"),
        ({"parties": True}, "parties", "integer"),
        ({"parties": "3"}, "parties", "integer"),
        ({"clients": -1}, "clients", ">= 0"),
        ({"clients": 1.0}, "clients", "integer"),
        ({"base_port": 0}, "base_port", "1..65535"),
        ({"base_port": 65536}, "base_port", "1..65535"),
        ({"base_port": 65534}, "base_port", "party 2 would get port 65536"),
        ({"transport": "TCP TLS"}, "transport", "transport name"),
        ({"transport": ""}, "transport", "transport name"),
        ({"hosts": ["a", "b"]}, "hosts", "got 2 for 3 parties"),
        ({"hosts": "a,b,c"}, "hosts", "list"),
        ({"hosts": ["a", "", "c"]}, "hosts[1]", "non-empty"),
        ({"hosts": ["a", " ", "c"]}, "hosts[1]", "non-empty"),
        ({"hosts": ["a", "b c", "c"]}, "hosts[1]", "host name"),
        ({"hosts": ["a", "b", "c:9000"]}, "hosts[2]", "without a port"),
        ({"hosts": ["a", "b", None]}, "hosts[2]", "non-empty"),
    ],
)
def test_bad_arguments_name_the_argument_and_write_nothing(
    tmp_path: Path, arguments: dict[str, Any], key: str, words: str
) -> None:
    out = tmp_path / "deploy"
    values: dict[str, Any] = {"parties": 3, "clients": 1}
    values.update(arguments)
    with pytest.raises(errors.ConfigError) as caught:
        make_deployment(out, **values)
    assert caught.value.key == key
    assert key.partition("[")[0] in str(caught.value)
    assert words in str(caught.value)
    assert not out.exists()


def test_out_must_be_a_folder(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(errors.ConfigError, match="not a folder") as caught:
        make_deployment(file, parties=1)
    assert caught.value.key == "out"


def test_refuses_to_overwrite_and_writes_nothing(made: Deployment) -> None:
    before = snapshot(made.out)
    with pytest.raises(errors.ConfigError, match="refusing to overwrite 15 existing file") as caught:
        make_deployment(made.out, parties=4, clients=3)  # party3 and client2 are new, but are not written either
    assert caught.value.key == "force"
    assert "party0.key" in str(caught.value)
    assert "--force" in str(caught.value)
    assert snapshot(made.out) == before


@pytest.mark.parametrize("stray", ["client1.key", "party0.toml", "party2.pem"])
def test_any_one_existing_file_is_enough_to_refuse(tmp_path: Path, stray: str) -> None:
    (tmp_path / stray).write_text("mine")
    with pytest.raises(errors.ConfigError, match=stray):
        make_deployment(tmp_path, parties=3, clients=2)
    assert snapshot(tmp_path) == {stray: b"mine"}


def test_a_dangling_symlink_counts_as_existing(tmp_path: Path) -> None:
    (tmp_path / "party0.key").symlink_to(tmp_path / "nowhere")
    with pytest.raises(errors.ConfigError, match=r"party0\.key"):
        make_deployment(tmp_path, parties=1)
    assert not (tmp_path / "nowhere").exists()


def test_force_replaces_everything(made: Deployment) -> None:
    os.chmod(made.parties[0].key, 0o644)
    again = make_deployment(made.out, parties=3, clients=2, force=True)
    assert set(again.party_fingerprints).isdisjoint(made.party_fingerprints)  # fresh keys
    assert {path.name for path in made.out.iterdir()} == names(3, 2)
    assert all(mode(member.key) == 0o600 for member in again.members)
    for path, expected in zip(again.party_configs + again.client_configs, again.configs(), strict=True):
        assert load_config(path) == expected


def test_force_leaves_other_files_alone(made: Deployment) -> None:
    (made.out / "notes.txt").write_text("keep me")
    make_deployment(made.out, parties=2, force=True)
    assert (made.out / "notes.txt").read_text() == "keep me"
    assert (made.out / "party2.toml").exists()  # of the earlier, larger deployment; not ours to delete


def test_a_failed_write_removes_what_it_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "deploy"
    real_replace = os.replace
    calls = []

    def failing_replace(source: str, target: str | os.PathLike[str]) -> None:
        calls.append(target)
        if len(calls) == 5:
            raise OSError(28, "No space left on device", str(target))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(errors.ConfigError, match="No space left on device") as caught:
        make_deployment(out, parties=2, clients=1)
    assert caught.value.key == "out"
    assert str(calls[-1]) in str(caught.value)
    assert list(out.iterdir()) == []  # neither the 4 files written before nor any temporary file


def test_a_failed_forced_write_keeps_files_it_did_not_create(made: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_replace(source: str, target: str | os.PathLike[str]) -> None:
        raise OSError(13, "Permission denied", str(target))

    monkeypatch.setattr(os, "replace", failing_replace)
    before = snapshot(made.out)
    with pytest.raises(errors.ConfigError, match="Permission denied"):
        make_deployment(made.out, parties=3, clients=2, force=True)
    assert snapshot(made.out) == before


def test_deployment_is_frozen(made: Deployment) -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.transport = "quic"  # type: ignore[misc]
