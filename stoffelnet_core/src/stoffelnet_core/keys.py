"""Keys and certificates: make them, load and check them, and name them by fingerprint.

A member's identity is its key pair: ECDSA P-256, with a self-signed X.509 certificate that carries it. Trust
never comes from a CA or a hostname. It comes from pinning: a configuration names each party's key by the
fingerprint ``sha256:<hex>`` of its SubjectPublicKeyInfo (or by its certificate file), and the transport proves
that the peer holds the matching private key.

Every failure to read or check a file raises `ConfigError` naming the file and what is wrong (missing, not PEM,
key does not match the certificate, expired or not yet valid).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import errors
from .identity import certificate_fingerprint

__all__ = [
    "Identity",
    "fingerprint",
    "generate_identity",
    "load_certificate",
    "load_identity",
    "sign_proof",
    "verify_proof",
    "write_identity",
]

DEFAULT_VALIDITY_DAYS = 3650  # pinning, not expiry, is what protects; rotate by re-pinning (docs/DEPLOYMENT.md)
_CLOCK_SKEW = datetime.timedelta(minutes=5)  # backdate notBefore so peers with slightly slow clocks accept it


def fingerprint(certificate: x509.Certificate | bytes) -> str:
    """``sha256:<hex>`` of the certificate's SubjectPublicKeyInfo; `certificate` may be DER bytes."""
    der = certificate if isinstance(certificate, bytes) else certificate.public_bytes(serialization.Encoding.DER)
    return certificate_fingerprint(der)


@attrs.frozen
class Identity:
    """A loaded and checked key pair with its certificate."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)

    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def generate_identity(name: str, *, days: int = DEFAULT_VALIDITY_DAYS) -> Identity:
    """A fresh ECDSA P-256 key and a self-signed certificate for it, usable as TLS server and client."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Identity(cert, key)


def write_identity(
    identity: Identity, cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str], *, force: bool = False
) -> None:
    """Write the certificate (mode 0644) and the key (mode 0600, never readable by others, even briefly).

    Refuses to overwrite an existing key unless `force`: losing a pinned key means re-pinning everywhere.
    """
    cert_path, key_path = Path(cert_path), Path(key_path)
    if not force:
        for path in (key_path, cert_path):
            if path.exists():
                raise errors.ConfigError(
                    f"{path} already exists; pass --force to replace it", key="out", value=str(path)
                )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(identity.key_pem())
    os.chmod(key_path, 0o600)  # O_CREAT's mode does not apply to an existing file
    cert_path.write_bytes(identity.certificate_pem())


def sign_proof(identity: Identity, message: bytes) -> tuple[bytes, bytes]:
    """Our certificate (DER) and our signature over `message`."""
    signature = identity.key.sign(message, ec.ECDSA(hashes.SHA256()))
    return identity.certificate.public_bytes(serialization.Encoding.DER), signature


def verify_proof(certificate: bytes, signature: bytes, message: bytes) -> str:
    """The fingerprint of the key that signed `message`; raises `AuthenticationError` if the proof does not hold."""
    try:
        cert = x509.load_der_x509_certificate(certificate)
        public = cert.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise errors.AuthenticationError(f"proof certificate holds a {type(public).__name__}, not an ECDSA key")
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise errors.AuthenticationError(
            "the dialer's proof signature does not verify: it does not hold the key"
        ) from None
    except ValueError as exc:
        raise errors.AuthenticationError(f"the dialer's proof carries an unreadable certificate: {exc}") from None
    return fingerprint(certificate)


def _read(path: str | os.PathLike[str], what: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise errors.ConfigError(f"{what} file {path} does not exist", key=key, value=str(path)) from None
    except OSError as exc:
        raise errors.ConfigError(f"cannot read {what} file {path}: {exc.strerror}", key=key, value=str(path)) from exc


def load_certificate(
    path: str | os.PathLike[str],
    *,
    key: str = "tls.cert",
    check_validity: bool = True,
    now: datetime.datetime | None = None,
) -> x509.Certificate:
    """Load a PEM certificate; raises `ConfigError` if missing, not a PEM certificate, expired or not yet valid."""
    data = _read(path, "certificate", key)
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise errors.ConfigError(f"{path} is not a PEM certificate: {exc}", key=key, value=str(path)) from None
    if check_validity:
        moment = now or datetime.datetime.now(datetime.UTC)
        if moment < cert.not_valid_before_utc:
            raise errors.ConfigError(
                f"certificate {path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                key=key,
                value=str(path),
            )
        if moment > cert.not_valid_after_utc:
            raise errors.ConfigError(
                f"certificate {path} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC", key=key, value=str(path)
            )
    return cert


def load_identity(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> Identity:
    """Load and check our own certificate and key: both readable, valid now, and the key matches the certificate."""
    cert = load_certificate(cert_path)
    data = _read(key_path, "key", "tls.key")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise errors.ConfigError(
            f"{key_path} is not an unencrypted PEM private key: {exc}", key="tls.key", value=str(key_path)
        ) from None
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise errors.ConfigError(
            f"{key_path} holds a {type(private).__name__}; stoffelnet keys are ECDSA (P-256)",
            key="tls.key",
            value=str(key_path),
        )
    probe = b"stoffelnet key check"
    try:
        cert_key = cert.public_key()
        assert isinstance(cert_key, ec.EllipticCurvePublicKey)
        cert_key.verify(private.sign(probe, ec.ECDSA(hashes.SHA256())), probe, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, AssertionError, TypeError, ValueError):
        raise errors.ConfigError(
            f"key {key_path} does not match certificate {cert_path}", key="tls.key", value=str(key_path)
        ) from None
    return Identity(cert, private)
