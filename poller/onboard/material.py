"""Find private key material in bytes by parsing it, whatever it is labelled.

A label proves nothing: a CA key can hide in config.json as base64 of its DER,
in a PEM block called "CERTIFICATE", as raw DER appended to a file, or as hex.
find_private_key() therefore parses: the bytes as DER, every PEM block's body
whatever its label (and OpenSSH keys), every run of base64 or hex (standard
and URL-safe alphabets, any alignment), recursively to a small depth, and every
embedded DER SEQUENCE that starts like a private key (PKCS#8, SEC 1, PKCS#1,
encrypted PKCS#8). What the `cryptography` package loads as a private key, or
refuses only for want of a password, is key material.

>>> find_private_key(b'{"agent_id": "agent-001"}') is None
True
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

__all__ = ["find_private_key"]

_MAX_DEPTH = 3
_MIN_DER = 48  # the smallest private key DER (an Ed25519 PKCS#8 key) is 48 bytes
_PEM_BLOCK = re.compile(rb"-----BEGIN[^\r\n]{0,80}?-----(.*?)-----END[^\r\n]{0,80}?-----", re.S)
_B64_RUN = re.compile(rb"(?:[A-Za-z0-9+/_\-=]|\\[nr]|\s){64,}")
_HEX_RUN = re.compile(rb"(?:[0-9a-fA-F]{2}[:\s]?){48,}")
_NOT_B64 = re.compile(rb"\\[nr]|\s")
_SEPARATOR = re.compile(rb"=+|-{2,}")


def find_private_key(data: bytes) -> str | None:
    """Where the first private key in `data` was found ("DER", "PEM block", "base64", ...), or None.

    >>> from cryptography.hazmat.primitives.asymmetric import ec
    >>> der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    ...     serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    >>> find_private_key(b'{"note": "' + base64.b64encode(der) + b'"}')
    'base64'
    """
    found = _scan(data, 0)
    if found is None and data[:1] in (b"{", b"["):
        found = _scan_json(data)
    return found


def _scan(data: bytes, depth: int) -> str | None:
    if _is_key(data):
        return "DER"
    for block in _PEM_BLOCK.finditer(data):
        if _is_ssh_key(block.group(0)):
            return "PEM block"
        body = b"\n".join(line for line in block.group(1).splitlines() if b":" not in line)  # RFC 1421 headers
        for decoded in _b64_candidates(body):
            if _is_key(decoded) or (depth < _MAX_DEPTH and _scan(decoded, depth + 1)):
                return "PEM block"
    if depth < _MAX_DEPTH:
        for run in _B64_RUN.finditer(data):
            for decoded in _b64_candidates(run.group(0)):
                if _is_key(decoded) or _scan(decoded, depth + 1):
                    return "base64"
        for run in _HEX_RUN.finditer(data):
            try:
                decoded = binascii.unhexlify(re.sub(rb"[:\s]", b"", run.group(0)))
            except (binascii.Error, ValueError):
                continue
            if _is_key(decoded) or _scan(decoded, depth + 1):
                return "hex"
    if _embedded_der(data):
        return "DER"
    return None


def _scan_json(data: bytes) -> str | None:
    """Strings inside a JSON document, unescaped (a key split by JSON escapes is whole again)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    for text in _strings(doc):
        raw = text.encode("utf-8", "surrogatepass")
        found = _scan(raw, 0) or _scan(text.encode("latin-1", "ignore"), 0)
        if found is not None:
            return found
    return None


def _strings(doc: Any) -> Iterator[str]:
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for key, value in doc.items():
            yield key
            yield from _strings(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from _strings(value)


def _b64_candidates(run: bytes) -> Iterator[bytes]:
    """Decodings of a base64-looking run: whole, and each piece between separators, at each alignment."""
    compact = _NOT_B64.sub(b"", run)
    pieces = dict.fromkeys([compact, *_SEPARATOR.split(compact), *_NOT_B64.split(run)])
    for piece in pieces:
        for shift in range(4):
            text = piece[shift:]
            if len(text) * 3 // 4 < _MIN_DER:
                break
            text = text[: len(text) - len(text) % 4] if len(text) % 4 == 1 else text
            padded = text + b"=" * (-len(text) % 4)
            for alphabet in (b"+/", b"-_"):
                try:
                    yield base64.b64decode(padded, altchars=alphabet, validate=True)
                except (binascii.Error, ValueError):
                    continue


def _is_key(der: bytes) -> bool:
    if len(der) < _MIN_DER or der[:1] != b"\x30":
        return False
    try:
        serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
    except TypeError:  # encrypted: a private key all the same
        return True
    except (ValueError, UnsupportedAlgorithm):
        return False
    return True


def _is_ssh_key(block: bytes) -> bool:
    try:
        serialization.load_ssh_private_key(block, password=None)
    except TypeError:
        return True
    except (ValueError, UnsupportedAlgorithm):
        return False
    return True


def _embedded_der(data: bytes) -> bool:
    """A DER SEQUENCE anywhere in data that starts like a private key and parses as one."""
    at = data.find(b"\x30")
    while at != -1:
        end = _tlv_end(data, at)
        if end is not None and end - at >= _MIN_DER and _is_key(data[at:end]):
            return True
        at = data.find(b"\x30", at + 1)
    return False


def _tlv_end(data: bytes, at: int) -> int | None:
    """End of the SEQUENCE at `at` if its content starts with INTEGER (version) or with an
    AlgorithmIdentifier SEQUENCE holding an OID (encrypted PKCS#8); else None."""
    header = _length(data, at + 1)
    if header is None:
        return None
    length, start = header
    end = start + length
    if end > len(data) or start >= len(data):
        return None
    first = data[start]
    if first == 0x02:
        return end
    if first == 0x30:
        inner = _length(data, start + 1)
        if inner is not None and inner[1] < len(data) and data[inner[1]] == 0x06:
            return end
    return None


def _length(data: bytes, at: int) -> tuple[int, int] | None:
    """A DER length at `at`: (length, offset of the content), or None."""
    if at >= len(data):
        return None
    first = data[at]
    if first < 0x80:
        return first, at + 1
    count = first & 0x7F
    if count == 0 or count > 3 or at + 1 + count > len(data):
        return None
    return int.from_bytes(data[at + 1 : at + 1 + count], "big"), at + 1 + count
