"""The hub and an edge as their stacks declare them, made real on loopback: the steps that the real
tests (``tests/real/test_transit_unseal.py``, ``test_hub_edge_flow.py``, ``test_vault_agent.py``)
and ``make demo`` (``demo/``) share, so that the demo is not a second implementation.

Each function takes what a stack evaluated under mocks recorded (:class:`offline.engine.Recording`)
and turns one declaration into something that runs here, changing only what cannot exist outside a
cluster: addresses, the files a pod's volumes would mount, and the Kubernetes API (the loopback
:class:`rig.kube_api.KubeAPIServer`).

``children(recording, *components)``
    The resources whose parent is one of the named components (what the applier applies).
``k8s_object(recording, kind, name)`` / ``secret_value(recording, name, key)`` / ``pod_template(recording, kind, name)``
    A declared Kubernetes object / one ``stringData`` value of a declared Secret / the Pod
    template (``metadata`` with the injector annotations, ``spec``) of a declared Job or CronJob.
``openbao_pod_hcl(recording)`` / ``openbao_audit_stanzas(recording)``
    The server HCL of the stack's Vault pods plus the OpenBao form of every audit device the stack
    declares through the API (OpenBao takes audit devices only from its config) / those stanzas alone.
``run_bootstrap_job(recording, vault, workdir, password)``
    The stack's bootstrap Job, run as its pod runs it (its own argument list, localised by
    ``rig.vault_cluster.localize_job_command``) against a started ``LoopbackVault``.
``shipped_admin_policy()``
    The ``fedobs-admin`` policy the shipped hub renders.
``admin_login(url, ca_file, password)`` / ``admin_token(url, ca_file, password)``
    The login Pulumi's Vault provider makes (the bootstrap's userpass admin path): its answer / its token.
``kubernetes_auth_overrides(kube)``
    The applier's ``in_cluster_overrides`` for a Kubernetes auth config that asks ``kube`` instead of
    the in-cluster API (and allows Vault's own ServiceAccount to create TokenReviews there).
``real_hub_outputs(hub, address=..., ca_pem=...)``
    The hub's stack outputs with the values of the running hub (address, CA), for the edge's stack
    reference. Each edge's own hub credentials come from ``rig.deploy_identity.edge_on_real_hub``.
``edge_vault(edge, base, token=None, pod_hcl=None)``
    One pod of the edge's Vault (not started), with the hub CA and seal token its Secrets carry.
``issue_pki(hub)`` / ``publish_pki(hub, kube, pki)``
    Certificates issued as the hub's ``Certificate`` resources specify (``components.otlp_pki.
    certificate_specs``), served as cert-manager's Secrets by the hub's Kubernetes API, readable by
    the cert-sync ServiceAccount exactly as the hub's Role says.
``hub_cert_sync_options(hub)`` / ``hub_cert_sync_pass(hub, secrets, stored, now)``
    The hub's cert-sync command as the program parses it, and one of its passes on Secrets and KV
    held in memory, planned by the program's own code (``programs.cert_sync.sync.plan_hub``).
``run_cert_sync(recording, vault_url, ca_file, kube, workdir, passes=1)``
    The stack's cert-sync, run as its pod runs it: the hub's CronJob, by default one of its passes (a
    run of the shipped CronJob makes three, 20 s apart: ``passes=None`` runs them all); the edge's
    follower Deployment, ``passes`` polls at its shipped interval (one by default; ``None``: until
    stopped), with its secret_id Secret on the edge's Kubernetes API as the stack declares it.
``cert_sync_workload(recording)``
    The kind of the stack's ``cert-sync`` workload: ``CronJob`` (hub) or ``Deployment`` (edge).
``vso_login(edge, url, ca_file, kube)``
    The edge VSO's Kubernetes-auth login (its ``VaultAuth``) and the KV path its ``VaultStaticSecret`` reads.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.admin_policy import admin_policy_hcl
from components.otlp_pki import CLIENT_CA, SERVER_CA, client_secret_name
from components.vault import ADMIN_USERNAME
from components.vault_config import VaultConfigSettings
from components.vault_names import ADMIN_AUTH_MOUNT
from components.vault_server_config import HUB_CA_DIR
from offline.engine import RecordedResource, Recording, load_stack_file
from programs.cert_sync import sync
from programs.vault_http import KvState
from rig import processes
from rig.cert_manager_pki import Issued, issue, issue_secrets
from rig.kube_api import KubeAPIServer
from rig.openbao import ApiResponse, api, openbao_audit_stanza, wait_until
from rig.pki import write_private_file
from rig.programs_env import programs_python
from rig.vault_cluster import (
    LoopbackVault,
    build_loopback_vault,
    job_command,
    localize_job_command,
    stack_server,
)

#: The shipped hub's PKI namespace (``fedobs:pki.namespace``), where cert-manager keeps its Secrets.
PKI_NAMESPACE = "fedobs-pki"

__all__ = [
    "NEVER_APPLIED_PASSWORD",
    "REPO",
    "Pki",
    "admin_login",
    "admin_token",
    "children",
    "edge_vault",
    "issue_pki",
    "k8s_object",
    "kubernetes_auth_overrides",
    "openbao_audit_stanzas",
    "openbao_pod_hcl",
    "pod_template",
    "publish_pki",
    "real_hub_outputs",
    "run_bootstrap_job",
    "run_cert_sync",
    "secret_value",
    "shipped_admin_policy",
    "single_hub_pod",
    "vso_login",
]

REPO = Path(__file__).resolve().parents[1]
#: The ``previous-password`` the Job mounts at generation 1 (Vault._admin_passwords): Vault never had it.
NEVER_APPLIED_PASSWORD = "previous generation: never applied"
KUBERNETES_AUTH_CONFIG = "vault:kubernetes/authBackendConfig:AuthBackendConfig"


# --------------------------------------------------------------------------------------------------
# reading the recording
# --------------------------------------------------------------------------------------------------
def children(recording: Recording, *components: str) -> list[RecordedResource]:
    """Resources parented by the components named ``components`` (in registration order)."""
    urns = {r.urn for r in recording.resources if not r.custom and r.name in components}
    return [r for r in recording.resources if r.parent in urns]


def k8s_object(recording: Recording, kind: str, name: str) -> dict[str, Any]:
    """The declared Kubernetes object of ``kind`` named ``name`` (``LookupError`` if there is none)."""
    for obj in recording.kubernetes_objects():
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise LookupError(f"the {recording.stack} stack declares no {kind} named {name!r}")


def secret_value(recording: Recording, name: str, key: str) -> str:
    return str(k8s_object(recording, "Secret", name)["stringData"][key])


def pod_template(recording: Recording, kind: str, name: str) -> dict[str, Any]:
    """The Pod template of a declared Job (``spec.template``) or CronJob (``spec.jobTemplate.spec.template``)."""
    spec = k8s_object(recording, kind, name)["spec"]
    template: dict[str, Any] = (spec["jobTemplate"]["spec"] if kind == "CronJob" else spec)["template"]
    return template


def openbao_audit_stanzas(recording: Recording) -> str:
    """Every ``vault.Audit`` the stack declares, in OpenBao's config form (with the pod's file paths)."""
    return "".join(
        openbao_audit_stanza(audit.inputs["type"], audit.inputs["path"], audit.inputs["options"])
        for audit in recording.of_type("vault:index/audit:Audit")
    )


def openbao_pod_hcl(recording: Recording) -> str:
    """The pods' server HCL, with each declared ``vault.Audit`` appended in OpenBao's config form."""
    return stack_server(recording).pod_hcl + openbao_audit_stanzas(recording)


@contextlib.contextmanager
def single_hub_pod(recording: Recording, workdir: Path) -> Iterator[tuple[LoopbackVault, str]]:
    """Pod ``vault-0`` of the stack alone, from its own HCL (a one-node Raft cluster), initialised with
    one key share, unsealed and leading; yields the cluster and the root token, and stops it after."""
    server = stack_server(recording)
    vault = build_loopback_vault(
        workdir, server.spec, pod_hcl=openbao_pod_hcl(recording), dns_names=server.dns_names, nodes=[0]
    )
    try:
        vault.cluster.start()
        url = vault.urls[0]
        init = api(url, "PUT", "sys/init", body={"secret_shares": 1, "secret_threshold": 1}, ca_file=vault.ca_file)
        assert init.status == 200, init.text
        unseal = api(url, "PUT", "sys/unseal", body={"key": init.body["keys"][0]}, ca_file=vault.ca_file)
        assert unseal.status == 200, unseal.text
        token = str(init.body["root_token"])
        wait_until(
            lambda: api(url, "GET", "sys/leader", token=token, ca_file=vault.ca_file).body.get("is_self") is True,
            timeout=30,
            what="vault-0 leads",
        )
        yield vault, token
    finally:
        vault.cluster.close()


# --------------------------------------------------------------------------------------------------
# bootstrap and the admin login
# --------------------------------------------------------------------------------------------------
def bootstrap_job_command(
    recording: Recording,
    vault: LoopbackVault,
    workdir: Path,
    password: str,
    *,
    timeout: float = 45.0,
    autopilot_stabilization: str | None = "2s",
) -> list[str]:
    """The stack's bootstrap Job arguments against ``vault`` as its pod would have them: the admin
    passwords (current, and previous generation's) and the admin policy (from the stack's
    ``vault-admin-policy`` ConfigMap) written as the files its volumes mount, the init result in
    ``workdir/vault-init.json`` instead of the Kubernetes Secret (see ``localize_job_command``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    write_private_file(workdir / "password", password)
    # the Secret's other password, the previous generation's: at generation 1 one Vault never had
    write_private_file(workdir / "previous-password", NEVER_APPLIED_PASSWORD)
    policy = k8s_object(recording, "ConfigMap", "vault-admin-policy")
    (workdir / "admin-policy.hcl").write_text(policy["data"]["admin.hcl"])
    return localize_job_command(
        job_command(recording),
        vault,
        workdir,
        workdir / "vault-init.json",
        timeout=timeout,
        autopilot_stabilization=autopilot_stabilization,
    )


def run_bootstrap_job(
    recording: Recording, vault: LoopbackVault, workdir: Path, password: str, *, timeout: float = 45.0
) -> subprocess.CompletedProcess[str]:
    """Run the stack's bootstrap Job (``bootstrap_job_command``) against ``vault`` as its pod would."""
    command = bootstrap_job_command(recording, vault, workdir, password, timeout=timeout)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    return processes.run(
        [programs_python(), "-m", "programs.vault_bootstrap", *command],
        cwd=REPO,
        env=env,
        capture_output=True,
        timeout=2 * timeout,
    )


def shipped_admin_policy() -> str:
    """The admin policy the shipped hub renders from its mounts (``components.admin_policy``), as its
    ``vault-admin-policy`` ConfigMap and its ``fedobs-admin`` ``vault.Policy`` carry it."""
    config, _ = load_stack_file("hub")
    return admin_policy_hcl(VaultConfigSettings.model_validate(config["fedobs:vaultConfig"]), transit=True)


def admin_login(url: str, ca_file: str, password: str) -> ApiResponse:
    return api(
        url, "POST", f"auth/{ADMIN_AUTH_MOUNT}/login/{ADMIN_USERNAME}", body={"password": password}, ca_file=ca_file
    )


def admin_token(url: str, ca_file: str, password: str) -> str:
    """A token of the admin path the bootstrap created (``RuntimeError`` if the login is refused)."""
    login = admin_login(url, ca_file, password)
    if login.status != 200:
        raise RuntimeError(f"admin login at {url} refused: {login.status} {login.text.strip()}")
    return str(login.body["auth"]["client_token"])


def kubernetes_auth_overrides(kube: KubeAPIServer) -> dict[str, dict[str, Any]]:
    """In the cluster Vault reviews tokens with its own ServiceAccount (``system:auth-delegator``)
    against the in-cluster API; here that is a token of the same account for the loopback API."""
    kube.allow_token_reviews("system:serviceaccount:vault:vault")
    return {
        KUBERNETES_AUTH_CONFIG: {
            "kubernetesHost": kube.url,
            "kubernetesCaCert": kube.ca_pem,
            "disableLocalCaJwt": True,
            "tokenReviewerJwt": kube.mint_service_account_token("vault", "vault"),
        }
    }


# --------------------------------------------------------------------------------------------------
# hub -> edge
# --------------------------------------------------------------------------------------------------
def real_hub_outputs(hub: Recording, *, address: str, ca_pem: str) -> dict[str, Any]:
    """The hub's outputs as a real hub has them: ``vaultAddress``/``vaultCaCert`` of the running
    server, everything else the recording's (the hub exports nothing per edge)."""
    return {**hub.outputs, "vaultAddress": address, "vaultCaCert": ca_pem}


def edge_vault(edge: Recording, base: Path, token: str | None = None, *, pod_hcl: str | None = None) -> LoopbackVault:
    """One pod of the edge stack's Vault (created, not started), with the files and environment its
    pod would get: the hub CA from its ``hub-vault-ca`` Secret and the seal token from its
    ``vault-seal`` Secret (or ``token``). ``pod_hcl`` defaults to the rendered server HCL."""
    server = stack_server(edge)
    hub_ca = base / "hub-vault-ca.crt"
    hub_ca.parent.mkdir(parents=True, exist_ok=True)
    hub_ca.write_text(secret_value(edge, "hub-vault-ca", "ca.crt"))
    seal_token = token if token is not None else secret_value(edge, "vault-seal", "token")
    # The chart maps the Secret to VAULT_TOKEN; OpenBao reads BAO_TOKEN first.
    return build_loopback_vault(
        base / "cluster",
        server.spec,
        pod_hcl=server.pod_hcl if pod_hcl is None else pod_hcl,
        dns_names=server.dns_names,
        nodes=[0],
        extra_tls_files={f"{HUB_CA_DIR}/ca.crt": str(hub_ca)},
        extra_env={"VAULT_TOKEN": seal_token, "BAO_TOKEN": seal_token},
    )


# --------------------------------------------------------------------------------------------------
# the OTLP PKI and cert-sync
# --------------------------------------------------------------------------------------------------
@dataclass
class Pki:
    """The hub's OTLP PKI as cert-manager would issue it from the hub's own Issuers and Certificates
    (``rig.cert_manager_pki``), by Secret name, with the Certificate specs."""

    issued: dict[str, Issued]
    specs: dict[str, dict[str, Any]]

    @property
    def client_ca(self) -> Issued:
        return self.issued[CLIENT_CA]

    @property
    def server_ca(self) -> Issued:
        return self.issued[SERVER_CA]

    def client(self, edge: str) -> Issued:
        return self.issued[client_secret_name(edge)]

    def renew(self, name: str, at: dt.datetime | None = None) -> Issued:
        """cert-manager's renewal of Certificate ``name`` (``rotationPolicy: Always``), ``at`` a moment
        (now by default): a new key and certificate per its spec, from its issuer's CA as that CA's
        Secret holds it now (a root: self-signed). A CA's renewal re-issues none of its leaves
        (cert-manager #2478, #9076)."""
        spec = self.specs[name]
        issuer_name = spec["issuerRef"]["name"]
        signer = None if issuer_name == "selfsigned" else self.issued[issuer_name]
        self.issued[name] = issue(spec, signer, at=at)
        return self.issued[name]

    def renew_client(self, edge: str) -> Issued:
        """The renewal of ``edge``'s client certificate (from ``client-ca``): what the Secret then holds."""
        name = client_secret_name(edge)
        if self.specs[name]["issuerRef"]["name"] != CLIENT_CA:
            raise ValueError(f"{name} is not issued by {CLIENT_CA}")
        return self.renew(name)


def issue_pki(hub: Recording) -> Pki:
    """Certificates as the hub's ``Certificate`` resources specify them (chain, usages, SANs, key type)."""
    objects = hub.kubernetes_objects()
    specs = {
        o["spec"]["secretName"]: o["spec"]
        for o in objects
        if o["kind"] == "Certificate" and o["metadata"]["namespace"] == PKI_NAMESPACE
    }
    for name, spec in specs.items():
        if name.startswith("otel-client-tls-") and spec["usages"] != [
            "client auth",
            "digital signature",
            "key encipherment",
        ]:
            raise ValueError(f"{name}: a client certificate must have client-auth usages only: {spec['usages']}")
    return Pki(issue_secrets(objects, PKI_NAMESPACE), specs)


def publish_pki(hub: Recording, kube: KubeAPIServer, pki: Pki) -> list[str]:
    """Serve ``pki`` as cert-manager's Secrets on the hub's Kubernetes API and let the cert-sync
    ServiceAccount get exactly the Secrets the hub's ``cert-sync-reader`` Role names. Returns their names."""
    reader = k8s_object(hub, "Role", "cert-sync-reader")
    namespace = reader["metadata"]["namespace"]
    kube.allow_service_account(
        "fedobs-cert-sync",
        "cert-sync",
        verbs=["get"],
        resources=["secrets"],
        namespace=namespace,
        resource_names=reader["rules"][0]["resourceNames"],
    )
    for name, issued in pki.issued.items():
        kube.put_secret(namespace, name, issued.secret_data, type="kubernetes.io/tls")
    return sorted(pki.issued)


def cert_sync_workload(recording: Recording) -> str:
    """``CronJob`` for the hub's cert-sync, ``Deployment`` for an edge's follower."""
    kinds = {o["kind"] for o in recording.kubernetes_objects() if o["metadata"]["name"] == "cert-sync"}
    return "CronJob" if "CronJob" in kinds else "Deployment"


def cert_sync_command(recording: Recording) -> list[str]:
    """The command of the stack's ``cert-sync`` CronJob (hub) or Deployment (edge)."""
    kind = cert_sync_workload(recording)
    return list(pod_template(recording, kind, "cert-sync")["spec"]["containers"][0]["command"])


def edge_secret_id_on(recording: Recording, kube: KubeAPIServer) -> tuple[str, str]:
    """The edge's ``hub-secret-id`` Secret on its Kubernetes API as the stack declares it (created
    once: a secret_id the follower replaced stays), and its ``cert-sync-secret-id`` Role granted to
    the follower's ServiceAccount. Returns the Secret's namespace and name."""
    owned = k8s_object(recording, "Secret", "hub-secret-id")
    namespace, name = owned["metadata"]["namespace"], owned["metadata"]["name"]
    if kube.get_secret(namespace, name) is None:
        kube.put_secret(namespace, name, dict(owned["stringData"]))
        rule = k8s_object(recording, "Role", "cert-sync-secret-id")["rules"][0]
        for verb in rule["verbs"]:
            kube.allow_service_account(
                namespace, "cert-sync", [verb], ["secrets"], namespace=namespace, resource_names=rule["resourceNames"]
            )
    return namespace, name


def hub_cert_sync_options(recording: Recording) -> argparse.Namespace:
    """The hub's cert-sync command line as the program parses it (``secrets``: the ``--secret``
    specs, ``trust``: its ``TrustPlan``); only the Vault address is made up."""
    command = cert_sync_command(recording)
    if command[3] != "hub":
        raise ValueError(f"the {recording.stack} stack's cert-sync is not in hub mode")
    return sync.parse_args([*command[3:], "--vault-addr", "https://vault.invalid:8200"])


def hub_cert_sync_pass(
    recording: Recording,
    secrets: Mapping[str, Mapping[str, str]],
    stored: Mapping[str, Mapping[str, str] | None],
    now: dt.datetime,
) -> dict[str, dict[str, str]]:
    """One pass of the hub's cert-sync on Secrets (``name`` -> data, in the PKI namespace) and the KV
    as stored before it (``path`` -> data): what the pass writes, by KV path, as its own planning
    code (``plan_hub``) decides it. The caller keeps the KV: ``{**stored, **written}``."""
    options = hub_cert_sync_options(recording)
    sources = [sync.source_of(spec, dict(secrets[spec.name]), now) for spec in options.secrets]
    for refs in options.trust.bundles.values():
        for ref in refs:
            next(s for s in sources if s.spec.ref == ref).issuer()
    state = {path: KvState(1 if data else 0, dict(data) if data else None) for path, data in stored.items()}
    return {item.kv_path: item.bundle for item in sync.plan_hub(sources, options.trust, state, now)}


def cert_sync_invocation(
    recording: Recording,
    vault_url: str,
    ca_file: str,
    kube: KubeAPIServer,
    workdir: Path,
    *,
    passes: int | None = 1,
    trust_lead: float | None = None,
    poll: float | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of the stack's ``cert-sync`` CronJob (hub) or follower Deployment
    (edge) as its pod runs it: its command and environment, with only where Vault is (``vault_url``,
    the active node), the files its volumes mount and the Kubernetes API replaced. ``kube`` is the
    stack's own Kubernetes API
    (TokenReview for its Vault; on an edge also its secret_id Secret: :func:`edge_secret_id_on`).
    ``passes``: on the hub how many of the run's sync passes (``--passes``) to make, at the CronJob's
    interval; on an edge how many polls (``--polls``), at the Deployment's ``--poll``; one by default,
    a single sync; ``None``: all of them, as the pod does (on an edge: until stopped).
    ``trust_lead``: seconds instead of the hub command's ``--trust-lead`` (a test cannot wait five
    minutes); ``poll``: seconds instead of the edge command's ``--poll``."""
    kind = cert_sync_workload(recording)
    cronjob = k8s_object(recording, kind, "cert-sync")
    pod = pod_template(recording, kind, "cert-sync")["spec"]
    container = pod["containers"][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "CERT_SYNC_", "BAO_"))}
    env |= {e["name"]: e["value"] for e in container["env"]}
    workdir.mkdir(parents=True, exist_ok=True)
    jwt = workdir / f"{recording.stack}-jwt"
    write_private_file(
        jwt,
        kube.mint_service_account_token(
            cronjob["metadata"]["namespace"], pod["serviceAccountName"], audiences=["vault"]
        ),
    )
    env |= {"VAULT_ADDR": vault_url, "VAULT_CACERT": ca_file, "CERT_SYNC_JWT_FILE": str(jwt)}
    command = list(container["command"])
    if passes is not None and "--passes" in command:
        command[command.index("--passes") + 1] = str(passes)
    if trust_lead is not None and "--trust-lead" in command:  # the hub's command only
        command[command.index("--trust-lead") + 1] = str(trust_lead)
    if poll is not None and "--poll" in command:  # the edge's command only
        command[command.index("--poll") + 1] = str(poll)
    if command[3] == "hub":
        kube_token = workdir / "kube-token"
        write_private_file(kube_token, kube.mint_service_account_token("fedobs-cert-sync", "cert-sync"))
        command += ["--kube-api", kube.url, "--kube-token-file", str(kube_token), "--kube-ca-file", kube.ca_file]
    else:
        command = _edge_follower_command(recording, command, kube, workdir, passes)
    return [programs_python(), *command[1:]], env


def run_cert_sync(
    recording: Recording,
    vault_url: str,
    ca_file: str,
    kube: KubeAPIServer,
    workdir: Path,
    *,
    timeout: float = 90.0,
    passes: int | None = 1,
    trust_lead: float | None = None,
    poll: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run :func:`cert_sync_invocation` to its end (``timeout`` seconds at most)."""
    argv, env = cert_sync_invocation(
        recording, vault_url, ca_file, kube, workdir, passes=passes, trust_lead=trust_lead, poll=poll
    )
    return processes.run(argv, cwd=REPO, env=env, capture_output=True, timeout=timeout)


def start_cert_sync(
    recording: Recording, vault_url: str, ca_file: str, kube: KubeAPIServer, workdir: Path, **options: Any
) -> subprocess.Popen[str]:
    """Start :func:`cert_sync_invocation` in the background (the edge's follower, polling until it is
    stopped with SIGTERM: ``passes=None``); its output goes to ``workdir/cert-sync.log``."""
    argv, env = cert_sync_invocation(recording, vault_url, ca_file, kube, workdir, **options)
    log = open(workdir / "cert-sync.log", "w")  # noqa: SIM115 - the child writes it for its whole life
    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, preexec_fn=processes.child_setup
    )


def _edge_follower_command(
    recording: Recording, command: list[str], kube: KubeAPIServer, workdir: Path, polls: int | None
) -> list[str]:
    """The follower's command with the mounted files, the Kubernetes API and ``--polls`` localised."""
    credential = k8s_object(recording, "Secret", "hub-credential")["stringData"]
    mounted = workdir / "hub"
    mounted.mkdir(exist_ok=True)
    for key in ("role-id", "ca.crt"):
        write_private_file(mounted / key, credential[key])
    namespace, _ = edge_secret_id_on(recording, kube)
    kube_token = workdir / "edge-kube-token"
    write_private_file(kube_token, kube.mint_service_account_token(namespace, "cert-sync"))
    command = [
        str(mounted / part.removeprefix("/fedobs/hub/")) if part.startswith("/fedobs/hub/") else part
        for part in command
    ]
    command += ["--kube-api", kube.url, "--kube-token-file", str(kube_token), "--kube-ca-file", kube.ca_file]
    return command + (["--polls", str(polls)] if polls is not None else [])


def vso_login(edge: Recording, url: str, ca_file: str, kube: KubeAPIServer) -> tuple[ApiResponse, str]:
    """Log in as the edge's Vault Secrets Operator does for its ``VaultAuth`` (a token of the
    ServiceAccount and audiences it names); returns the login answer and the API path of what its
    ``VaultStaticSecret`` reads (``<mount>/data/<path>``)."""
    static = k8s_object(edge, "VaultStaticSecret", "otel-client-tls")["spec"]
    auth = k8s_object(edge, "VaultAuth", "vault")
    kubernetes = auth["spec"]["kubernetes"]
    jwt = kube.mint_service_account_token(
        auth["metadata"]["namespace"], kubernetes["serviceAccount"], audiences=kubernetes["audiences"]
    )
    login = api(
        url,
        "POST",
        f"auth/{auth['spec']['mount']}/login",
        ca_file=ca_file,
        body={"role": kubernetes["role"], "jwt": jwt},
    )
    return login, f"{static['mount']}/data/{static['path']}"
