"""The deployment files: the systemd unit (checked by `systemd-analyze verify`
when systemd is installed), the Dockerfile and the Kubernetes manifests.

The container image cannot be built here (base images cannot be pulled), and
there is no cluster: those files are checked for what they must say (non-root,
the wheel only, probes on /healthz and /readyz, the operator view guarded by
a NetworkPolicy) and their poller config is parsed by the poller itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from poller.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "serviceradar-poller.service"
K8S = ROOT / "deploy" / "k8s"
INSTALLED_BIN = "/opt/serviceradar-poller/bin/serviceradar-poller"

needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify on a copy whose ExecStart names an executable that exists here."""
    here = str(Path(sys.executable).with_name("serviceradar-poller"))
    path = tmp_path / UNIT.name
    path.write_text(unit_text.replace(INSTALLED_BIN, here))
    return subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60, check=False)


def test_the_unit_runs_a_dedicated_user_hardened_with_reload_and_the_etc_config():
    settings = unit_settings(UNIT.read_text())
    assert settings["User"] == ["serviceradar-poller"] and settings["Group"] == ["serviceradar-poller"]
    assert settings["ExecStart"] == [f"{INSTALLED_BIN} run --config /etc/serviceradar/poller.json"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["RestartPreventExitStatus"] == ["2"]  # a refused config is not fixed by restarting
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "StateDirectory": "serviceradar-poller",
        "UMask": "0077",
    }.items():
        assert settings[key] == [value], key


@needs_systemd
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    checked = verify(UNIT.read_text(), tmp_path)
    assert checked.returncode == 0 and checked.stdout + checked.stderr == "", checked.stdout + checked.stderr
    # And it would say so: a misspelt hardening key is reported.
    typo = verify(UNIT.read_text().replace("ProtectHome=yes", "ProtectHome=yes\nProtectHoem=yes"), tmp_path)
    assert "Unknown key 'ProtectHoem'" in typo.stdout + typo.stderr


def test_the_dockerfile_is_multi_stage_non_root_and_installs_only_the_wheel():
    lines = [l.strip() for l in (ROOT / "Dockerfile").read_text().splitlines() if l.strip() and not l.lstrip().startswith("#")]
    stages = [i for i, l in enumerate(lines) if l.startswith("FROM ")]
    assert len(stages) >= 2 and " AS build" in lines[stages[0]]
    final = lines[stages[-1] :]
    users = [l for l in final if l.startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] not in ("0", "root")
    text = "\n".join(final)
    assert "COPY --from=build /dist/" in text and "pip install --no-cache-dir /tmp/dist/serviceradar_poller-*.whl" in text
    assert not re.search(r"COPY \. |pip install (-e|--editable)|\.\[|nats-server", text)  # no source tree, extras, NATS
    assert lines[-1] == 'CMD ["run", "--config", "/etc/serviceradar/poller.json"]'


def configmap_config() -> dict:
    """The poller.json inside deploy/k8s/configmap.yaml (a literal block)."""
    lines = (K8S / "configmap.yaml").read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.strip() == "poller.json: |") + 1
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = [l[indent:] for l in lines[start:] if l.startswith(" " * indent) or not l.strip()]
    return json.loads("\n".join(block))


def test_the_k8s_config_is_one_the_poller_accepts():
    config = parse_config(configmap_config())
    assert config.metrics_listen == ":9464" and config.sink.type == "nats" and config.cluster is not None
    assert str(config.sink.creds) == "/run/serviceradar-poller/poller.creds"  # the initContainer's 0600 copy


def test_the_statefulset_probes_health_runs_non_root_and_sets_the_id_from_the_pod():
    text = (K8S / "statefulset.yaml").read_text()
    assert "livenessProbe:\n            httpGet: {path: /healthz, port: metrics}" in text
    assert "readinessProbe:\n            httpGet: {path: /readyz, port: metrics}" in text
    assert "runAsNonRoot: true" in text and "runAsUser: 10001" in text and "readOnlyRootFilesystem: true" in text
    assert "- name: SERVICERADAR_POLLER_ID" in text and "fieldPath: metadata.name" in text
    assert "ghcr.io/example" not in text and "jq " not in text


def test_the_operator_port_is_guarded_by_a_network_policy():
    """/status and / on metrics_listen list every tenant's agents: with ":9464" in the pod,
    only Prometheus may reach that port."""
    text = (K8S / "networkpolicy.yaml").read_text()
    assert "kind: NetworkPolicy" in text and "policyTypes: [Ingress, Egress]" in text
    ingress = text.split("ingress:")[1].split("egress:")[0]
    assert "app.kubernetes.io/name: prometheus" in ingress and "{port: 9464, protocol: TCP}" in ingress


def test_the_deployment_doc_says_the_operator_port_needs_a_network_policy():
    """Issue 18 item 16: the Kubernetes example binds ":9464", so right there the doc must say
    that a NetworkPolicy restricts it to Prometheus, and show one."""
    doc = (ROOT / "docs" / "deployment.md").read_text()
    k8s = doc.split("## Kubernetes")[1].split("\n## ")[0]
    warning = k8s.split("deploy/k8s/networkpolicy.yaml\n```")[1].split("- `deploy/k8s/statefulset.yaml`")[0]
    assert '"metrics_listen": ":9464"' in warning and "every tenant's" in warning
    assert "must restrict ingress to port 9464 to the Prometheus scraper" in warning.replace("\n", " ")
    example = warning.split("```yaml\n")[1].split("```")[0]
    assert "kind: NetworkPolicy" in example and "app.kubernetes.io/name: prometheus" in example
    assert "{port: 9464, protocol: TCP}" in example
    assert "127.0.0.1:9464" in warning  # and the loopback alternative


def test_the_deployment_doc_uses_the_manifests():
    doc = (ROOT / "docs" / "deployment.md").read_text()
    for name in ("deploy/k8s/statefulset.yaml", "deploy/k8s/configmap.yaml", "deploy/k8s/networkpolicy.yaml"):
        assert name in doc
    assert "deploy/serviceradar-poller.service" in doc and "Dockerfile" in doc
    assert "ghcr.io/example" not in doc and "jq --arg" not in doc
