"""The Vault stack under mocks: server HCL (parsed), TLS, chart values, bootstrap, seal modes."""

from __future__ import annotations

import copy
import json
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

from components.transit_unseal import transit_policy_hcl
from components.vault_server_config import VaultServerSpec, server_certificate_dns_names
from offline.engine import RELEASED_PROGRAMS_IMAGE, RecordedResource, Recording, load_stack_file, run_program
from rig.vault_cluster import bootstrap_job

HUB_REF = "organization/fedobs/hub"


def chart_server_pod_labels(release: str) -> dict[str, str]:
    """The labels vault-helm 0.34.1 puts on every server Pod (``templates/server-statefulset.yaml``,
    ``spec.template.metadata.labels``: ``helm.sh/chart``, ``app.kubernetes.io/name`` = ``vault.name``
    (the chart name, ``vault``, without ``nameOverride``), ``app.kubernetes.io/instance`` = the release
    name, ``component: server``); its PodDisruptionBudget selects them by name, instance and component
    (``templates/server-disruptionbudget.yaml``). Written down here from the chart, independently of
    the product's ``server_pod_labels``, so a selector typed wrong there fails this test."""
    return {
        "helm.sh/chart": "vault-0.34.1",
        "app.kubernetes.io/name": "vault",
        "app.kubernetes.io/instance": release,
        "component": "server",
    }


def parse_hcl(text: str) -> dict[str, Any]:
    return hcl2.loads(
        text,
        serialization_options=SerializationOptions(  # type: ignore[no-any-return]
            strip_string_quotes=True, explicit_blocks=False
        ),
    )


def vault_values(recording: Recording) -> dict[str, Any]:
    release = next(r for r in recording.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "vault")
    return release.inputs["values"]  # type: ignore[no-any-return]


def server_config(recording: Recording) -> dict[str, Any]:
    return parse_hcl(vault_values(recording)["server"]["ha"]["raft"]["config"])


def k8s_object(recording: Recording, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in recording.kubernetes_objects() if o["kind"] == kind and o["metadata"]["name"] == name)


def run_edge_with(hub: Recording, **vault_changes: Any) -> Recording:
    config, secret_keys = load_stack_file("edge")
    config = copy.deepcopy(config)
    extra = vault_changes.pop("extra_config", {})
    config["fedobs:vault"].update(vault_changes)
    config.update(extra)
    recording = run_program("edge", config, [*secret_keys, *extra], {HUB_REF: hub.outputs})
    assert recording.error is None, recording.error
    return recording


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_listener_and_storage_blocks(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    config = server_config(recording)
    listener = config["listener"][0]["tcp"]
    assert listener["tls_disable"] is False
    assert listener["tls_cert_file"] == "/vault/userconfig/vault-server-tls/tls.crt"
    assert listener["tls_key_file"] == "/vault/userconfig/vault-server-tls/tls.key"
    assert listener["address"] == "[::]:8200" and listener["cluster_address"] == "[::]:8201"
    assert listener["tls_min_version"] == "tls12"
    raft = config["storage"][0]["raft"]
    assert raft["path"] == "/vault/data"
    joins = raft["retry_join"]
    assert [(j["leader_api_addr"], j["leader_tls_servername"]) for j in joins] == [
        (f"https://vault-{i}.vault-internal:8200", f"vault-{i}.vault-internal") for i in range(3)
    ]
    assert {j["leader_ca_cert_file"] for j in joins} == {"/vault/userconfig/vault-server-tls/ca.crt"}
    assert config["service_registration"][0] == {"kubernetes": {}}


def test_hub_uses_shamir_so_no_seal_stanza(hub: Recording) -> None:
    assert "seal" not in server_config(hub)
    job = k8s_object(
        hub,
        "Job",
        next(
            o["metadata"]["name"]
            for o in hub.kubernetes_objects()
            if o["kind"] == "Job" and o["metadata"]["name"].startswith("vault-bootstrap")
        ),
    )
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--seal") + 1] == "shamir"
    assert command[command.index("--key-shares") + 1] == "5"
    assert command[command.index("--key-threshold") + 1] == "3"


def test_edge_transit_seal_points_at_its_own_hub_key(edge: Recording, hub: Recording) -> None:
    seal = server_config(edge)["seal"][0]["transit"]
    assert seal == {
        "address": "https://vault.hub.fedobs.example.com:8200",
        "key_name": "edge-eu",
        "mount_path": "transit/",
        "tls_ca_cert": "/vault/userconfig/hub-vault-ca/ca.crt",
        "tls_server_name": "vault.hub.fedobs.example.com",
        "disable_renewal": False,
    }
    assert "token" not in seal, "the transit token must come from a Secret, not the ConfigMap"
    env = vault_values(edge)["server"]["extraSecretEnvironmentVars"]
    assert env == [{"envName": "VAULT_TOKEN", "secretName": "vault-seal", "secretKey": "token"}]
    seal_secret = next(r for r in edge.of_type("kubernetes:core/v1:Secret") if r.name == "edge-eu-vault-seal-secret")
    token = edge.one("vault:index/token:Token")  # created by the edge's own deploy identity, on the hub
    assert seal_secret.inputs["stringData"]["token"] == token.outputs["clientToken"]
    assert seal_secret.is_secret_input("stringData.token")
    hub_ca = k8s_object(edge, "Secret", "hub-vault-ca")
    assert hub_ca["stringData"]["ca.crt"] == hub.outputs["vaultCaCert"]


def test_awskms_seal(hub: Recording) -> None:
    recording = run_edge_with(
        hub,
        seal={"type": "awskms", "region": "eu-central-1", "kmsKeyId": "alias/fedobs-edge-eu"},
        extra_config={"fedobs:awsKmsCredentials": {"accessKeyId": "AKIAEXAMPLEEXAMPLE", "secretAccessKey": "s" * 40}},
    )
    assert server_config(recording)["seal"][0]["awskms"] == {
        "region": "eu-central-1",
        "kms_key_id": "alias/fedobs-edge-eu",
    }
    env = {e["envName"]: e for e in vault_values(recording)["server"]["extraSecretEnvironmentVars"]}
    assert set(env) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    secret = next(r for r in recording.of_type("kubernetes:core/v1:Secret") if r.name.endswith("vault-seal-secret"))
    assert secret.is_secret_input("stringData.access-key-id")
    assert secret.is_secret_input("stringData.secret-access-key")
    job = bootstrap_job(recording)
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--seal") + 1] == "auto"


def test_operator_address_exposure_creates_no_load_balancer(hub: Recording) -> None:
    recording = run_edge_with(
        hub,
        exposure={"type": "address", "address": "https://vault.edge.internal:8443", "hostname": "vault.edge.internal"},
    )
    assert not [
        o for o in recording.kubernetes_objects() if o["kind"] == "Service" and o["spec"].get("type") == "LoadBalancer"
    ]
    assert recording.outputs["vaultAddress"] == "https://vault.edge.internal:8443"
    # No LoadBalancer, so no PROXY protocol listener either: one listener, the in-cluster one.
    assert [listener["tcp"]["address"] for listener in server_config(recording)["listener"]] == ["[::]:8200"]


LINODE = "service.beta.kubernetes.io/linode-loadbalancer-"


def test_load_balancer_targets_the_active_node_from_allowed_ranges_only(hub: Recording) -> None:
    service = k8s_object(hub, "Service", "vault-external")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["selector"]["vault-active"] == "true"
    # The NodeBalancer reaches the PROXY protocol listener; clients keep port 8200.
    assert service["spec"]["ports"] == [{"name": "https", "port": 8200, "targetPort": 8203, "protocol": "TCP"}]
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    # The Linode CCM never reads loadBalancerSourceRanges: the Cloud Firewall from the ACL annotation is
    # the restriction, with the configured ranges split by family (components/linode_exposure.py).
    assert "loadBalancerSourceRanges" not in service["spec"]
    annotations = service["metadata"]["annotations"]
    assert json.loads(annotations[f"{LINODE}firewall-acl"]) == {
        "allowList": {"ipv4": ["203.0.113.0/24", "198.51.100.0/24"], "ipv6": ["2001:db8:1234::/48"]}
    }
    assert annotations[f"{LINODE}default-proxy-protocol"] == "v2"
    assert annotations[f"{LINODE}default-protocol"] == "tcp"


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_the_load_balancers_listener_trusts_proxy_headers_from_nodebalancers_only(
    stack: str, request: pytest.FixtureRequest
) -> None:
    recording: Recording = request.getfixturevalue(stack)
    in_cluster, external = (listener["tcp"] for listener in server_config(recording)["listener"])
    service = k8s_object(recording, "Service", "vault-external")
    assert external["address"] == f"[::]:{service['spec']['ports'][0]['targetPort']}"
    assert external["proxy_protocol_behavior"] == "allow_authorized"
    assert external["proxy_protocol_authorized_addrs"] == ["192.168.255.0/24"]
    assert "cluster_address" not in external
    assert {k: external[k] for k in ("tls_disable", "tls_cert_file", "tls_key_file", "tls_min_version")} == {
        k: in_cluster[k] for k in ("tls_disable", "tls_cert_file", "tls_key_file", "tls_min_version")
    }
    # In-cluster clients (VSO, cert-sync, the bootstrap Job, agents) use 8200, which has no PROXY protocol.
    assert in_cluster["address"] == "[::]:8200"
    assert not [key for key in in_cluster if key.startswith("proxy_protocol")]


def test_nodebalancer_ranges_are_a_setting(hub: Recording) -> None:
    exposure = {
        "type": "loadBalancer",
        "hostname": "vault.edge-eu.fedobs.example.com",
        "allowedSourceRanges": ["203.0.113.0/24"],
        "nodeBalancerRanges": ["10.0.0.0/30"],
    }
    recording = run_edge_with(hub, exposure=exposure)
    external = server_config(recording)["listener"][1]["tcp"]
    assert external["proxy_protocol_authorized_addrs"] == ["10.0.0.0/30"]
    annotations = k8s_object(recording, "Service", "vault-external")["metadata"]["annotations"]
    assert json.loads(annotations[f"{LINODE}firewall-acl"]) == {"allowList": {"ipv4": ["203.0.113.0/24"]}}


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_server_certificate_covers_every_name(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    certificate = k8s_object(recording, "Certificate", "vault-server-tls")["spec"]
    hostname = "vault.hub.fedobs.example.com" if stack == "hub" else "vault.edge-eu.fedobs.example.com"
    expected = server_certificate_dns_names(VaultServerSpec(cluster_name="x", external_hostname=hostname))
    assert certificate["dnsNames"] == expected
    for name in (
        "vault",
        "vault-active",
        "vault-internal",
        "vault-0.vault-internal",
        "vault-1.vault-internal",
        "vault-2.vault-internal",
        hostname,
    ):
        assert name in certificate["dnsNames"]
    assert certificate["ipAddresses"] == ["127.0.0.1"]
    assert certificate["duration"] == "2160h" and certificate["renewBefore"] == "720h"  # renew at 2/3
    assert certificate["issuerRef"] == {"name": "vault-ca", "kind": "Issuer", "group": "cert-manager.io"}
    assert "server auth" in certificate["usages"]


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_chart_values_are_production_shaped(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    release = next(r for r in recording.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["chart"] == "vault")
    assert release.inputs["version"] == "0.34.1"
    assert release.inputs["repositoryOpts"] == {"repo": "https://helm.releases.hashicorp.com"}
    values = release.inputs["values"]
    server = values["server"]
    assert values["global"]["tlsDisable"] is False
    assert server["image"] == {"repository": "hashicorp/vault", "tag": "2.0.4"}
    assert server["ha"]["enabled"] and server["ha"]["replicas"] == 3
    assert server["ha"]["raft"]["enabled"] and server["ha"]["raft"]["setNodeId"]
    assert server["ha"]["disruptionBudget"] == {"enabled": True, "maxUnavailable": 1}
    assert server["updateStrategyType"] == "OnDelete"
    # a sealed or uninitialised pod is not Ready (sys/health answers 503/501): the PodDisruptionBudget
    # then protects the quorum; tests/real/test_pods.py and test_vault_bootstrap.py run this probe
    assert server["readinessProbe"] == {"enabled": True, "path": "/v1/sys/health?standbyok=true"}
    anti = server["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    # The selector must match the Pods the chart makes, or the rule spreads nothing: every label it
    # names must be one the chart puts on the server Pods.
    selector = anti[0]["labelSelector"]["matchLabels"]
    assert selector and selector.items() <= chart_server_pod_labels(release.inputs["name"]).items()
    for volume in ("dataStorage", "auditStorage"):
        assert server[volume]["enabled"] and server[volume]["storageClass"] == "linode-block-storage-retain"
    assert server["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    assert server["resources"]["limits"] and server["resources"]["requests"]
    container = server["statefulSet"]["securityContext"]["container"]
    assert container["allowPrivilegeEscalation"] is False and container["capabilities"] == {"drop": ["ALL"]}
    # the chart's start command copies the config to /tmp/storageconfig.hcl: with a read-only root
    # filesystem /tmp must be a volume (tests/real/test_pods.py runs that command)
    assert container["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "emptyDir": {}} in server["volumes"]
    assert {"name": "tmp", "mountPath": "/tmp"} in server["volumeMounts"]
    injector = values["injector"]
    assert injector["enabled"] and injector["replicas"] == 2 and injector["leaderElector"]["enabled"]
    assert injector["image"] == {"repository": "hashicorp/vault-k8s", "tag": "1.7.6"}
    assert injector["agentImage"] == {"repository": "hashicorp/vault", "tag": "2.0.4"}


def test_bootstrap_job_is_restricted_and_least_privileged(hub: Recording) -> None:
    job = bootstrap_job(hub)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["serviceAccountName"] == "vault-bootstrap"
    assert pod["securityContext"]["runAsNonRoot"] is True
    # the credential is 0440 and group-owned by the fsGroup: readable by the program (uid 65532), which a
    # root-owned 0400 file is not (tests/real/test_pods.py runs this Job in its pod)
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == 65532
    admin = next(v for v in pod["volumes"] if v["name"] == "admin")
    assert admin["secret"] == {"secretName": "vault-admin-credential", "defaultMode": 0o440}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["image"] == RELEASED_PROGRAMS_IMAGE  # fedobs:programsImage, by digest
    command = container["command"]
    assert command[:3] == ["python", "-m", "programs.vault_bootstrap"]
    peers = [command[i + 1] for i, part in enumerate(command) if part == "--peer"]
    assert peers == [f"https://vault-{i}.vault-internal:8200" for i in range(3)]
    assert command[command.index("--admin-password-file") + 1] == "/fedobs/admin/password"
    assert command[command.index("--rotate-admin-password") + 1] == "true"
    assert not any("mock-password" in part for part in command)
    role = k8s_object(hub, "Role", "vault-bootstrap")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["vault-init"], "verbs": ["get", "update"]},
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["rolebindings"],
            "resourceNames": [job["metadata"]["name"]],
            "verbs": ["patch", "delete"],
        },
    ], "no create: RBAC cannot scope it by name, and a created token Secret would be any account's"
    state = hub.one("kubernetes:core/v1:Secret", "hub-vault-init-state")
    assert state.inputs["metadata"]["name"] == "vault-init" and "data" not in state.inputs
    assert "stringData" not in state.inputs
    assert state.protect and sorted(state.ignore_changes) == ["data", "stringData"]
    job_resource = hub.one("kubernetes:batch/v1:Job", "hub-vault-bootstrap")
    assert state.urn in job_resource.dependencies, "the Job starts once the Secret it writes exists"


def test_the_bootstrap_grant_lives_only_while_its_job_runs(hub: Recording) -> None:
    """The grant is a RoleBinding named like the Job, created before it; the Job hands the binding its
    own name and uid (downward API) so the run can make the binding the Job's dependent, and is deleted
    as soon as it finishes (tests/real/test_pods.py runs this against the Kubernetes API stand-in)."""
    job = bootstrap_job(hub)
    binding_resource = hub.one("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "hub-vault-bootstrap-binding")
    binding = binding_resource.inputs
    assert binding["metadata"] == {"name": job["metadata"]["name"], "namespace": "vault"}
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vault-bootstrap"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "vault-bootstrap", "namespace": "vault"}]
    job_resource = hub.one("kubernetes:batch/v1:Job", "hub-vault-bootstrap")
    assert binding_resource.urn in job_resource.dependencies, "the grant exists before the Pod starts"
    assert job["spec"]["ttlSecondsAfterFinished"] == 0
    container = job["spec"]["template"]["spec"]["containers"][0]
    labels = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert labels == {
        "VAULT_BOOTSTRAP_ROLE_BINDING": "metadata.labels['batch.kubernetes.io/job-name']",
        "VAULT_BOOTSTRAP_JOB_NAME": "metadata.labels['batch.kubernetes.io/job-name']",
        "VAULT_BOOTSTRAP_JOB_UID": "metadata.labels['batch.kubernetes.io/controller-uid']",
    }
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # nothing else in the stack binds the bootstrap's account
    bound = [
        r.name
        for r in hub.resources
        if r.type.endswith(("RoleBinding", "ClusterRoleBinding"))
        and any(s.get("name") == "vault-bootstrap" for s in r.inputs.get("subjects") or [])
    ]
    assert bound == ["hub-vault-bootstrap-binding"]


def test_a_new_bootstrap_job_comes_with_a_new_binding(hub: Recording) -> None:
    config, secret_keys = load_stack_file("hub")
    config = copy.deepcopy(config)
    config["fedobs:vault"]["adminCredentialGeneration"] = 2
    rotated = run_program("hub", config, secret_keys)
    assert rotated.error is None, rotated.error
    for recording in (hub, rotated):
        binding = recording.one("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "hub-vault-bootstrap-binding")
        role = k8s_object(recording, "Role", "vault-bootstrap")
        assert binding.inputs["metadata"]["name"] == bootstrap_job(recording)["metadata"]["name"]
        assert role["rules"][1]["resourceNames"] == [bootstrap_job(recording)["metadata"]["name"]]
    assert bootstrap_job(hub)["metadata"]["name"] != bootstrap_job(rotated)["metadata"]["name"]


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_vault_provider_logs_in_on_every_run(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    prefix = "hub" if stack == "hub" else "edge-eu"
    provider = recording.one("pulumi:providers:vault", f"{prefix}-vault-provider")
    assert "token" not in provider.inputs
    login = provider.inputs["authLoginUserpass"]
    assert '"mount":"userpass-pulumi"' in login.replace(" ", "") and '"username":"pulumi"' in login.replace(" ", "")
    assert provider.is_secret_input("authLoginUserpass")
    job = next(r for r in recording.of_type("kubernetes:batch/v1:Job"))
    assert job.urn in provider.dependencies, "the provider must wait for the bootstrap Job"
    assert provider.inputs["caCertFile"].endswith(f".fedobs/{stack}/vault-ca.pem")


def test_transit_unseal_tokens_can_only_use_their_own_key(hub: Recording) -> None:
    for edge_name in ("edge-eu", "edge-ap"):
        policy = hub.one("vault:index/policy:Policy", f"hub-transit-unseal-{edge_name}-policy")
        assert policy.inputs["name"] == f"transit-unseal-{edge_name}"
        assert parse_hcl(policy.inputs["policy"])["path"] == [
            {f"transit/encrypt/{edge_name}": {"capabilities": ["update"]}},
            {f"transit/decrypt/{edge_name}": {"capabilities": ["update"]}},
            {"auth/token/renew-self": {"capabilities": ["update"]}},
            {"auth/token/lookup-self": {"capabilities": ["read"]}},
        ]
        assert policy.inputs["policy"] == transit_policy_hcl(edge_name)
        role = hub.one("vault:tokenauth/authBackendRole:AuthBackendRole", f"hub-transit-unseal-{edge_name}-token-role")
        assert role.inputs["allowedPolicies"] == [f"transit-unseal-{edge_name}"] and role.inputs["orphan"] is True
        assert role.inputs["tokenPeriod"] == 768 * 3600 and role.inputs["tokenNoDefaultPolicy"] is True
        key = hub.one("vault:transit/secretBackendKey:SecretBackendKey", f"hub-transit-unseal-{edge_name}-key")
        assert key.inputs["name"] == edge_name and key.inputs["exportable"] is False and key.protect


def test_the_transit_mount_is_protected(hub: Recording) -> None:
    """Unmounting ``transit/`` deletes every edge's unseal key: Pulumi must never delete or replace it."""
    mount = hub.one("vault:index/mount:Mount", "hub-transit-unseal-mount")
    assert mount.inputs["type"] == "transit" and mount.inputs["path"] == "transit"
    assert mount.protect


def test_autopilot_and_audit(hub: Recording) -> None:
    autopilot = hub.one("vault:index/raftAutopilot:RaftAutopilot")
    assert autopilot.inputs["cleanupDeadServers"] is True and autopilot.inputs["minQuorum"] == 3
    # the file device keeps its name and inputs (an audit device cannot change in place)
    audit = hub.one("vault:index/audit:Audit", "hub-vault-audit")
    assert audit.inputs == {
        "type": "file",
        "path": "file",
        "description": "Every request and response, HMAC'd, on the audit volume",
        "options": {"file_path": "/vault/audit/audit.log", "mode": "0600"},
    }
    # and a second device no full disk can block: Vault needs one device to log each request
    stdout = hub.one("vault:index/audit:Audit", "hub-vault-audit-stdout")
    assert (stdout.inputs["type"], stdout.inputs["path"], stdout.inputs["options"]) == (
        "file",
        "stdout",
        {"file_path": "stdout"},
    )


@pytest.mark.parametrize("stack", ["hub", "edge"])
def test_audit_log_rotation_sidecar(stack: str, request: pytest.FixtureRequest) -> None:
    recording: Recording = request.getfixturevalue(stack)
    server = vault_values(recording)["server"]
    assert server["shareProcessNamespace"] is True  # the sidecar signals Vault (SIGHUP reopens the file)
    (sidecar,) = server["extraContainers"]
    assert sidecar["name"] == "audit-rotate" and sidecar["image"] == "hashicorp/vault:2.0.4"
    assert sidecar["volumeMounts"] == [{"name": "audit", "mountPath": server["auditStorage"]["mountPath"]}]
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert env == {
        "AUDIT_LOG": "/vault/audit/audit.log",
        "ROTATE_BYTES": str(10 * 2**30 // 20),  # 1/20 of the 10Gi audit volume
        "MAX_USED_PERCENT": "60",
        "ROTATE_INTERVAL_SECONDS": "60",
        "VAULT_SERVER_ARGS": "server -config=/tmp/storageconfig.hcl",  # what the chart's start command runs
    }
    # no securityContext of its own user: the pod's (uid 100), Vault's own, so it may signal Vault
    context = sidecar["securityContext"]
    assert "runAsUser" not in context and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}


def test_snapshot_cronjob(hub: Recording) -> None:
    cronjob = k8s_object(hub, "CronJob", "vault-raft-snapshot")["spec"]
    assert cronjob["schedule"] == "0 * * * *" and cronjob["concurrencyPolicy"] == "Forbid"
    assert cronjob["successfulJobsHistoryLimit"] == 3 and cronjob["startingDeadlineSeconds"] == 600
    pod = cronjob["jobTemplate"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}
    assert env["SNAPSHOT_KEEP"] == "48" and env["SNAPSHOT_S3_BUCKET"] == "fedobs-hub-vault-snapshots"
    assert env["VAULT_ADDR"] == "https://vault-active.vault.svc:8200"
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "vault-snapshot-s3", "key": "secret-access-key"}}
    projected = pod["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
    assert projected["audience"] == "vault" and pod["automountServiceAccountToken"] is False
    role = hub.one("vault:kubernetes/authBackendRole:AuthBackendRole", "hub-kubernetes-auth-raft-snapshot-role")
    assert role.inputs["boundServiceAccountNames"] == ["vault-snapshot"]
    assert role.inputs["boundServiceAccountNamespaces"] == ["vault"]
    assert role.inputs["audience"] == "vault"
    policy = hub.one("vault:index/policy:Policy", "hub-kubernetes-auth-raft-snapshot-policy")
    assert parse_hcl(policy.inputs["policy"])["path"] == [{"sys/storage/raft/snapshot": {"capabilities": ["read"]}}]
    bucket = hub.one("linode:index/objectStorageBucket:ObjectStorageBucket")
    assert bucket.protect and bucket.inputs["label"] == "fedobs-hub-vault-snapshots"
    # pulumi-linode's ObjectStorageBucket takes a region ("us-ord"); "us-ord-1" is the deprecated cluster id.
    assert bucket.inputs["region"] == "us-ord" and "cluster" not in bucket.inputs
    assert env["SNAPSHOT_S3_ENDPOINT"] == "https://us-ord-1.linodeobjects.com"
    # versioning needs Object Storage keys at apply time: the bucket's provider makes temporary ones
    assert bucket.inputs["versioning"] is True and "accessKey" not in bucket.inputs
    provider = hub.one("pulumi:providers:linode", "hub-raft-snapshots-object-storage")
    assert provider.inputs["objUseTempKeys"] in (True, "true")
    assert bucket.provider.startswith(provider.urn + "::")


def admin_passwords(recording: Recording) -> dict[str, RecordedResource]:
    return {r.name.rsplit("-", 1)[1]: r for r in recording.of_type("random:index/randomPassword:RandomPassword")}


def admin_credential(recording: Recording) -> dict[str, str]:
    secret = recording.one("kubernetes:core/v1:Secret", "hub-vault-admin-credential")
    assert "stringData" in secret.secret_inputs
    return dict(secret.inputs["stringData"])


def test_bumping_the_admin_credential_generation_replaces_password_and_reruns_bootstrap(hub: Recording) -> None:
    """One password slot per generation parity: a bump replaces only the slot of the new generation, so
    the Job's Secret carries the new password and, as ``previous-password``, the one Vault still has."""
    config, secret_keys = load_stack_file("hub")
    generations: dict[int, Recording] = {1: hub}
    for generation in (2, 3):
        config = copy.deepcopy(config)
        config["fedobs:vault"]["adminCredentialGeneration"] = generation
        generations[generation] = run_program("hub", config, secret_keys)
        assert generations[generation].error is None, generations[generation].error
    keepers = {
        g: {k: r.inputs["keepers"]["generation"] for k, r in admin_passwords(rec).items()}
        for g, rec in generations.items()
    }
    assert keepers == {1: {"odd": "1", "even": "0"}, 2: {"odd": "1", "even": "2"}, 3: {"odd": "3", "even": "2"}}
    # the current slot takes over the one password resource of earlier versions (an upgrade keeps Vault's)
    for generation, recording in generations.items():
        current = "odd" if generation % 2 else "even"
        for label, resource in admin_passwords(recording).items():
            alias = [{"name": "hub-vault-admin-password"}] if label == current else []
            assert [{k: v for k, v in a.items() if k == "name"} for a in resource.aliases] == alias
    credentials = {g: admin_credential(rec) for g, rec in generations.items()}
    assert credentials[2]["previous-password"] == credentials[1]["password"] != credentials[2]["password"]
    assert credentials[3]["previous-password"] == credentials[2]["password"] != credentials[3]["password"]
    old_job = bootstrap_job(hub)
    new_job = bootstrap_job(generations[2])
    assert old_job["metadata"]["name"] != new_job["metadata"]["name"]
    assert old_job["spec"] == new_job["spec"]
    assert not any("mock-password" in part for part in new_job["metadata"]["name"])
