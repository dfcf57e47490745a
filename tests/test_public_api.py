"""The public face of `import poller`: exactly these names, each importable, and
one error root for everything the package raises on purpose."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import poller
from poller.identity.reasons import AgentFailure, AgentUnreachable, InvalidPayload, PollerError, Reason

PUBLIC = {
    "Access",
    "AgentClient",
    "AgentConnection",
    "AgentFailure",
    "AgentReply",
    "AgentUnreachable",
    "CertificateError",
    "ConfigError",
    "DurationError",
    "IdentityRefused",
    "IncompleteStream",
    "InvalidArgument",
    "InvalidName",
    "InvalidPayload",
    "PkiError",
    "PollerError",
    "PollResult",
    "PollerMetrics",
    "Reason",
    "StreamDocument",
    "SubjectError",
    "TenantContext",
    "TrustStore",
    "TrustStoreError",
    "current_tenant",
    "dial_agent",
    "tenant_from_subject",
    "tenant_subject",
    "verify_agent_chain",
    # policies and handlers (issue 7)
    "Decision",
    "Delivery",
    "HandlerRegistry",
    "PermissionDenied",
    "PlatformIdentity",
    "Policy",
    "ResultRefused",
    "all_of",
    "any_of",
    "any_tenant",
    "bound_tenant",
    "channel_for",
    "component_type_in",
    "platform_admin",
    "same_tenant",
    "tenant_in",
}


def test_all_is_exactly_the_public_names() -> None:
    assert set(poller.__all__) == PUBLIC
    assert len(poller.__all__) == len(set(poller.__all__)), "a name is listed twice"


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_public_name_is_importable_and_documented(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from poller import {name}", namespace)  # the way a user writes it
    value = namespace[name]
    assert value is getattr(poller, name)
    assert inspect.getdoc(value), f"poller.{name} has no docstring"


def _package_modules() -> list[str]:
    names = ["poller"]
    for info in pkgutil.walk_packages(poller.__path__, "poller."):
        if info.name.startswith("poller.proto") or info.name == "poller.__main__":
            continue
        names.append(info.name)
    return names


def _package_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module_name in _package_modules():
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__.startswith("poller"):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


def test_every_error_of_the_package_derives_from_poller_error() -> None:
    errors = _package_exceptions()
    # The walk must see the errors the issue names, or it proves nothing.
    names = {e.__name__ for e in errors}
    assert {"ConfigError", "InvalidName", "CertificateError", "DurationError", "TrustStoreError", "PkiError"} <= names
    assert {"IncompleteStream", "IdentityRefused", "AgentUnreachable", "MockAgentError"} <= names
    strays = sorted(f"{e.__module__}.{e.__qualname__}" for e in errors if not issubclass(e, PollerError))
    assert strays == []


@pytest.mark.parametrize("name", ["ConfigError", "InvalidName", "CertificateError", "DurationError", "InvalidArgument"])
def test_value_errors_stay_value_errors(name: str) -> None:
    assert issubclass(getattr(poller, name), ValueError)


def test_a_plain_poller_error_needs_no_reason() -> None:
    err = PollerError("something went wrong")
    assert str(err) == "something went wrong"
    assert not hasattr(err, "reason")


def test_agent_failures_carry_a_reason_and_an_outcome() -> None:
    late = AgentUnreachable("GetStatus: DEADLINE_EXCEEDED: took too long", code="DEADLINE_EXCEEDED")
    assert late.reason is Reason.UNREACHABLE and late.outcome is Reason.TIMEOUT
    down = AgentUnreachable("connection refused")
    assert down.reason is Reason.UNREACHABLE and down.outcome is Reason.UNREACHABLE
    garbage = InvalidPayload("GetStatus: not a valid StatusResponse")
    assert isinstance(garbage, AgentFailure) and garbage.code is None
    assert garbage.outcome is Reason.INVALID_PAYLOAD
    stream = poller.IncompleteStream("ended after 2 chunks without is_final")
    assert isinstance(stream, AgentFailure) and stream.reason is Reason.INCOMPLETE_STREAM


def test_reason_is_one_vocabulary_of_distinct_lowercase_codes() -> None:
    values = [r.value for r in Reason]
    assert len(values) == len(set(values))
    assert all(v == v.lower() and " " not in v for v in values)
    for loose in ("timeout", "not_serving", "invalid_payload", "internal_error", "incomplete_stream", "ok", "refused"):
        assert Reason(loose).value == loose
    assert "INVALID_PAYLOAD" not in values  # not a made-up gRPC code
    assert Reason.TENANT_MISMATCH.is_refusal and not Reason.TIMEOUT.is_refusal
    assert str(Reason.OK) == "ok"
