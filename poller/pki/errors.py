"""Errors raised by poller.pki on purpose (never carrying key material)."""

from __future__ import annotations

from poller.identity.reasons import PollerError


class PkiError(PollerError):
    """A PKI operation was refused or its input could not be used.

    The message is meant for a human (the CLI prints it as `error: <message>`).
    """


class AuthorityExists(PkiError):
    """A CA (or its key) already exists and regenerating it was not asked for."""


class NotACertificate(PkiError):
    """A file that was expected to hold an X.509 certificate does not."""


class NameNotPermitted(PkiError):
    """A requested SAN falls outside the issuing CA's name constraints."""
