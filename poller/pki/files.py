"""Atomic, permission-correct writes and strict reads of PEM files.

Every file is written to a temporary file in the destination directory and
moved into place with os.replace, so a reader never sees half a file. The
temporary file is created 0600 (mkstemp) and only then set to the final mode:
a private key is never, even briefly, readable by anyone else.

>>> write_private(Path("/tmp/x/key.pem"), b"...")  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from poller.durable import atomic_write as atomic_write  # its home before poller.durable
from poller.pki.build import PrivateKey, load_key_pem
from poller.pki.errors import NotACertificate, PkiError

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def write_private(path: Path, data: bytes) -> None:
    """A private key: mode 0600 from the first byte."""
    atomic_write(path, data, PRIVATE_MODE)


def write_public(path: Path, data: bytes) -> None:
    """A certificate, chain, CRL or state file: mode 0644."""
    atomic_write(path, data, PUBLIC_MODE)


def read_certificates(path: Path, *, what: str | None = None) -> list[x509.Certificate]:
    """Every certificate of a PEM file (or the one of a DER file), leaf first.

    Raises NotACertificate when the file holds none, PkiError when it cannot be read.
    """
    label = what or str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise NotACertificate(f"{label} is a directory, not a certificate file") from None
    except OSError as exc:
        raise PkiError(f"{label}: cannot read ({exc.strerror or exc})") from None
    if b"-----BEGIN" in data:
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            certs = []
        if certs:
            return certs
        raise NotACertificate(f"{label} holds no readable PEM certificate")
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise NotACertificate(f"{label} is not a certificate (neither PEM nor DER)") from None


def read_certificate(path: Path, *, what: str | None = None) -> x509.Certificate:
    """The first certificate of a file (see read_certificates)."""
    return read_certificates(path, what=what)[0]


def read_private_key(path: Path, *, what: str | None = None) -> PrivateKey:
    """An unencrypted EC or RSA PEM private key; PkiError otherwise (no key bytes in the message)."""
    label = what or str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{label}: no such file") from None
    except OSError as exc:
        raise PkiError(f"{label}: cannot read ({exc.strerror or exc})") from None
    try:
        return load_key_pem(data)
    except (ValueError, TypeError):
        raise PkiError(f"{label} is not an unencrypted EC or RSA PEM private key") from None
