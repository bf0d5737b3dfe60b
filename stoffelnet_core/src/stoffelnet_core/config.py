"""The configuration of one party or client: frozen attrs classes, a TOML loader and a TOML writer.

Every rule is checked when a `Config` is built, whether from code or from a file, and every failure is a
`errors.ConfigError` whose message names the key path (``parties[1].address``) and the bad value. The loader
adds what only a file has: unknown keys, TOML types, paths relative to the file, certificate files that must
exist. Whether the named transport is installed is the plugin manager's business, not this module's.
"""

from __future__ import annotations

import datetime
import difflib
import math
import os
import re
import tomllib
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs

from . import errors, keys
from .ids import Address, ClientId, ClientType, Node, PartyId, parse_address

__all__ = [
    "EVENT_LOOPS",
    "FINGERPRINT_PATTERN",
    "TRANSPORT_NAME_PATTERN",
    "ClientsConfig",
    "Config",
    "TLSConfig",
    "config_from_mapping",
    "dump_config",
    "load_config",
]

TRANSPORT_NAME_PATTERN = r"[a-z0-9][a-z0-9._-]*"
"""What a transport name looks like (`Config.transport`, a plugin's `Transport.name`): pip-friendly."""

FINGERPRINT_PATTERN = r"sha256:[0-9a-f]{64}"
"""A key pin: SHA-256 of the SubjectPublicKeyInfo, lowercase hex so that equal keys are equal strings."""

_TRANSPORT_NAME = re.compile(TRANSPORT_NAME_PATTERN)
_NAME_RULE = "must be lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
_FINGERPRINT = re.compile(FINGERPRINT_PATTERN)
_MAX_FRAME_SIZE = 2**32 - 1  # the frame header is a 4-byte length
_MIN_BUFFER = 1024  # smaller only makes every frame wait; almost surely a unit slip (KiB for bytes)
EVENT_LOOPS = ("asyncio", "uvloop")  # `event_loop` choices: uvloop only where a transport is not slower on it


def _show(value: Any) -> str:
    """A value as messages show it: its repr, cut short, with the type when the repr hides it."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    if isinstance(value, bool):
        return f"{text} (a boolean)"
    return text


def _fail(key: str, problem: str, value: Any) -> errors.ConfigError:
    return errors.ConfigError(f"{key} {problem}, got {_show(value)}", key=key, value=value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # bool is an int subclass, not a count


def _check_int(key: str, value: Any, *, minimum: int, maximum: int | None = None, unit: str = "") -> None:
    what = f"an integer{unit}" if maximum is None else f"an integer{unit} in {minimum}..{maximum}"
    if not _is_int(value):
        raise _fail(key, f"must be {what}", value)
    if value < minimum or (maximum is not None and value > maximum):
        if maximum is None and minimum == 1:
            what = f"a positive integer{unit}"
        elif maximum is None:
            what = f"an integer{unit} >= {minimum}"
        raise _fail(key, f"must be {what}", value)


def _check_fingerprint(key: str, value: Any) -> None:
    if not isinstance(value, str) or not _FINGERPRINT.fullmatch(value):
        hint = " (lowercase hex)" if isinstance(value, str) and _FINGERPRINT.fullmatch(value.lower()) else ""
        raise _fail(key, f"must be 'sha256:' followed by 64 hex digits{hint}", value)


def _check_transport_name(key: str, value: Any) -> None:
    if not isinstance(value, str) or not _TRANSPORT_NAME.fullmatch(value):
        raise _fail(key, _NAME_RULE, value)


# -- converters: accept what code naturally passes, refuse the rest with a ConfigError -----------------------
def _to_path(key: str, value: object) -> Path:
    if isinstance(value, Path):
        path = value
    elif isinstance(value, str | os.PathLike):
        path = Path(value)
    else:
        raise _fail(key, "must be a file path", value)
    if not str(value):
        raise _fail(key, "must not be empty", value)
    return path


def _cert_path(value: str | os.PathLike[str]) -> Path:
    return _to_path("tls.cert", value)


def _key_path(value: str | os.PathLike[str]) -> Path:
    return _to_path("tls.key", value)


def _to_tuple(key: str, value: object) -> tuple[Any, ...]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise _fail(key, "must be a list", value)
    return tuple(value)


def _paths_tuple(value: Iterable[str | os.PathLike[str]]) -> tuple[Path, ...]:
    return tuple(Path(p) for p in value)


def _allow_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return _to_tuple("clients.allow", value)


def _parties_tuple(value: Iterable[Node]) -> tuple[Node, ...]:
    return _to_tuple("parties", value)


def _freeze(key: str, value: Any) -> Any:
    """A deep read-only copy: tables become read-only mappings, arrays become tuples."""
    if isinstance(value, Mapping):
        for name in value:
            if not isinstance(name, str):
                raise _fail(f"{key}.{name!r}", "must have a string key", name)
        return MappingProxyType({name: _freeze(f"{key}.{name}", item) for name, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(f"{key}[{index}]", item) for index, item in enumerate(value))
    return value


def _freeze_options(value: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    return _options(value)


def _options(value: object) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(value, Mapping):
        raise _fail("transport_options", "must be a table of tables (one per transport name)", value)
    for name, table in value.items():
        if not isinstance(name, str) or not _TRANSPORT_NAME.fullmatch(name):
            raise _fail(
                f"transport_options.{name}",
                f"must be named by a transport name (which {_NAME_RULE})",
                name,
            )
        if not isinstance(table, Mapping):
            raise _fail(f"transport_options.{name}", "must be a table", table)
    frozen: Mapping[str, Mapping[str, Any]] = _freeze("transport_options", value)
    return frozen


# -- the configuration classes -------------------------------------------------------------------------------
@attrs.frozen
class TLSConfig:
    """Our certificate and private key (PEM files). Relative paths in a file are relative to that file."""

    cert: Path = attrs.field(converter=_cert_path)
    key: Path = attrs.field(converter=_key_path)


@attrs.frozen
class ClientsConfig:
    """Clients a party admits, by key pin. A client's `ClientId` is its index in `allow`: keep the order."""

    allow: tuple[str, ...] = attrs.field(default=(), converter=_allow_tuple)
    certs: tuple[Path, ...] = attrs.field(default=(), converter=_paths_tuple)
    """The clients' certificate files, in the order of `allow` (transports that verify in TLS trust exactly these)."""

    def __attrs_post_init__(self) -> None:
        seen: dict[str, int] = {}
        for index, fingerprint in enumerate(self.allow):
            key = f"clients.allow[{index}]"
            _check_fingerprint(key, fingerprint)
            if fingerprint in seen:
                raise errors.ConfigError(
                    f"duplicate fingerprint in {key} (same as clients.allow[{seen[fingerprint]}]): {fingerprint!r}",
                    key=key,
                    value=fingerprint,
                )
            seen[fingerprint] = index

    def client_id_for(self, fingerprint: str) -> ClientId | None:
        """The id of the client pinned by `fingerprint`, or None when it is not allowed."""
        try:
            return ClientId(self.allow.index(fingerprint))
        except ValueError:
            return None


@attrs.frozen(kw_only=True)
class Config:
    """Everything one party (``party_id``) or one client (``client_id``) needs to join a network.

    Built from keywords in code or by `load_config`; invalid values raise `errors.ConfigError` naming the key.
    """

    transport: str = "quic"
    party_id: int | None = None
    client_id: int | None = None
    timeout_ms: int = 30000
    max_retries: int = 12
    max_frame_size: int = 104857600  # the seed's 100 MiB; see codec.DEFAULT_MAX_FRAME_SIZE
    send_buffer_bytes: int = 4194304
    receive_window_bytes: int = 1048576
    keepalive_ms: int = 5000  # a Ping after this much quiet; a peer silent for 3x this is lost (0: off)
    resume_ms: int = 30000  # how long a lost peer may take to come back and resume (0: a loss is final at once)
    resend_buffer_bytes: int = 8388608  # per peer: sent and not yet acknowledged; `send` waits when it is full
    event_loop: str = "asyncio"  # or "uvloop" (stoffelnet-core[uvloop]), for the processes `stoffelnet` starts
    tls: TLSConfig | None = None
    parties: tuple[Node, ...] = attrs.field(default=(), converter=_parties_tuple)
    clients: ClientsConfig = attrs.field(factory=ClientsConfig)
    # Free-form per transport; read-only, and left out of the hash because read-only mappings are unhashable.
    transport_options: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, converter=_freeze_options, hash=False
    )
    source: Path | None = attrs.field(default=None, eq=False)  # the file it was loaded from, for messages

    def __attrs_post_init__(self) -> None:
        _check_transport_name("transport", self.transport)
        _check_int("timeout_ms", self.timeout_ms, minimum=1, unit=" (milliseconds)")
        _check_int("max_retries", self.max_retries, minimum=0)
        _check_int("max_frame_size", self.max_frame_size, minimum=1, maximum=_MAX_FRAME_SIZE, unit=" (bytes)")
        _check_int("send_buffer_bytes", self.send_buffer_bytes, minimum=_MIN_BUFFER)
        _check_int("receive_window_bytes", self.receive_window_bytes, minimum=_MIN_BUFFER)
        _check_int("keepalive_ms", self.keepalive_ms, minimum=0, unit=" (milliseconds)")
        _check_int("resume_ms", self.resume_ms, minimum=0, unit=" (milliseconds)")
        _check_int("resend_buffer_bytes", self.resend_buffer_bytes, minimum=_MIN_BUFFER)
        if self.event_loop not in EVENT_LOOPS:
            raise _fail("event_loop", f"must be one of {', '.join(map(repr, EVENT_LOOPS))}", self.event_loop)
        if self.tls is not None and not isinstance(self.tls, TLSConfig):
            raise _fail("tls", "must be a TLSConfig", self.tls)
        if not isinstance(self.clients, ClientsConfig):
            raise _fail("clients", "must be a ClientsConfig", self.clients)
        self._check_parties()
        self._check_role()
        party_keys = {node.fingerprint: node.id for node in self.parties if node.fingerprint is not None}
        for index, fingerprint in enumerate(self.clients.allow):
            if fingerprint in party_keys:
                key = f"clients.allow[{index}]"
                raise errors.ConfigError(
                    f"{key} is party {party_keys[fingerprint]}'s fingerprint; a party can never be admitted "
                    f"as a client: {fingerprint!r}",
                    key=key,
                    value=fingerprint,
                )

    def _check_parties(self) -> None:
        first_index: dict[int, int] = {}
        first_key: dict[str, int] = {}
        for index, node in enumerate(self.parties):
            where = f"parties[{index}]"
            if not isinstance(node, Node):
                raise _fail(where, "must be an ids.Node", node)
            _check_int(f"{where}.id", node.id, minimum=0)
            if node.id in first_index:
                key = f"{where}.id"
                raise errors.ConfigError(
                    f"duplicate party id {node.id} in {key} (first in parties[{first_index[node.id]}].id)",
                    key=key,
                    value=node.id,
                )
            first_index[node.id] = index
            for field in ("address", "listen"):
                address = getattr(node, field)
                if address is None:
                    continue
                key = f"{where}.{field}"
                if not isinstance(address, Address):
                    raise _fail(key, "must be an ids.Address (ids.parse_address reads 'host:port')", address)
                if not isinstance(address.host, str) or not address.host:
                    raise _fail(key, "must have a host", address)
                if not _is_int(address.port) or not 0 <= address.port <= 65535:
                    raise _fail(key, "must have a port in 0..65535", address)
            if node.fingerprint is not None:
                key = f"{where}.fingerprint"
                _check_fingerprint(key, node.fingerprint)
                if node.fingerprint in first_key:
                    raise errors.ConfigError(
                        f"duplicate fingerprint in {key} (same as parties[{first_key[node.fingerprint]}]"
                        f".fingerprint): {node.fingerprint!r}",
                        key=key,
                        value=node.fingerprint,
                    )
                first_key[node.fingerprint] = index
        count = len(self.parties)
        for index, node in enumerate(self.parties):
            if node.id >= count:
                key = f"parties[{index}].id"
                missing = sorted(set(range(count)) - first_index.keys())
                raise errors.ConfigError(
                    f"party ids must be 0..{count - 1} for {count} parties, got {node.id} in {key} "
                    f"(missing: {', '.join(map(str, missing))})",
                    key=key,
                    value=node.id,
                )

    def _check_role(self) -> None:
        if (self.party_id is None) == (self.client_id is None):
            both = "neither is set" if self.party_id is None else "both are set"
            raise errors.ConfigError(
                f"set exactly one of party_id (for a party) or client_id (for a client); {both}",
                key="party_id",
                value=self.party_id,
            )
        if self.party_id is not None:
            _check_int("party_id", self.party_id, minimum=0)
            if not self.parties:
                raise _fail("parties", "must list the parties (ids 0..n-1), this one included", self.parties)
            if self.party_id >= len(self.parties):
                raise errors.ConfigError(
                    f"party_id {self.party_id} is not one of the parties' ids (0..{len(self.parties) - 1})",
                    key="party_id",
                    value=self.party_id,
                )
        else:
            _check_int("client_id", self.client_id, minimum=0)
            if not self.parties:
                raise _fail("parties", "must list the parties a client connects to", self.parties)

    @property
    def role(self) -> ClientType:
        """SERVER for a party's config, CLIENT for a client's."""
        return ClientType.SERVER if self.party_id is not None else ClientType.CLIENT

    @property
    def party_ids(self) -> tuple[PartyId, ...]:
        """Every party's id, ascending (always ``0..n-1``)."""
        return tuple(PartyId(index) for index in range(len(self.parties)))

    @property
    def party_count(self) -> int:
        """How many parties the network has."""
        return len(self.parties)

    @property
    def timeout(self) -> float:
        """`timeout_ms` in seconds, as asyncio wants it."""
        return self.timeout_ms / 1000

    def node(self, party_id: int) -> Node:
        """The configured node of `party_id`; raises `errors.PartyNotFound` for an id outside ``0..n-1``."""
        for node in self.parties:
            if node.id == party_id and _is_int(party_id):
                return node
        raise errors.PartyNotFound(
            party_id, f"party {party_id!r} is not in the config (ids 0..{len(self.parties) - 1})"
        )


# -- loading -------------------------------------------------------------------------------------------------
_TOP_KEYS = (
    "transport",
    "party_id",
    "client_id",
    "timeout_ms",
    "max_retries",
    "max_frame_size",
    "send_buffer_bytes",
    "receive_window_bytes",
    "keepalive_ms",
    "resume_ms",
    "resend_buffer_bytes",
    "event_loop",
    "tls",
    "parties",
    "clients",
    "transport_options",
)
_SCALAR_KEYS = _TOP_KEYS[: _TOP_KEYS.index("tls")]  # passed to Config as they are; its checks name them
_LIMIT_KEYS = _TOP_KEYS[3 : _TOP_KEYS.index("event_loop")]  # the integers every dump writes, defaults included
_TLS_KEYS = ("cert", "key")
_PARTY_KEYS = ("id", "address", "listen", "fingerprint", "cert")
_CLIENTS_KEYS = ("allow", "certs")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _check_keys(table: Mapping[str, Any], known: Collection[str], where: str) -> None:
    for key in table:
        if key in known:
            continue
        path = _join(where, str(key))
        close = difflib.get_close_matches(str(key), list(known), n=1)
        if where and key in _TOP_KEYS:  # TOML puts every key after a [table] header into that table
            hint = f"{key!r} is a top-level key: write it before the first [table] header"
        elif close:
            hint = f"did you mean {_join(where, close[0])!r}?"
        else:
            hint = f"known keys: {', '.join(known)}"
        raise errors.ConfigError(f"unknown key {path!r} ({hint})", key=path, value=table[key])


def _table(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(key, "must be a table", value)
    return value


def _string(table: Mapping[str, Any], key: str, where: str) -> str | None:
    if key not in table:
        return None
    return _required_string(table, key, where)


def _required_string(table: Mapping[str, Any], key: str, where: str) -> str:
    path = _join(where, key)
    if key not in table:
        raise errors.ConfigError(f"{path} is missing", key=path)
    value = table[key]
    if not isinstance(value, str):
        raise _fail(path, "must be a string", value)
    return value


def _address(table: Mapping[str, Any], key: str, where: str) -> Address | None:
    text = _string(table, key, where)
    if text is None:
        return None
    try:
        return parse_address(text)
    except ValueError as exc:
        path = _join(where, key)
        raise errors.ConfigError(f"{path} is not a valid address: {exc}", key=path, value=text) from None


def _file(table: Mapping[str, Any], key: str, base_dir: Path | None, where: str = "tls") -> Path:
    path_key = f"{where}.{key}"
    text = _required_string(table, key, where)
    if not text:
        raise _fail(path_key, "must not be empty", text)
    path = Path(text).expanduser()
    if base_dir is None:
        return path
    path = base_dir / path  # an absolute `path` stays as it is
    if not path.is_file():
        problem = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise errors.ConfigError(f"{path_key} file {str(path)!r} {problem}", key=path_key, value=str(path))
    return path


def _cert_fingerprint(path: Path, key: str, pinned: str | None, base_dir: Path | None) -> str | None:
    """The fingerprint a certificate file pins; it must agree with a fingerprint given beside it."""
    if base_dir is None:
        return pinned
    found = keys.fingerprint(keys.load_certificate(path, key=key, check_validity=False))
    if pinned is not None and pinned != found:
        raise errors.ConfigError(
            f"{key} {str(path)!r} holds key {found}, but the fingerprint beside it pins {pinned}", key=key, value=pinned
        )
    return found


def _party(value: Any, index: int, base_dir: Path | None = None) -> Node:
    where = f"parties[{index}]"
    table = _table(value, where)
    _check_keys(table, _PARTY_KEYS, where)
    if "id" not in table:
        raise errors.ConfigError(f"{where}.id is missing", key=f"{where}.id")
    party_id = table["id"]
    _check_int(f"{where}.id", party_id, minimum=0)
    fingerprint = _string(table, "fingerprint", where)
    cert = None
    if "cert" in table:
        cert = _file(table, "cert", base_dir, where)
        if fingerprint is not None:
            _check_fingerprint(f"{where}.fingerprint", fingerprint)
        fingerprint = _cert_fingerprint(cert, f"{where}.cert", fingerprint, base_dir)
    return Node(
        id=PartyId(party_id),
        address=_address(table, "address", where),
        listen=_address(table, "listen", where),
        fingerprint=fingerprint,
        cert=cert,
    )


def config_from_mapping(data: Mapping[str, Any], *, base_dir: Path | None = None) -> Config:
    """Build a `Config` from parsed TOML (or any mapping of the same shape).

    With `base_dir` (what `load_config` passes: the file's folder), relative certificate paths are resolved
    against it and the files must exist. Raises `errors.ConfigError` naming the first bad key.
    """
    table = _table(data, "config")
    _check_keys(table, _TOP_KEYS, "")
    values: dict[str, Any] = {key: table[key] for key in _SCALAR_KEYS if key in table}
    if "tls" in table:
        tls = _table(table["tls"], "tls")
        _check_keys(tls, _TLS_KEYS, "tls")
        values["tls"] = TLSConfig(cert=_file(tls, "cert", base_dir), key=_file(tls, "key", base_dir))
    if "parties" in table:
        parties = table["parties"]
        if not isinstance(parties, list | tuple):
            raise _fail("parties", "must be an array of tables ([[parties]])", parties)
        values["parties"] = tuple(_party(item, index, base_dir) for index, item in enumerate(parties))
    if "clients" in table:
        clients = _table(table["clients"], "clients")
        _check_keys(clients, _CLIENTS_KEYS, "clients")
        allow: tuple[Any, ...] = ()
        if "allow" in clients:
            if not isinstance(clients["allow"], list | tuple):
                raise _fail("clients.allow", "must be an array of fingerprints", clients["allow"])
            allow = tuple(clients["allow"])
        certs: tuple[Path, ...] = ()
        if "certs" in clients:
            raw = clients["certs"]
            if not isinstance(raw, list | tuple):
                raise _fail("clients.certs", "must be an array of certificate files", raw)
            certs = tuple(_file({"x": item}, "x", base_dir, f"clients.certs[{i}]") for i, item in enumerate(raw))
            if base_dir is not None:
                found = tuple(
                    _cert_fingerprint(p, f"clients.certs[{i}]", None, base_dir) or "" for i, p in enumerate(certs)
                )
                if allow and tuple(allow) != found:
                    raise errors.ConfigError(
                        "clients.allow and clients.certs must pin the same keys in the same order (a client's id is "
                        "its position)",
                        key="clients.allow",
                    )
                allow = found
        values["clients"] = ClientsConfig(allow=allow, certs=certs)
    if "transport_options" in table:
        values["transport_options"] = table["transport_options"]
    return Config(**values)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read a TOML config file; relative paths in it are relative to its folder.

    Raises `errors.ConfigError` (message prefixed with the file's path) when the file is missing, unreadable,
    not TOML, or holds a bad key.
    """
    file = Path(path).expanduser()
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise errors.ConfigError(f"cannot read config file {str(file)!r}: {reason}", value=str(file)) from exc
    except UnicodeDecodeError as exc:
        raise errors.ConfigError(f"config file {str(file)!r} is not UTF-8: {exc}", value=str(file)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = f"config file {str(file)!r} is not valid TOML: {exc}"
        raise errors.ConfigError(message, value=str(file)) from None
    try:
        config = config_from_mapping(data, base_dir=file.absolute().parent)
    except errors.ConfigError as exc:
        raise errors.ConfigError(f"{file}: {exc}", key=exc.key, value=exc.value) from None
    return attrs.evolve(config, source=file)


# -- writing -------------------------------------------------------------------------------------------------
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_value(value: Any, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # always has a '.' or an exponent, as TOML wants
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, datetime.time) and value.tzinfo is not None:
        raise _fail(key, "cannot be written as TOML (a time of day with a time zone)", value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v, f'{key}.{k}')}" for k, v in value.items())
        return f"{{ {items} }}" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item, f"{key}[{i}]") for i, item in enumerate(value)) + "]"
    raise _fail(key, "cannot be written as TOML", value)


def _toml_path(path: Path, relative_to: Path | None) -> str:
    if relative_to is not None and path.is_absolute():
        try:
            return _toml_string(path.relative_to(relative_to).as_posix())
        except ValueError:
            pass
    return _toml_string(str(path))


def dump_config(config: Config, *, relative_to: str | os.PathLike[str] | None = None) -> str:
    """TOML text that `load_config` reads back to an equal `Config`.

    With `relative_to` (the folder the file will live in), certificate paths under it are written relative to
    it, so the folder can move as a whole. Raises `errors.ConfigError` for an option TOML cannot hold.
    """
    base = Path(relative_to).absolute() if relative_to is not None else None
    lines = [f"transport = {_toml_string(config.transport)}"]
    if config.party_id is not None:
        lines.append(f"party_id = {config.party_id}")
    if config.client_id is not None:
        lines.append(f"client_id = {config.client_id}")
    for key in _LIMIT_KEYS:
        lines.append(f"{key} = {getattr(config, key)}")
    if config.event_loop != "asyncio":
        lines.append(f"event_loop = {_toml_string(config.event_loop)}")
    if config.tls is not None:
        lines += ["", "[tls]"]
        lines.append(f"cert = {_toml_path(config.tls.cert, base)}")
        lines.append(f"key = {_toml_path(config.tls.key, base)}")
    for node in config.parties:
        lines += ["", "[[parties]]", f"id = {node.id}"]
        for field in ("address", "listen"):
            address = getattr(node, field)
            if address is not None:
                lines.append(f"{field} = {_toml_string(str(address))}")
        if node.fingerprint is not None:
            lines.append(f"fingerprint = {_toml_string(node.fingerprint)}")
        if node.cert is not None:
            lines.append(f"cert = {_toml_path(node.cert, base)}")
    if config.clients.allow:
        lines += ["", "[clients]", "allow = ["]
        lines += [f"    {_toml_string(fingerprint)}," for fingerprint in config.clients.allow]
        lines.append("]")
        if config.clients.certs:
            lines.append("certs = [")
            lines += [f"    {_toml_path(path, base)}," for path in config.clients.certs]
            lines.append("]")
    for name, options in config.transport_options.items():
        lines += ["", f"[transport_options.{_toml_key(name)}]"]
        for key, value in options.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value, f'transport_options.{name}.{key}')}")
    return "\n".join(lines) + "\n"
