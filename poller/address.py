"""The one parser of `host:port` addresses (config, dialing, the mock agent's --listen).

>>> split_host_port("10.0.0.5:50051")
('10.0.0.5', 50051)
>>> split_host_port("[::1]:50051")
('::1', 50051)
>>> split_host_port(":9464", listen=True)
('', 9464)
"""

from __future__ import annotations

import ipaddress
import json
import re

from poller.identity.reasons import InvalidArgument

_TRUNCATE = 60

_HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def split_host_port(text: str, *, listen: bool = False) -> tuple[str, int]:
    """Split "host:port" ("[v6]:port" for IPv6) and validate both parts.

    Dial addresses need a host and a port in 1-65535.  With listen=True the
    host may be empty (every interface) and the port may be 0 (any free port).
    Raises InvalidArgument (a ValueError) naming what is wrong, suitable for a
    ConfigIssue or a CLI error.
    """
    if not isinstance(text, str):
        raise InvalidArgument("expected a string host:port")
    if text != text.strip() or any(ch.isspace() for ch in text):
        raise InvalidArgument(f"{show_value(text)} contains whitespace (expected host:port)")
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise InvalidArgument(f"{show_value(text)} is not [ipv6]:port")
        host, port_text = text[1:end], text[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidArgument(f"{show_value(host)} in brackets is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise InvalidArgument(f"{show_value(text)} has no port (expected host:port, e.g. 10.0.0.5:50051)")
        if ":" in host:
            raise InvalidArgument(f"{show_value(text)}: an IPv6 address needs brackets, e.g. [::1]:50051")
        if host:
            _check_hostname(host)
        elif not listen:
            raise InvalidArgument(f"{show_value(text)} has no host (write e.g. 127.0.0.1{text})")
    if not port_text.isascii() or not port_text.isdigit():
        raise InvalidArgument(f"{show_value(text)}: port {show_value(port_text)} is not a number")
    port = int(port_text)
    low = 0 if listen else 1
    if not low <= port <= 65535:
        raise InvalidArgument(f"{show_value(text)}: port {port} is out of range ({low}-65535)")
    return host, port


def _check_hostname(host: str) -> None:
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise InvalidArgument(f"{show_value(host)} is not a valid IPv4 address") from None
        return
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_HOSTNAME_LABEL.fullmatch(label) for label in name.split(".")):
        raise InvalidArgument(f"{show_value(host)} is not a valid host name")


def show_value(value: object) -> str:
    """A value as JSON, cut to about 60 characters."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > _TRUNCATE:
        text = text[: _TRUNCATE - 1] + "…"
    return text
