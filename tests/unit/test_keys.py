"""Keys: make, write, load and check an identity; every bad file is a ConfigError naming it; SPKI fingerprints."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from stoffelnet_core import errors, keys

NOW = datetime.datetime.now(datetime.UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def spki_fingerprint(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def certificate(
    key: ec.EllipticCurvePrivateKey, *, not_before: datetime.datetime, not_after: datetime.datetime
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )


def write_pair(directory: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    identity = keys.Identity(cert, key)
    cert_path, key_path = directory / "m.pem", directory / "m.key"
    keys.write_identity(identity, cert_path, key_path, force=True)
    return cert_path, key_path


@pytest.fixture
def pair(tmp_path: Path) -> tuple[keys.Identity, Path, Path]:
    identity = keys.generate_identity("party0")
    cert_path, key_path = tmp_path / "party0.pem", tmp_path / "party0.key"
    keys.write_identity(identity, cert_path, key_path)
    return identity, cert_path, key_path


def test_generate_write_load_round_trip(pair: tuple[keys.Identity, Path, Path]) -> None:
    identity, cert_path, key_path = pair
    loaded = keys.load_identity(cert_path, key_path)
    assert loaded.certificate == identity.certificate
    assert loaded.key.private_numbers() == identity.key.private_numbers()
    assert loaded.fingerprint == identity.fingerprint
    assert keys.load_certificate(cert_path) == identity.certificate
    assert isinstance(identity.key.curve, ec.SECP256R1)
    assert identity.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "party0"
    now = datetime.datetime.now(datetime.UTC)  # not NOW: the suite may reach this test minutes after importing it
    assert identity.certificate.not_valid_before_utc <= now < identity.certificate.not_valid_after_utc


def test_key_is_written_mode_0600(pair: tuple[keys.Identity, Path, Path]) -> None:
    _, cert_path, key_path = pair
    assert mode(key_path) == 0o600
    assert not mode(cert_path) & 0o022  # the certificate is public, but never writable by others


def test_fingerprint_is_sha256_of_the_spki_der(pair: tuple[keys.Identity, Path, Path]) -> None:
    identity, _, _ = pair
    expected = spki_fingerprint(identity.certificate)
    assert keys.fingerprint(identity.certificate) == expected
    assert keys.fingerprint(identity.certificate.public_bytes(serialization.Encoding.DER)) == expected
    assert identity.fingerprint == expected
    assert keys.fingerprint(keys.generate_identity("party0").certificate) != expected  # a fresh key each time


def test_fingerprint_of_a_foreign_certificate() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = certificate(key, not_before=NOW, not_after=NOW + datetime.timedelta(days=1))
    assert keys.fingerprint(cert) == spki_fingerprint(cert)


def test_write_refuses_to_overwrite_without_force(pair: tuple[keys.Identity, Path, Path]) -> None:
    identity, cert_path, key_path = pair
    before = key_path.read_bytes(), cert_path.read_bytes()
    with pytest.raises(errors.ConfigError, match="already exists") as caught:
        keys.write_identity(keys.generate_identity("other"), cert_path, key_path)
    assert str(key_path) in str(caught.value)
    assert (key_path.read_bytes(), cert_path.read_bytes()) == before
    key_path.unlink()  # the certificate alone is enough to refuse
    with pytest.raises(errors.ConfigError, match=re.escape(str(cert_path))):
        keys.write_identity(identity, cert_path, key_path)
    assert not key_path.exists()


def test_write_with_force_replaces_and_keeps_the_key_private(pair: tuple[keys.Identity, Path, Path]) -> None:
    _, cert_path, key_path = pair
    os.chmod(key_path, 0o644)
    other = keys.generate_identity("other")
    keys.write_identity(other, cert_path, key_path, force=True)
    assert mode(key_path) == 0o600
    assert keys.load_identity(cert_path, key_path).fingerprint == other.fingerprint


def test_missing_files_are_named(pair: tuple[keys.Identity, Path, Path], tmp_path: Path) -> None:
    _, cert_path, key_path = pair
    missing = tmp_path / "nope.pem"
    with pytest.raises(errors.ConfigError, match="does not exist") as caught:
        keys.load_identity(missing, key_path)
    assert str(missing) in str(caught.value)
    assert caught.value.key == "tls.cert"
    with pytest.raises(errors.ConfigError, match="does not exist") as caught:
        keys.load_identity(cert_path, tmp_path / "nope.key")
    assert str(tmp_path / "nope.key") in str(caught.value)
    assert caught.value.key == "tls.key"
    with pytest.raises(errors.ConfigError, match="does not exist"):
        keys.load_certificate(missing, key="parties[1].cert")


def test_a_folder_is_not_a_certificate(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="cannot read certificate file") as caught:
        keys.load_certificate(tmp_path)
    assert str(tmp_path) in str(caught.value)


def test_files_that_are_not_pem_are_named(pair: tuple[keys.Identity, Path, Path], tmp_path: Path) -> None:
    _, cert_path, key_path = pair
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not a PEM file\n")
    with pytest.raises(errors.ConfigError, match="is not a PEM certificate") as caught:
        keys.load_identity(garbage, key_path)
    assert str(garbage) in str(caught.value)
    with pytest.raises(errors.ConfigError, match="is not an unencrypted PEM private key") as caught:
        keys.load_identity(cert_path, garbage)
    assert str(garbage) in str(caught.value)
    assert caught.value.key == "tls.key"
    with pytest.raises(errors.ConfigError, match="is not a PEM certificate"):  # a key where the cert belongs
        keys.load_identity(key_path, key_path)


def test_an_encrypted_key_is_refused(pair: tuple[keys.Identity, Path, Path]) -> None:
    identity, cert_path, key_path = pair
    key_path.write_bytes(
        identity.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(errors.ConfigError, match="unencrypted") as caught:
        keys.load_identity(cert_path, key_path)
    assert str(key_path) in str(caught.value)


def test_a_key_that_does_not_match_the_certificate(pair: tuple[keys.Identity, Path, Path], tmp_path: Path) -> None:
    _, cert_path, _ = pair
    other = keys.generate_identity("other")
    other_key = tmp_path / "other.key"
    keys.write_identity(other, tmp_path / "other.pem", other_key)
    with pytest.raises(errors.ConfigError, match="does not match") as caught:
        keys.load_identity(cert_path, other_key)
    assert str(other_key) in str(caught.value)
    assert str(cert_path) in str(caught.value)


def test_a_key_of_another_kind_is_refused(pair: tuple[keys.Identity, Path, Path]) -> None:
    _, cert_path, key_path = pair
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    key_path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(errors.ConfigError, match="ECDSA") as caught:
        keys.load_identity(cert_path, key_path)
    assert str(key_path) in str(caught.value)


def test_an_expired_certificate_is_named(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate(key, not_before=NOW - datetime.timedelta(days=10), not_after=NOW - datetime.timedelta(days=1))
    cert_path, key_path = write_pair(tmp_path, cert, key)
    with pytest.raises(errors.ConfigError, match="expired on") as caught:
        keys.load_identity(cert_path, key_path)
    assert str(cert_path) in str(caught.value)
    assert caught.value.key == "tls.cert"
    # Pinned peers' certificates are read without the validity check (the pin, not the dates, protects).
    assert keys.load_certificate(cert_path, check_validity=False) == cert


def test_a_certificate_not_yet_valid_is_named(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate(key, not_before=NOW + datetime.timedelta(days=1), not_after=NOW + datetime.timedelta(days=10))
    cert_path, key_path = write_pair(tmp_path, cert, key)
    with pytest.raises(errors.ConfigError, match="not valid before") as caught:
        keys.load_identity(cert_path, key_path)
    assert str(cert_path) in str(caught.value)
    assert keys.load_certificate(cert_path, now=NOW + datetime.timedelta(days=2)) == cert


def test_generated_certificates_tolerate_a_slow_clock(pair: tuple[keys.Identity, Path, Path]) -> None:
    _, cert_path, _ = pair
    keys.load_certificate(cert_path, now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=2))
