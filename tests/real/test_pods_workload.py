"""Rung 5 for the example workload: the hub's ``notebook-validation-example`` Job's container runs in the
pod sandbox (``rig.pod_sandbox``) on credentials a real ``bao agent`` rendered from its annotations.

The agent-injector's webhook and its agent init container cannot run here (no API server to mutate the
Pod, no vault-k8s image); ``tests/real/test_vault_agent.py`` runs ``bao agent`` with the configuration
the injector derives. What the injector adds to the Pod and what the container sees of it is modelled
as vault-k8s does it (``agent-inject/agent/container_volume.go``): an emptyDir ``vault-secrets`` with
``medium: Memory`` mounted at ``/vault/secrets`` in every app container, and, with
``agent-run-as-same-user``, the agent running as the first app container's ``runAsUser``, so the files
it renders (mode from ``agent-inject-perms-*``) are owned by that user.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from rig.agent import run_agent
from rig.hub_edge import k8s_object, pod_template
from rig.pod_sandbox import Cluster, PodSandbox, fs_user, programs_image
from tests.real import test_vault_agent as agent_tests

pytestmark = pytest.mark.real

hub = agent_tests.hub  # the same fixture: the hub's configuration on a real OpenBao, real databases, moto

#: What the injector adds to the Pod for its app containers.
INJECTED_VOLUME = {"name": "vault-secrets", "emptyDir": {"medium": "Memory"}}
INJECTED_MOUNT = {"name": "vault-secrets", "mountPath": "/vault/secrets"}


def test_the_example_jobs_container_loads_its_injected_credentials(hub: agent_tests.Hub) -> None:
    recording = hub.recording
    template = pod_template(recording, "Job", "notebook-validation-example")
    annotations = dict(template["metadata"]["annotations"])
    assert annotations.get("vault.hashicorp.com/agent-run-as-same-user") == "true"
    pod = hub.pod("sandboxed-job")
    rendered = run_agent(hub.config(annotations, pod, home=pod.home_init), pod.home_init.parent / "agent", timeout=30)
    assert rendered.returncode == 0, rendered.stdout

    job = k8s_object(recording, "Job", "notebook-validation-example")
    box = PodSandbox(
        template,
        "validate",
        programs_image(),
        # the Vault CA Secret the stack puts into the namespace: here the test Vault's CA
        Cluster(job["metadata"]["namespace"], secrets={"vault-ca": {"ca.crt": Path(hub.vault.ca_file).read_text()}}),
        hub.base / "sandboxed-job-pod",
        pod_name="notebook-validation-example",
        extra_volumes=[INJECTED_VOLUME],
        extra_mounts=[INJECTED_MOUNT],
    )
    agent_uid = fs_user(template["spec"])
    assert agent_uid == 65532
    for path in pod.secrets.iterdir():  # what the agent init container wrote into the shared emptyDir
        target = box.volume_dirs["vault-secrets"] / path.name
        shutil.copy2(path, target)
        os.chown(target, agent_uid, agent_uid)
        # the credential files as agent-inject-perms says; the agent's token sink at its default mode
        assert target.stat().st_mode & 0o777 == (0o640 if path.name == "token" else 0o400), path.name
    token = (pod.secrets / "token").read_text().strip()
    assert hub.vault.api("POST", "auth/token/lookup", {"token": token}).status == 200
    # localised: where Vault is (no cluster DNS here); the CA and TLS server name are the pod's own
    result = box.run(timeout=60, env_overrides={"VAULT_ADDR": hub.vault.url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "3 credential files loaded"
    # the workload revoked its agent's token on the way out, and with it the credentials' leases
    assert hub.vault.api("POST", "auth/token/lookup", {"token": token}).status in (400, 403)
    for secret in Path(pod.secrets).iterdir():  # no credential reaches the log
        for line in secret.read_text().splitlines():
            value = line.split("=", 1)[-1].strip("'\"")
            if len(value) > 8:
                assert value not in result.stdout + result.stderr
