"""From nothing to a deployment: one folder with every member's key, certificate and ready-to-run config.

`make_deployment` writes, for parties ``0..n-1`` and clients ``0..m-1``::

    party0.key  party0.pem  party0.toml   ...   client0.key  client0.pem  client0.toml   ...

Each party's config pins every party (fingerprint and certificate file) and allowlists every client in order (a
client's id is its position); each client's config pins every party. Paths inside the configs are relative to the
folder, so the folder can be moved or copied as a whole. Keys are mode 0600. Nothing is overwritten without
``force``, and the check comes first: either every file is written or none is.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from . import errors, keys
from .config import TRANSPORT_NAME_PATTERN, ClientsConfig, Config, TLSConfig, dump_config
from .ids import Address, ClientType, Node, PartyId

__all__ = ["Deployment", "Member", "make_deployment"]

_TRANSPORT_NAME = re.compile(TRANSPORT_NAME_PATTERN)
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_MAX_PORT = 65535
_KEY_MODE = 0o600
_PUBLIC_MODE = 0o644  # certificates and configs hold nothing secret


@attrs.frozen(kw_only=True)
class Member:
    """One party or client of a deployment and the files written for it (absolute paths)."""

    name: str  # "party0", "client1": the stem of its files
    role: ClientType  # SERVER for a party, CLIENT for a client
    id: int  # the party id or client id
    config: Path
    cert: Path
    key: Path
    fingerprint: str  # "sha256:<hex>" of its SubjectPublicKeyInfo, as every config pins it
    address: Address | None = None  # a party's: where the others reach it
    listen: Address | None = None  # a party's: where it binds, when that differs from `address`


@attrs.frozen(kw_only=True)
class Deployment:
    """What `make_deployment` wrote into `out`."""

    out: Path  # absolute
    transport: str
    parties: tuple[Member, ...]  # by party id
    clients: tuple[Member, ...]  # by client id
    settings: Mapping[str, Any] = attrs.field(factory=dict)  # more top-level config keys for every member

    @property
    def members(self) -> tuple[Member, ...]:
        """Parties then clients."""
        return self.parties + self.clients

    @property
    def party_configs(self) -> tuple[Path, ...]:
        return tuple(member.config for member in self.parties)

    @property
    def client_configs(self) -> tuple[Path, ...]:
        return tuple(member.config for member in self.clients)

    @property
    def party_fingerprints(self) -> tuple[str, ...]:
        return tuple(member.fingerprint for member in self.parties)

    @property
    def client_fingerprints(self) -> tuple[str, ...]:
        """In client id order, as every party's ``clients.allow`` lists them."""
        return tuple(member.fingerprint for member in self.clients)

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file written: each member's key, certificate and config."""
        return tuple(path for member in self.members for path in (member.key, member.cert, member.config))

    def configs(self) -> tuple[Config, ...]:
        """Every member's `Config` (parties then clients), as written; `load_config` of each file equals it."""
        nodes = tuple(
            Node(PartyId(party.id), party.address, party.listen, party.fingerprint, party.cert)
            for party in self.parties
        )
        allowed = ClientsConfig(allow=self.client_fingerprints, certs=tuple(client.cert for client in self.clients))
        party_configs = tuple(
            Config(
                transport=self.transport,
                party_id=party.id,
                tls=TLSConfig(party.cert, party.key),
                parties=nodes,
                clients=allowed,
                **self.settings,
            )
            for party in self.parties
        )
        client_configs = tuple(
            Config(
                transport=self.transport,
                client_id=client.id,
                tls=TLSConfig(client.cert, client.key),
                parties=nodes,
                **self.settings,
            )
            for client in self.clients
        )
        return party_configs + client_configs


def make_deployment(
    out: str | os.PathLike[str],
    *,
    parties: int,
    clients: int = 0,
    transport: str = "quic",
    base_port: int = 9000,
    hosts: Sequence[str] | None = None,
    force: bool = False,
    settings: Mapping[str, Any] | None = None,
) -> Deployment:
    """Write keys, certificates and one config per party and per client into the folder `out` (made if missing).

    Party ``i`` is reached at ``hosts[i]:base_port+i`` (`hosts` default to 127.0.0.1 for every party). A party whose
    host is not a loopback address binds all interfaces (``0.0.0.0``, or ``::`` for an IPv6 host) on its port.

    Raises `errors.ConfigError` naming the argument (its `key`) for a bad argument, and naming the files (key
    ``"force"``) when any of them already exists and `force` is false; in both cases nothing is written. With
    `force`, existing files are replaced, each atomically. Files of an earlier, larger deployment that this one
    does not name are left alone. A failure while writing removes the files this call created.
    `settings` are more top-level config keys written into every member's config (e.g. ``resume_ms``).
    """
    _check_count("parties", parties, minimum=1)
    _check_count("clients", clients, minimum=0)
    if not isinstance(transport, str) or not _TRANSPORT_NAME.fullmatch(transport):
        raise errors.ConfigError(
            f"transport must be a transport name (lowercase letters, digits, '.', '_' or '-'), got {transport!r}",
            key="transport",
            value=transport,
        )
    _check_ports(base_port, parties)
    host_names = _check_hosts(hosts, parties)
    folder = Path(out).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise errors.ConfigError(f"out {str(folder)!r} exists and is not a folder", key="out", value=str(folder))

    def member(role: ClientType, index: int) -> tuple[Member, keys.Identity]:
        name = f"{'party' if role is ClientType.SERVER else 'client'}{index}"
        identity = keys.generate_identity(name)
        address = listen = None
        if role is ClientType.SERVER:
            address = Address(host_names[index], base_port + index)
            listen = _listen_address(address)
        made = Member(
            name=name,
            role=role,
            id=index,
            config=folder / f"{name}.toml",
            cert=folder / f"{name}.pem",
            key=folder / f"{name}.key",
            fingerprint=identity.fingerprint,
            address=address,
            listen=listen,
        )
        return made, identity

    made = [member(ClientType.SERVER, i) for i in range(parties)] + [
        member(ClientType.CLIENT, j) for j in range(clients)
    ]
    deployment = Deployment(
        out=folder,
        transport=transport,
        parties=tuple(m for m, _ in made[:parties]),
        clients=tuple(m for m, _ in made[parties:]),
        settings=dict(settings or {}),
    )
    if not force:
        existing = [path for path in deployment.files if os.path.lexists(path)]
        if existing:
            names = ", ".join(path.name for path in existing[:6]) + (", ..." if len(existing) > 6 else "")
            raise errors.ConfigError(
                f"refusing to overwrite {len(existing)} existing file(s) in {str(folder)!r}: {names}; "
                "use --force (force=True) to replace them (nothing was written)",
                key="force",
                value=[str(path) for path in existing],
            )

    writes: list[tuple[Path, bytes, int]] = []
    for info, identity in made:
        writes.append((info.key, identity.key_pem(), _KEY_MODE))
        writes.append((info.cert, identity.certificate_pem(), _PUBLIC_MODE))
    for config, info in zip(deployment.configs(), deployment.members, strict=True):
        writes.append((info.config, dump_config(config, relative_to=folder).encode("utf-8"), _PUBLIC_MODE))
    _write_all(folder, writes)
    return deployment


# -- argument checks -----------------------------------------------------------------------------------------
def _check_count(key: str, value: object, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise errors.ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}", key=key, value=value)


def _check_ports(base_port: object, parties: int) -> None:
    if not isinstance(base_port, int) or isinstance(base_port, bool) or not 1 <= base_port <= _MAX_PORT:
        raise errors.ConfigError(
            f"base_port must be an integer in 1..{_MAX_PORT}, got {base_port!r}", key="base_port", value=base_port
        )
    last = base_port + parties - 1
    if last > _MAX_PORT:
        raise errors.ConfigError(
            f"base_port {base_port} leaves no room for {parties} parties: party {parties - 1} would get port {last} "
            f"(ports end at {_MAX_PORT}; use base_port <= {_MAX_PORT - parties + 1})",
            key="base_port",
            value=base_port,
        )


def _check_hosts(hosts: Sequence[str] | None, parties: int) -> list[str]:
    if hosts is None:
        return ["127.0.0.1"] * parties
    if isinstance(hosts, str | bytes):
        raise errors.ConfigError(f"hosts must be a list of host names, got {hosts!r}", key="hosts", value=hosts)
    hosts = list(hosts)
    if len(hosts) != parties:
        raise errors.ConfigError(
            f"hosts must name one host per party: got {len(hosts)} for {parties} parties", key="hosts", value=hosts
        )
    return [_check_host(f"hosts[{index}]", host) for index, host in enumerate(hosts)]


def _check_host(key: str, host: object) -> str:
    if not isinstance(host, str) or not host.strip():
        raise errors.ConfigError(
            f"{key} must be a non-empty host name or IP address, got {host!r}", key=key, value=host
        )
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # "[v6]" as in addresses
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if _HOSTNAME.fullmatch(text):
        return text
    problem = "a host name or IP address"
    if ":" in text and not text.startswith("["):
        problem += " without a port (party i's port is base_port + i)"
    raise errors.ConfigError(f"{key} must be {problem}, got {host!r}", key=key, value=host)


def _is_loopback(host: str) -> bool:
    lowered = host.lower().rstrip(".")
    if lowered == "localhost" or lowered.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen_address(address: Address) -> Address | None:
    """All interfaces on the party's port when others reach it from elsewhere; None (bind `address`) on loopback."""
    if _is_loopback(address.host):
        return None
    try:
        v6 = ipaddress.ip_address(address.host).version == 6
    except ValueError:
        v6 = False
    return Address("::" if v6 else "0.0.0.0", address.port)


# -- writing -------------------------------------------------------------------------------------------------
def _write_all(folder: Path, writes: Sequence[tuple[Path, bytes, int]]) -> None:
    """Write every file atomically (temporary file, then rename); on failure remove the ones this call created."""
    created: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path, data, mode in writes:
            existed = os.path.lexists(path)
            _write_atomic(path, data, mode)
            if not existed:
                created.append(path)
    except OSError as exc:
        for path in created:
            with contextlib.suppress(OSError):
                path.unlink()
        where = exc.filename or folder
        raise errors.ConfigError(
            f"cannot write {str(where)!r}: {exc.strerror or exc}", key="out", value=str(folder)
        ) from exc


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    # mkstemp creates the file with mode 0600, so a key is never readable by others, even briefly.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
