"""Config: every validation rule, from code and from TOML, and the dump/load round trip."""

from __future__ import annotations

import datetime
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stoffelnet_core import errors
from stoffelnet_core.config import (
    ClientsConfig,
    Config,
    TLSConfig,
    config_from_mapping,
    dump_config,
    load_config,
)
from stoffelnet_core.ids import Address, ClientId, ClientType, Node, PartyId, parse_address


def fp(n: int) -> str:
    return f"sha256:{n:064x}"


def nodes(n: int) -> tuple[Node, ...]:
    return tuple(Node(PartyId(i), parse_address(f"127.0.0.1:{9000 + i}"), fingerprint=fp(100 + i)) for i in range(n))


def party_config(**changes: Any) -> Config:
    values: dict[str, Any] = {"transport": "loopback", "party_id": 0, "parties": nodes(3)}
    values.update(changes)
    return Config(**values)


def table(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "transport": "loopback",
        "party_id": 0,
        "parties": [{"id": i, "address": f"127.0.0.1:{9000 + i}", "fingerprint": fp(100 + i)} for i in range(3)],
    }
    data.update(changes)
    return data


def write(directory: Path, text: str, name: str = "party.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


PARTY_TOML = """
transport = "loopback"
party_id = 1
[[parties]]
id = 0
address = "127.0.0.1:9000"
[[parties]]
id = 1
address = "127.0.0.1:9001"
"""


# -- defaults and conveniences -------------------------------------------------------------------------------
def test_defaults_follow_the_design() -> None:
    config = Config(party_id=0, parties=nodes(1))
    assert config.transport == "quic"
    assert (config.timeout_ms, config.max_retries, config.max_frame_size) == (30000, 12, 104857600)
    assert (config.send_buffer_bytes, config.receive_window_bytes) == (4194304, 1048576)
    assert config.tls is None
    assert config.clients == ClientsConfig()
    assert dict(config.transport_options) == {}
    assert config.source is None


def test_conveniences() -> None:
    config = party_config(party_id=2, timeout_ms=1500)
    assert config.role is ClientType.SERVER
    assert config.party_ids == (0, 1, 2)
    assert config.party_count == 3
    assert config.timeout == 1.5
    assert config.node(1).address == Address("127.0.0.1", 9001)
    client = Config(client_id=4, parties=nodes(2))
    assert client.role is ClientType.CLIENT


@pytest.mark.parametrize("missing", [3, -1, True])
def test_node_of_an_unknown_party_raises_party_not_found(missing: int) -> None:
    with pytest.raises(errors.PartyNotFound) as caught:
        party_config().node(missing)
    assert caught.value.party == missing


def test_parties_in_any_order_are_found_by_id() -> None:
    shuffled = tuple(reversed(nodes(3)))
    config = party_config(parties=list(shuffled))  # a list is accepted and stored as a tuple
    assert config.parties == shuffled
    assert config.node(0).id == 0
    assert config.party_ids == (0, 1, 2)


def test_client_ids_are_indexes_in_allow() -> None:
    clients = ClientsConfig(allow=[fp(1), fp(2)])  # code may pass a list
    assert clients.allow == (fp(1), fp(2))
    assert clients.client_id_for(fp(2)) == ClientId(1)
    assert clients.client_id_for(fp(3)) is None


def test_config_is_frozen_and_hashable() -> None:
    config = party_config(transport_options={"quic": {"alpn": ["a", "b"], "nested": {"x": 1}}})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.timeout_ms = 1  # type: ignore[misc]
    options = config.transport_options["quic"]
    with pytest.raises(TypeError):
        options["alpn"] = "c"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.transport_options["new"] = {}  # type: ignore[index]
    assert options["alpn"] == ("a", "b")  # arrays are frozen as tuples
    assert hash(config) == hash(party_config(transport_options={"quic": {"alpn": ("a", "b"), "nested": {"x": 1}}}))


def test_the_options_given_are_copied() -> None:
    given_options: dict[str, dict[str, Any]] = {"quic": {"a": 1}}
    config = party_config(transport_options=given_options)
    given_options["quic"]["a"] = 2
    assert config.transport_options["quic"]["a"] == 1


def test_tls_paths_from_code_are_not_checked_for_existence() -> None:
    tls = TLSConfig(cert="party0.pem", key=Path("party0.key"))  # str is converted
    assert tls.cert == Path("party0.pem")
    assert party_config(tls=tls).tls == tls


# -- validation in code --------------------------------------------------------------------------------------
BAD_VALUES = [
    pytest.param({"client_id": 0}, "party_id", "exactly one of party_id", id="both-ids"),
    pytest.param({"party_id": None}, "party_id", "neither is set", id="no-id"),
    pytest.param({"party_id": 3}, "party_id", "party_id 3 is not one of the parties' ids (0..2)", id="party-out"),
    pytest.param({"party_id": -1}, "party_id", "party_id must be an integer >= 0, got -1", id="party-negative"),
    pytest.param({"party_id": True}, "party_id", "got True (a boolean)", id="party-bool"),
    pytest.param({"party_id": "0"}, "party_id", "party_id must be an integer", id="party-str"),
    pytest.param({"timeout_ms": 0}, "timeout_ms", "timeout_ms must be a positive integer", id="timeout-zero"),
    pytest.param({"timeout_ms": -5}, "timeout_ms", "got -5", id="timeout-negative"),
    pytest.param({"timeout_ms": "1000"}, "timeout_ms", "must be an integer (milliseconds)", id="timeout-str"),
    pytest.param({"timeout_ms": 1.5}, "timeout_ms", "got 1.5", id="timeout-float"),
    pytest.param({"timeout_ms": True}, "timeout_ms", "(a boolean)", id="timeout-bool"),
    pytest.param({"max_retries": -1}, "max_retries", "max_retries must be an integer >= 0", id="retries"),
    pytest.param({"max_retries": False}, "max_retries", "(a boolean)", id="retries-bool"),
    pytest.param({"max_frame_size": 0}, "max_frame_size", "in 1..4294967295, got 0", id="frame-zero"),
    pytest.param({"max_frame_size": 2**32}, "max_frame_size", "got 4294967296", id="frame-big"),
    pytest.param({"send_buffer_bytes": 1023}, "send_buffer_bytes", ">= 1024, got 1023", id="send-buffer"),
    pytest.param({"receive_window_bytes": 16}, "receive_window_bytes", ">= 1024, got 16", id="window"),
    pytest.param({"transport": ""}, "transport", "transport must be lowercase", id="transport-empty"),
    pytest.param({"transport": "QUIC"}, "transport", "got 'QUIC'", id="transport-upper"),
    pytest.param({"transport": "-quic"}, "transport", "starting with a letter or digit", id="transport-dash"),
    pytest.param({"transport": 3}, "transport", "got 3", id="transport-int"),
    pytest.param({"tls": "cert.pem"}, "tls", "tls must be a TLSConfig", id="tls-type"),
    pytest.param({"clients": [fp(1)]}, "clients", "clients must be a ClientsConfig", id="clients-type"),
    pytest.param({"parties": ()}, "parties", "parties must list the parties", id="no-parties"),
    pytest.param({"parties": 3}, "parties", "parties must be a list", id="parties-int"),
    pytest.param({"parties": ["127.0.0.1:9000"]}, "parties[0]", "must be an ids.Node", id="party-not-node"),
]


@pytest.mark.parametrize(("changes", "key", "fragment"), BAD_VALUES)
def test_bad_values_name_their_key_and_value(changes: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        party_config(**changes)
    assert caught.value.key == key
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError)  # generic handlers catch it too


def test_client_id_rules() -> None:
    with pytest.raises(errors.ConfigError, match="client_id must be an integer >= 0, got -1"):
        Config(client_id=-1, parties=nodes(2))
    with pytest.raises(errors.ConfigError, match="a client connects to"):
        Config(client_id=0)


def test_duplicate_party_id() -> None:
    parties = (Node(PartyId(0)), Node(PartyId(1)), Node(PartyId(1)))
    with pytest.raises(errors.ConfigError) as caught:
        party_config(parties=parties)
    assert str(caught.value) == r"duplicate party id 1 in parties[2].id (first in parties[1].id)"
    assert (caught.value.key, caught.value.value) == ("parties[2].id", 1)


def test_party_ids_must_be_dense_from_zero() -> None:
    parties = (Node(PartyId(0)), Node(PartyId(2)), Node(PartyId(3)))
    with pytest.raises(errors.ConfigError) as caught:
        party_config(parties=parties)
    assert "party ids must be 0..2 for 3 parties, got 3 in parties[2].id (missing: 1)" == str(caught.value)


@pytest.mark.parametrize("bad_id", [-1, True, "0", None])
def test_party_id_type_in_nodes(bad_id: Any) -> None:
    with pytest.raises(errors.ConfigError, match=r"parties\[0\]\.id must be an integer"):
        party_config(parties=(Node(bad_id),))


@pytest.mark.parametrize(
    ("node", "key", "fragment"),
    [
        (Node(PartyId(0), address="127.0.0.1:9000"), "parties[0].address", "parse_address"),  # type: ignore[arg-type]
        (Node(PartyId(0), listen=Address("", 1)), "parties[0].listen", "must have a host"),
        (Node(PartyId(0), address=Address("h", 70000)), "parties[0].address", "port in 0..65535"),
        (Node(PartyId(0), fingerprint="sha256:abc"), "parties[0].fingerprint", "64 hex digits, got 'sha256:abc'"),
        (Node(PartyId(0), fingerprint=fp(1).upper()), "parties[0].fingerprint", "(lowercase hex)"),
        (Node(PartyId(0), fingerprint="md5:" + "0" * 64), "parties[0].fingerprint", "'sha256:'"),
    ],
)
def test_bad_nodes(node: Node, key: str, fragment: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        party_config(parties=(node,))
    assert caught.value.key == key
    assert fragment in str(caught.value)


def test_duplicate_party_fingerprint() -> None:
    parties = (Node(PartyId(0), fingerprint=fp(1)), Node(PartyId(1), fingerprint=fp(1)))
    with pytest.raises(errors.ConfigError, match=r"duplicate fingerprint in parties\[1\]\.fingerprint") as caught:
        party_config(parties=parties)
    assert caught.value.value == fp(1)


def test_clients_allow_rules() -> None:
    with pytest.raises(errors.ConfigError, match=r"clients\.allow\[1\] must be 'sha256:'"):
        ClientsConfig(allow=(fp(1), "nope"))
    with pytest.raises(errors.ConfigError, match=r"duplicate fingerprint in clients\.allow\[2\]"):
        ClientsConfig(allow=(fp(1), fp(2), fp(1)))
    with pytest.raises(errors.ConfigError, match=r"clients\.allow must be a list"):
        ClientsConfig(allow=fp(1))  # a lone string is not a list of them


def test_a_party_key_can_never_be_a_client() -> None:
    with pytest.raises(errors.ConfigError, match=r"clients\.allow\[0\] is party 2's fingerprint") as caught:
        party_config(clients=ClientsConfig(allow=(fp(102),)))
    assert caught.value.key == "clients.allow[0]"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"quic": 5}, "transport_options.quic must be a table, got 5"),
        ({"Quic": {}}, "transport_options.Quic must be named by a transport name"),
        (["quic"], "transport_options must be a table of tables"),
        ({"quic": {1: 2}}, "must have a string key"),
    ],
)
def test_transport_options_are_tables_of_tables(options: Any, fragment: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        party_config(transport_options=options)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("cert", "fragment"),
    [("", "tls.cert must not be empty"), (5, "tls.cert must be a file path, got 5")],
)
def test_tls_paths_in_code(cert: Any, fragment: str) -> None:
    with pytest.raises(errors.ConfigError, match=fragment):
        TLSConfig(cert=cert, key="k.pem")


# -- from a mapping (parsed TOML) ----------------------------------------------------------------------------
def test_from_mapping() -> None:
    config = config_from_mapping(table(transport_options={"quic": {"idle_timeout_ms": 300000}}))
    assert config == party_config(transport_options={"quic": {"idle_timeout_ms": 300000}})


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        (table(timout_ms=5), "timout_ms", "unknown key 'timout_ms' (did you mean 'timeout_ms'?)"),
        (table(tsl={"cert": "a"}), "tsl", "unknown key 'tsl' (did you mean 'tls'?)"),
        (table(tls={"cert": "a", "key": "b", "cerd": "c"}), "tls.cerd", "(did you mean 'tls.cert'?)"),
        (table(clients={"alow": []}), "clients.alow", "unknown key 'clients.alow' (did you mean 'clients.allow'?)"),
        (table(source="x.toml"), "source", "unknown key 'source'"),
    ],
)
def test_unknown_keys_are_named_with_a_suggestion(data: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        config_from_mapping(data)
    assert caught.value.key == key
    assert message in str(caught.value)


def test_unknown_key_in_parties_is_named_with_its_index() -> None:
    data = table()
    data["parties"][1]["adress"] = "127.0.0.1:1"
    with pytest.raises(errors.ConfigError) as caught:
        config_from_mapping(data)
    assert str(caught.value) == "unknown key 'parties[1].adress' (did you mean 'parties[1].address'?)"


def test_unknown_key_without_a_close_match_lists_the_known_ones() -> None:
    with pytest.raises(errors.ConfigError, match="unknown key 'zzz' \\(known keys: transport, party_id"):
        config_from_mapping(table(zzz=1))


@pytest.mark.parametrize(
    ("mutate", "key", "fragment"),
    [
        (lambda d: d["parties"][1].update(address="localhost"), "parties[1].address", "not a valid address"),
        (lambda d: d["parties"][1].update(address="h:99999"), "parties[1].address", "port must be 0..65535"),
        (lambda d: d["parties"][1].update(listen=9001), "parties[1].listen", "must be a string, got 9001"),
        (lambda d: d["parties"][2].update(fingerprint=7), "parties[2].fingerprint", "got 7"),
        (lambda d: d["parties"][0].pop("id"), "parties[0].id", "parties[0].id is missing"),
        (lambda d: d["parties"][0].update(id="0"), "parties[0].id", "must be an integer"),
        (lambda d: d["parties"][2].update(id=1), "parties[2].id", "duplicate party id 1 in parties[2].id"),
        (lambda d: d.update(parties={"id": 0}), "parties", "array of tables"),
        (lambda d: d["parties"].append("x"), "parties[3]", "parties[3] must be a table"),
        (lambda d: d.update(timeout_ms="30s"), "timeout_ms", "timeout_ms must be an integer (milliseconds), got '30s'"),
        (lambda d: d.update(party_id=True), "party_id", "(a boolean)"),
        (lambda d: d.update(tls="x.pem"), "tls", "tls must be a table"),
        (lambda d: d.update(tls={"cert": "a.pem"}), "tls.key", "tls.key is missing"),
        (lambda d: d.update(tls={"cert": 1, "key": "k"}), "tls.cert", "tls.cert must be a string"),
        (lambda d: d.update(clients=[]), "clients", "clients must be a table"),
        (lambda d: d.update(clients={"allow": fp(1)}), "clients.allow", "array of fingerprints"),
        (lambda d: d.update(clients={"allow": [fp(1), 2]}), "clients.allow[1]", "got 2"),
        (lambda d: d.update(transport_options={"quic": 1}), "transport_options.quic", "must be a table"),
        (lambda d: d.update(transport_options={"quic": [{}]}), "transport_options.quic", "must be a table"),
        (lambda d: d.update(transport_options=1), "transport_options", "table of tables"),
    ],
)
def test_bad_values_in_a_mapping(mutate: Any, key: str, fragment: str) -> None:
    data = table()
    mutate(data)
    with pytest.raises(errors.ConfigError) as caught:
        config_from_mapping(data)
    assert caught.value.key == key
    assert fragment in str(caught.value)


def test_address_error_names_key_and_value() -> None:
    data = table()
    data["parties"][1]["address"] = "no-port"
    with pytest.raises(errors.ConfigError) as caught:
        config_from_mapping(data)
    assert str(caught.value).startswith("parties[1].address is not a valid address")
    assert "'no-port'" in str(caught.value)
    assert caught.value.value == "no-port"


def test_ipv6_addresses() -> None:
    data = table()
    data["parties"][0]["address"] = "[::1]:9000"
    data["parties"][0]["listen"] = "[::]:9000"
    node = config_from_mapping(data).node(0)
    assert node.address == Address("::1", 9000)
    assert node.bind_address == Address("::", 9000)


# -- from a file ---------------------------------------------------------------------------------------------
def test_load_config_sets_source(tmp_path: Path) -> None:
    path = write(tmp_path, PARTY_TOML)
    config = load_config(path)
    assert config.source == path
    assert config.party_id == 1
    assert config.node(1).address == Address("127.0.0.1", 9001)
    assert config == attrs.evolve(config, source=None)  # where it came from is not part of equality


def test_load_config_accepts_str(tmp_path: Path) -> None:
    assert load_config(str(write(tmp_path, PARTY_TOML))).party_id == 1


def test_relative_tls_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "p1.pem").write_text("cert")
    absolute_key = tmp_path / "elsewhere.key"
    absolute_key.write_text("key")
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    path = write(conf_dir, PARTY_TOML + f'[tls]\ncert = "../keys/p1.pem"\nkey = "{absolute_key.as_posix()}"\n')
    config = load_config(path)
    assert config.tls is not None
    assert config.tls.cert.resolve() == (tmp_path / "keys" / "p1.pem").resolve()
    assert config.tls.cert.is_absolute()
    assert config.tls.key == absolute_key


def test_missing_tls_file_names_key_and_path(tmp_path: Path) -> None:
    (tmp_path / "p1.key").write_text("key")
    path = write(tmp_path, PARTY_TOML + '[tls]\ncert = "p1.pem"\nkey = "p1.key"\n')
    with pytest.raises(errors.ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: tls.cert file ")
    assert str(tmp_path / "p1.pem") in message
    assert "does not exist" in message
    assert caught.value.key == "tls.cert"
    assert caught.value.value == str(tmp_path / "p1.pem")


def test_tls_path_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "p1.pem").mkdir()
    (tmp_path / "p1.key").write_text("key")
    path = write(tmp_path, PARTY_TOML + '[tls]\ncert = "p1.pem"\nkey = "p1.key"\n')
    with pytest.raises(errors.ConfigError, match="is a directory, not a file"):
        load_config(path)


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(errors.ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"cannot read config file {str(path)!r}: No such file or directory"
    assert caught.value.value == str(path)


def test_config_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="cannot read config file"):
        load_config(tmp_path)


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'transport = "quic"\nparty_id = = 1\n')
    with pytest.raises(errors.ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"config file {str(path)!r} is not valid TOML: ")
    assert "line 2" in str(caught.value)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('transport = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(errors.ConfigError, match="is not UTF-8"):
        load_config(path)


def test_errors_from_a_file_are_prefixed_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "timeout = 5\n" + PARTY_TOML)
    with pytest.raises(errors.ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: unknown key 'timeout' (did you mean 'timeout_ms'?)"
    assert caught.value.key == "timeout"
    assert caught.value.value == 5


def test_a_key_after_a_table_header_belongs_to_that_table(tmp_path: Path) -> None:
    path = write(tmp_path, PARTY_TOML + "timeout_ms = 5\n")  # TOML puts it into the last [[parties]]
    with pytest.raises(errors.ConfigError) as caught:
        load_config(path)
    assert str(caught.value).endswith(
        "unknown key 'parties[1].timeout_ms' ('timeout_ms' is a top-level key: write it before the first [table] "
        "header)"
    )


def test_error_key_survives_the_prefix(tmp_path: Path) -> None:
    path = write(tmp_path, PARTY_TOML.replace('"127.0.0.1:9001"', '"127.0.0.1"'))
    with pytest.raises(errors.ConfigError) as caught:
        load_config(path)
    assert caught.value.key == "parties[1].address"
    assert caught.value.value == "127.0.0.1"
    assert str(caught.value).startswith(f"{path}: parties[1].address is not a valid address")


def test_the_design_example_loads(tmp_path: Path) -> None:
    (tmp_path / "party0.pem").write_text("cert")
    (tmp_path / "party0.key").write_text("key")
    text = f"""
transport = "quic"                  # or "tcp-tls", "loopback", or any installed third-party name
party_id = 0
timeout_ms = 30000
max_retries = 3
max_frame_size = 104857600
[tls]
cert = "party0.pem"
key = "party0.key"
[[parties]]
id = 0
address = "127.0.0.1:9000"          # where the others reach this party
listen = "0.0.0.0:9000"             # optional: where it binds, when that differs
fingerprint = "{fp(1)}"
[clients]
allow = ["{fp(2)}"]
[transport_options.quic]
idle_timeout_ms = 300000
"""
    config = load_config(write(tmp_path, text))
    assert config.max_retries == 3
    assert config.node(0).bind_address == Address("0.0.0.0", 9000)
    assert config.clients.client_id_for(fp(2)) == 0
    assert config.transport_options["quic"]["idle_timeout_ms"] == 300000


# -- dump and load back --------------------------------------------------------------------------------------
def full_config(tmp_path: Path) -> Config:
    cert, key = tmp_path / "keys" / "p 0.pem", tmp_path / "keys" / "p0.key"
    cert.parent.mkdir(exist_ok=True)
    cert.write_text("cert")
    key.write_text("key")
    parties = (
        Node(PartyId(0), Address("127.0.0.1", 9000), Address("0.0.0.0", 9000), fp(1)),
        Node(PartyId(1), Address("::1", 9001), fingerprint=fp(2)),
        Node(PartyId(2)),
    )
    options: Mapping[str, Mapping[str, Any]] = {
        "quic": {
            "idle_timeout_ms": 300000,
            "congestion": "cubic",
            "ratio": 0.25,
            "huge": 1e300,
            "infinite": float("inf"),
            "enabled": True,
            "alpn": ["stoffelnet/1", 'we"ird\\\n\t\x7f\x00 é ✓'],
            "nested": {"a.b": {"deep": [1, 2.5, "x"]}, "empty": {}, "list of tables": [{"k": 1}, {}]},
            "when": datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
            "local": datetime.datetime(2024, 5, 1, 12, 30, 1, 500),
            "day": datetime.date(2024, 5, 1),
            "at": datetime.time(7, 32),
            "weird key": 1,
        },
        "tcp-tls": {},
        "my.transport": {"x": -1},
    }
    return Config(
        transport="tcp-tls",
        party_id=1,
        timeout_ms=1234,
        max_retries=0,
        max_frame_size=2**32 - 1,
        send_buffer_bytes=1024,
        receive_window_bytes=65536,
        keepalive_ms=777,
        resume_ms=4321,  # every scalar key off its default: a key the loader forgets fails the round trip
        resend_buffer_bytes=99999,
        tls=TLSConfig(cert, key),
        parties=parties,
        clients=ClientsConfig((fp(10), fp(11))),
        transport_options=options,
    )


def test_dump_then_load_gives_an_equal_config(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    text = dump_config(config)
    loaded = load_config(write(tmp_path, text))
    assert loaded == config
    assert loaded.transport_options == config.transport_options


def test_dump_of_a_client_config(tmp_path: Path) -> None:
    config = Config(client_id=3, parties=nodes(2), transport="quic")
    text = dump_config(config)
    assert "party_id" not in text
    assert "[clients]" not in text
    assert load_config(write(tmp_path, text)) == config


def test_dump_relative_to_the_config_folder(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    text = dump_config(config, relative_to=tmp_path)
    assert 'cert = "keys/p 0.pem"' in text
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "keys").rename(moved / "keys")  # the folder moves as a whole
    loaded = load_config(write(moved, text))
    assert loaded.tls == TLSConfig(moved / "keys" / "p 0.pem", moved / "keys" / "p0.key")


def test_dump_keeps_paths_outside_the_folder_absolute(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    data = tomllib.loads(dump_config(config, relative_to=tmp_path / "other"))
    assert data["tls"]["cert"] == str(tmp_path / "keys" / "p 0.pem")


def test_dump_is_readable_toml_with_defaults_spelled_out() -> None:
    text = dump_config(party_config())
    data = tomllib.loads(text)
    assert data["timeout_ms"] == 30000
    assert data["parties"][1] == {"id": 1, "address": "127.0.0.1:9001", "fingerprint": fp(101)}
    assert "source" not in data


@pytest.mark.parametrize("value", [None, {1, 2}, b"bytes", datetime.time(1, 2, tzinfo=datetime.UTC)])
def test_dump_refuses_options_toml_cannot_hold(value: Any) -> None:
    config = party_config(transport_options={"quic": {"bad": value}})
    with pytest.raises(errors.ConfigError) as caught:
        dump_config(config)
    assert caught.value.key == "transport_options.quic.bad"


@given(
    st.dictionaries(
        st.text(min_size=1),
        st.one_of(st.text(), st.integers(-(2**63), 2**63 - 1), st.booleans(), st.lists(st.text(), max_size=3)),
        max_size=4,
    )
)
def test_any_text_option_round_trips(options: dict[str, Any]) -> None:
    config = party_config(transport_options={"quic": options})
    assert config_from_mapping(tomllib.loads(dump_config(config))) == config
