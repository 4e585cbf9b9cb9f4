"""Vault Agent (the real ``bao agent``) run from a Pod template's injector annotations, as the
HashiCorp Vault Agent Injector would run it, for tests without a cluster.

:func:`agent_config_from_annotations` is the one place where annotations become an agent config.
It follows what the injector (hashicorp/vault-k8s, ``agent-inject/agent``) does with each
annotation it knows; every ``vault.hashicorp.com/*`` annotation it does not map raises
``ValueError``, so nothing the stack declares is silently ignored. The mapping:

==================================  ==============================================================
annotation                          agent config (HCL)
==================================  ==============================================================
``agent-inject``                    must be ``"true"`` (otherwise the injector injects nothing)
``role``                            ``auto_auth { method "kubernetes" { config { role } } }``
``auth-path``                       ``… method "kubernetes" { mount_path }`` (injector default
                                    ``auth/kubernetes``)
(the SA token volume)               ``… config { token_path = jwt_file }``: the injector points
                                    ``token_path`` at the projected token of
                                    ``agent-service-account-token-volume-name`` (audience
                                    ``vault``); here a token minted by the fake Kubernetes API
``agent-service-account-token-      accepted; only decides where the injector's ``token_path``
volume-name``                       points (``jwt_file`` here)
``service``                         ``vault { address }`` -- replaced by ``vault_addr``: the
                                    in-cluster address does not exist on this machine
``ca-cert``                         ``vault { ca_cert }`` -- the path (inside the ``tls-secret``
                                    mount, ``/vault/tls``) replaced by ``ca_file``
``tls-secret``                      accepted; the injector mounts that Secret at ``/vault/tls``
                                    (``ca_file`` stands for the mounted ``ca.crt``)
``tls-server-name``                 ``vault { tls_server_name }`` (kept: it is checked against the
                                    test server's certificate)
``agent-pre-populate-only``         ``"true"``: ``exit_after_auth = true`` (the injector's init
                                    container only: render once and exit); ``"false"``: the
                                    sidecar, ``exit_after_auth = false`` (continuous). The
                                    injector also runs an init container (``exit_after_auth =
                                    true``) before that sidecar: ``exit_after_auth_override=True``
                                    gives its config
``agent-revoke-on-shutdown``        nothing in the config: neither Vault Agent nor ``bao agent``
``agent-revoke-grace``              has a revoke-on-exit setting. The injector gives the SIDECAR
                                    a preStop hook ``sleep <grace> && vault token revoke
                                    -address=<service> [-ca-cert=<ca-cert>] -self``, the CLI
                                    reading the token the agent's file sink wrote to
                                    ``/home/vault/.vault-token`` (its ``$HOME``).
                                    :func:`pre_stop_revocation` returns that hook (``bao`` for
                                    ``vault``, ``home_dir`` for ``/home/vault``) and
                                    :func:`continuous_agent` runs it before SIGTERM, as the kubelet
                                    does. Pre-populate-only Pods have no sidecar and no hook:
                                    their token (and so their leases) is NOT revoked
``agent-inject-token``              ``"true"``: a second file ``sink`` at ``<secrets_dir>/token``
                                    (the injector's ``/vault/secrets/token``, vault-k8s
                                    ``agent-inject/agent/config.go``: same auto-auth token, in init
                                    container and sidecar alike), for the workload to revoke
``agent-run-as-same-user``          accepted; the injector runs the agent under the application's
                                    uid. Here agent and consumer run as the test's own user
``agent-inject-secret-<name>``      one ``template { destination = "<secrets_dir>/<name>" }``
                                    (``<name>`` lower-cased as the injector does); the value is
                                    the Vault path the template reads
``agent-inject-template-<name>``    ``template { contents }`` (required here: the injector's
                                    default ``key: value`` template is not a format the project's
                                    loader reads, so a missing template is refused)
``agent-inject-perms-<name>``       ``template { perms }``
``agent-auto-auth-exit-on-err``     ``auto_auth { method { exit_on_err } }``, only when true (the
                                    injector's ``omitempty``); default false
``auth-min-backoff``                ``… method { min_backoff }`` / ``max_backoff`` (absent: not
``auth-max-backoff``                written, the agent's 1 s / 5 min); a Go duration with a unit,
                                    as the injector's ``time.ParseDuration`` check demands. The
                                    agent also takes them as the template engine's retry backoff
                                    (:func:`template_retry_sleeps`)
``template-config-exit-on-retry-    ``template_config { exit_on_retry_failure }``; default true
failure``                           (the injector's flag of that name, whose default the chart's
                                    ``agentDefaults.templateConfig.exitOnRetryFailure: true``
                                    keeps, fills the annotation in when a Pod has none)
(consistency)                       refused: a template that does not read the path its
                                    ``agent-inject-secret-<name>`` names (the injector would
                                    render it anyway; the annotation would then mislead)
==================================  ==============================================================

Always added, as in the injector's generated config: ``pid_file`` and a file ``sink`` at
``<home_dir>/.vault-token`` (the injector's ``/home/vault/.pid`` and ``/home/vault/.vault-token``),
``left_delimiter``/``right_delimiter`` ``{{``/``}}``. Nothing is added beyond it: in particular no
``vault { retry }`` block, which the injector never writes.

**Failure behaviour comes from the annotations alone** (sources: hashicorp/vault-k8s v1.7.6, commit
fbc5b1f0cd4d1c7dd5a8830e32c8ed636d7318d7, ``agent-inject/agent/``; the agent's side in
openbao/openbao commit df6ce2cebaa823979215c116a16820aa913fe3b1, the same code in hashicorp/vault
``command/agent``):

* ``config.go:233-275`` (``newConfig``) is the whole config, for the init container
  (``exit_after_auth = true``) and the sidecar alike. Its ``VaultConfig`` (``config.go:41-49``)
  has no ``retry`` field, so the agent's ``vault.retry.num_retries`` is always its default, 12.
  ``Method.ExitOnErr``/``MinBackoff``/``MaxBackoff`` (``config.go:63-67``, ``omitempty``) come
  from ``agent-auto-auth-exit-on-err`` (``annotations.go:333-334``, ``883-889``; default
  ``DefaultAutoAuthEnableOnExit = false``, ``agent.go:39``) and ``auth-min-backoff``/
  ``auth-max-backoff`` (``annotations.go:307-313``, checked with ``time.ParseDuration`` at
  ``562-584``, read at ``agent.go:416-417``; the injector's own ``-auth-min/max-backoff`` flags
  default to empty, ``subcommand/injector/flags.go:223-226``). ``TemplateConfig.ExitOnRetryFailure``
  (``config.go:125``, always written) comes from ``template-config-exit-on-retry-failure``
  (``annotations.go:283-286``, ``550-552``, ``856-862``; ``DefaultTemplateConfigExitOnRetryFailure =
  true``, ``agent.go:36``).
* ``client-max-retries`` (``annotations.go:225-226``) only becomes ``VAULT_MAX_RETRIES`` in the
  agent's environment (``container_env.go:59-64``): the HTTP client's retries of 5xx answers
  (``internal/command/agent.go:367-374``), not the template engine's retries of a 403; not mapped.
* Auto-auth (``internal/command/agentproxyshared/auth/auth.go:116-130``): with ``exit_on_err`` a
  failed login (refused role, TLS name mismatch, Vault unreachable) returns at once and the agent
  exits non-zero with the error; without it the login is retried forever, the pause doubling from
  ``min_backoff`` (1 s) to ``max_backoff`` (5 min) (``auth.go:22-23``, ``535-543``). OpenBao refuses
  ``min_backoff >= max_backoff`` (``auth.go:143-145``).
* Templates (``internal/command/agent/internal/ctmanager/runner_config.go:61-66, 94-110``): a read
  that fails (e.g. 403, a path outside the role's policy) is retried ``num_retries`` (12) times,
  the pauses starting at ``min_backoff`` (else 250 ms) and doubling up to ``max_backoff`` (else
  1 min) (openbao/openbao-template ``config/retry.go:12-22``, ``110-135``;
  :func:`template_retry_sleeps`); then, with ``exit_on_retry_failure``, the agent exits non-zero.
  With no backoff annotation that is 303.75 s of pauses: measured once (not in the suite) with
  ``bao agent`` 2.7.2 on the denied-path case without the backoff annotations, exit 1 after 304.3 s,
  the logged pauses exactly the model's 0.25 s doubling to 1 min.

So what a failure costs is decided by the annotations the stack sets
(``components.agent_injector.PRE_POPULATE_FAILURE``), and the tests measure exactly that.

:func:`select_injected_secrets` keeps only some of a Pod's injected files (all their annotations,
nothing else changed), for a run that has only some of the declared backends (``make demo`` without
MariaDB or AWS).

Running: :func:`run_agent` (pre-populate: wait for the exit) and :func:`continuous_agent` (a
context manager: starts the agent, and on the way out runs the preStop hook if given, then
SIGTERM, then SIGKILL after a deadline; the agent is always dead afterwards and dies with the test
process too, through ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rig import processes
from rig.openbao import bao_binary

__all__ = [
    "DEFAULT_REVOKE_GRACE",
    "PREFIX",
    "PreStop",
    "RunningAgent",
    "agent_config_from_annotations",
    "continuous_agent",
    "pre_stop_revocation",
    "run_agent",
    "select_injected_secrets",
    "template_retry_sleeps",
]

PREFIX = "vault.hashicorp.com/"
#: The injector's ``DefaultRevokeGrace`` (seconds), used when ``agent-revoke-grace`` is not set.
DEFAULT_REVOKE_GRACE = 5
_DEFAULT_AUTH_PATH = "auth/kubernetes"
#: The injector's defaults when the annotation is absent (vault-k8s ``agent-inject/agent/agent.go:36,39``).
_DEFAULT_EXIT_ON_RETRY_FAILURE = True
_DEFAULT_AUTO_AUTH_EXIT_ON_ERR = False
#: The agent's template retries with no ``vault.retry`` (the injector writes none) and no backoff
#: annotations: openbao-template ``config/retry.go:12-22`` (attempts, base, cap in seconds).
_TEMPLATE_RETRY_ATTEMPTS = 12
_TEMPLATE_RETRY_BACKOFF = 0.25
_TEMPLATE_RETRY_MAX_BACKOFF = 60.0
#: A Go ``time.Duration`` as ``time.ParseDuration`` reads it (units required: the injector refuses
#: a bare number), e.g. ``500ms``, ``2s``, ``1m30s``.
_GO_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

#: Pod-wide annotations the mapping knows (without the prefix).
_POD_KEYS = frozenset(
    {
        "agent-inject",
        "role",
        "auth-path",
        "service",
        "ca-cert",
        "tls-secret",
        "tls-server-name",
        "agent-pre-populate-only",
        "agent-revoke-on-shutdown",
        "agent-revoke-grace",
        "agent-run-as-same-user",
        "agent-service-account-token-volume-name",
        "agent-inject-token",
        "agent-auto-auth-exit-on-err",
        "auth-min-backoff",
        "auth-max-backoff",
        "template-config-exit-on-retry-failure",
    }
)
#: Per-secret annotations (``<key>-<name>``) the mapping knows.
_SECRET_KEYS = ("agent-inject-secret", "agent-inject-template", "agent-inject-perms")
#: Per-secret injector annotations that would change the files and are not mapped: refused by name
#: (checked first, since e.g. ``agent-inject-template-file-x`` also starts like a template key).
_UNMAPPED_SECRET_KEYS = (
    "agent-inject-template-file",
    "agent-inject-file",
    "agent-inject-command",
    "agent-template-left-delim",
    "agent-template-right-delim",
    "error-on-missing-key",
    "preserve-secret-case",
    "secret-volume-path",
)
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # Go's strconv.ParseBool, as the injector
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_PERMS = re.compile(r"0?[0-7]{3}")


@dataclass(frozen=True)
class _Secret:
    name: str
    path: str
    template: str
    perms: str | None


def _bool(annotations: Mapping[str, str], key: str, default: bool) -> bool:
    raw = annotations.get(PREFIX + key)
    if raw is None:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{PREFIX}{key}: {raw!r} is not a boolean")


def _split(annotations: Mapping[str, str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Pod-wide annotations and per-secret ones (``{name: {key: value}}``); refuses unknown ones."""
    pod: dict[str, str] = {}
    secrets: dict[str, dict[str, str]] = {}
    for full, value in annotations.items():
        if not full.startswith(PREFIX):
            continue  # not the injector's
        key = full.removeprefix(PREFIX)
        if key in _POD_KEYS:
            pod[key] = value
            continue
        unmapped = next((u for u in _UNMAPPED_SECRET_KEYS if key.startswith(u + "-") or key == u), None)
        secret_key = next((s for s in _SECRET_KEYS if key.startswith(s + "-")), None)
        if unmapped is not None or secret_key is None:
            raise ValueError(
                f"annotation {full!r} is not mapped to the agent config by rig.agent; "
                "map it (with the injector's documented meaning) before using it"
            )
        name = key.removeprefix(secret_key + "-")
        if not name:
            raise ValueError(f"annotation {full!r} names no secret")
        secrets.setdefault(name, {})[secret_key] = value
    return pod, secrets


def _duration(annotations: Mapping[str, str], key: str) -> float | None:
    """A Go-duration annotation in seconds (``None`` if absent), refused as the injector refuses it."""
    raw = annotations.get(PREFIX + key)
    if raw is None:
        return None
    if not re.fullmatch(f"(?:{_GO_DURATION.pattern})+", raw):
        raise ValueError(f"{PREFIX}{key}: {raw!r} is not a Go duration with a unit (e.g. 500ms, 2s)")
    return sum(
        float(m.group(1)) * _GO_UNIT_SECONDS[m.group(2)]
        for m in re.finditer(r"([0-9]*\.?[0-9]*)(ns|us|µs|μs|ms|s|m|h)", raw)
    )


def template_retry_sleeps(annotations: Mapping[str, str]) -> tuple[float, ...]:
    """The pauses (seconds) of the agent's template engine between the attempts of a read that keeps
    failing, before it gives up (and, with ``exit_on_retry_failure``, the agent exits): 12 retries
    (the injector writes no ``vault.retry``), base ``auth-min-backoff`` (else 250 ms) doubling up to
    ``auth-max-backoff`` (else 1 min). openbao ``ctmanager/runner_config.go:61-66, 94-110`` and
    openbao-template ``config/retry.go:110-135`` (``RetryFunc``), transcribed."""
    base = _duration(annotations, "auth-min-backoff") or _TEMPLATE_RETRY_BACKOFF
    cap = _duration(annotations, "auth-max-backoff") or _TEMPLATE_RETRY_MAX_BACKOFF
    until_cap = int(math.log2(cap / base))
    return tuple(cap if retry > until_cap else 2**retry * base for retry in range(_TEMPLATE_RETRY_ATTEMPTS))


def select_injected_secrets(annotations: Mapping[str, str], names: Collection[str]) -> dict[str, str]:
    """``annotations`` without the per-secret annotations (``agent-inject-secret/-template/-perms-<name>``)
    of every injected file not in ``names``; ``ValueError`` if a name is not injected at all."""
    _, per_secret = _split(annotations)
    missing = sorted(set(names) - set(per_secret))
    if missing:
        raise ValueError(f"no agent-inject-secret annotation for {missing} (injected: {sorted(per_secret)})")
    dropped = {PREFIX + f"{key}-{name}" for name in per_secret if name not in names for key in _SECRET_KEYS}
    return {key: value for key, value in annotations.items() if key not in dropped}


def _secrets(per_secret: Mapping[str, Mapping[str, str]]) -> list[_Secret]:
    found: list[_Secret] = []
    for name, keys in sorted(per_secret.items()):
        path = keys.get("agent-inject-secret", "").strip()
        if not path:
            raise ValueError(f"{PREFIX}agent-inject-template/perms-{name} without {PREFIX}agent-inject-secret-{name}")
        template = keys.get("agent-inject-template")
        if not template:
            raise ValueError(
                f"{PREFIX}agent-inject-secret-{name} has no agent-inject-template-{name}: the "
                "injector's default template is not a format programs.credentials reads"
            )
        if f'"{path}"' not in template:
            raise ValueError(f"agent-inject-template-{name} does not read the path its secret annotation names")
        perms = keys.get("agent-inject-perms")
        if perms is not None and not _PERMS.fullmatch(perms):
            raise ValueError(f"{PREFIX}agent-inject-perms-{name}: {perms!r} is not an octal file mode")
        found.append(_Secret(name.lower(), path, template, perms))
    if not found:
        raise ValueError("no agent-inject-secret-<name> annotation: the agent would render nothing")
    return found


def _hcl(value: str | bool | int) -> str:
    """An HCL literal. Strings are JSON-quoted (HCL 1 reads the same escapes); ``${`` is refused, since
    HCL 1 treats it specially inside quoted strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if "${" in value:
        raise ValueError("a value containing '${' cannot be passed through the agent's HCL config unchanged")
    return json.dumps(value)


def _home(secrets_dir: str, home_dir: str | None) -> str:
    return home_dir if home_dir is not None else str(Path(secrets_dir).parent / "home")


def agent_config_from_annotations(
    annotations: Mapping[str, str],
    *,
    vault_addr: str,
    ca_file: str,
    jwt_file: str,
    secrets_dir: str,
    home_dir: str | None = None,
    exit_after_auth_override: bool | None = None,
) -> str:
    """The ``bao agent`` HCL config the injector would give a Pod with these ``annotations``
    (mapping and the deliberate replacements: module docstring).

    ``vault_addr``/``ca_file``/``jwt_file`` stand for the in-cluster address, the ``tls-secret``
    mount's ``ca.crt`` and the projected service-account token; ``secrets_dir`` for
    ``/vault/secrets``; ``home_dir`` (default ``<secrets_dir>/../home``) for ``/home/vault``.
    ``exit_after_auth_override``: ``None`` follows ``agent-pre-populate-only``; ``True`` gives the
    injector's init container, ``False`` a sidecar.
    """
    pod, per_secret = _split(annotations)
    if pod.get("agent-inject") not in _TRUE:
        raise ValueError(f'{PREFIX}agent-inject is not "true": the injector would inject no agent')
    role = pod.get("role", "")
    if not role:
        raise ValueError(f"{PREFIX}role is required for kubernetes auto-auth")
    if not pod.get("service"):
        raise ValueError(f"{PREFIX}service (the Vault address) is missing")
    secrets = _secrets(per_secret)
    pre_populate_only = _bool(annotations, "agent-pre-populate-only", False)
    _bool(annotations, "agent-revoke-on-shutdown", False)  # validated; see pre_stop_revocation
    _bool(annotations, "agent-run-as-same-user", False)
    inject_token = _bool(annotations, "agent-inject-token", False)
    exit_on_err = _bool(annotations, "agent-auto-auth-exit-on-err", _DEFAULT_AUTO_AUTH_EXIT_ON_ERR)
    exit_on_retry_failure = _bool(annotations, "template-config-exit-on-retry-failure", _DEFAULT_EXIT_ON_RETRY_FAILURE)
    exit_after_auth = pre_populate_only if exit_after_auth_override is None else exit_after_auth_override
    home = _home(secrets_dir, home_dir)

    vault = [f"  address = {_hcl(vault_addr)}"]
    if "ca-cert" in pod:
        vault.append(f"  ca_cert = {_hcl(ca_file)}")
    if pod.get("tls-server-name"):
        vault.append(f"  tls_server_name = {_hcl(pod['tls-server-name'])}")
    lines = [
        "# Generated by rig.agent.agent_config_from_annotations from injector annotations.",
        f"pid_file = {_hcl(str(Path(home) / '.pid'))}",
        f"exit_after_auth = {_hcl(exit_after_auth)}",
        "",
        "vault {",
        *vault,
        "}",
        "",
        "auto_auth {",
        '  method "kubernetes" {',
        f"    mount_path = {_hcl(pod.get('auth-path') or _DEFAULT_AUTH_PATH)}",
        *_method_failure(annotations, exit_on_err),
        "    config = {",
        f"      role = {_hcl(role)}",
        f"      token_path = {_hcl(jwt_file)}",
        "    }",
        "  }",
        '  sink "file" {',
        "    config = {",
        f"      path = {_hcl(str(Path(home) / '.vault-token'))}",
        "    }",
        "  }",
        *_token_sink(secrets_dir, inject_token),
        "}",
        "",
        "template_config {",
        f"  exit_on_retry_failure = {_hcl(exit_on_retry_failure)}",
        "}",
    ]
    for secret in secrets:
        lines += [
            "",
            "template {",
            f"  destination = {_hcl(str(Path(secrets_dir) / secret.name))}",
            f"  contents = {_hcl(secret.template)}",
            f"  left_delimiter = {_hcl('{{')}",
            f"  right_delimiter = {_hcl('}}')}",
        ]
        if secret.perms is not None:
            lines.append(f"  perms = {_hcl(secret.perms)}")
        lines.append("}")
    return "\n".join(lines) + "\n"


def _method_failure(annotations: Mapping[str, str], exit_on_err: bool) -> list[str]:
    """``exit_on_err`` (written only when true, as the injector's ``omitempty``) and the backoff
    bounds the annotations give (none written when absent)."""
    lines = ["    exit_on_err = true"] if exit_on_err else []
    for key, setting in (("auth-min-backoff", "min_backoff"), ("auth-max-backoff", "max_backoff")):
        if _duration(annotations, key) is not None:
            lines.append(f"    {setting} = {_hcl(annotations[PREFIX + key])}")
    return lines


def _token_sink(secrets_dir: str, inject_token: bool) -> list[str]:
    """The injector's second file sink for ``agent-inject-token`` (none without it)."""
    if not inject_token:
        return []
    path = str(Path(secrets_dir) / "token")
    return ['  sink "file" {', "    config = {", f"      path = {_hcl(path)}", "    }", "  }"]


@dataclass(frozen=True)
class PreStop:
    """The injector's preStop hook for a sidecar with ``agent-revoke-on-shutdown``: sleep
    ``grace_seconds``, then run ``argv`` (``bao token revoke -address=… [-ca-cert=…] -self``) with
    ``HOME=home_dir``, so the CLI reads the token the agent's sink wrote to ``~/.vault-token``."""

    grace_seconds: float
    argv: tuple[str, ...]
    home_dir: str


def pre_stop_revocation(
    annotations: Mapping[str, str], *, vault_addr: str, ca_file: str, secrets_dir: str, home_dir: str | None = None
) -> PreStop | None:
    """The preStop hook the injector gives the agent sidecar (``None``: no hook, i.e. without
    ``agent-revoke-on-shutdown`` or with ``agent-pre-populate-only``, which has no sidecar)."""
    pod, _ = _split(annotations)
    if not _bool(annotations, "agent-revoke-on-shutdown", False):
        return None
    if _bool(annotations, "agent-pre-populate-only", False):
        return None
    grace_raw = pod.get("agent-revoke-grace", str(DEFAULT_REVOKE_GRACE))
    if not grace_raw.isdigit():
        raise ValueError(f"{PREFIX}agent-revoke-grace: {grace_raw!r} is not a whole number of seconds")
    argv = [bao_binary(), "token", "revoke", f"-address={vault_addr}"]
    if "ca-cert" in pod:
        argv.append(f"-ca-cert={ca_file}")
    argv.append("-self")
    return PreStop(float(grace_raw), tuple(argv), _home(secrets_dir, home_dir))


# --------------------------------------------------------------------------------------------------
# running the agent
# --------------------------------------------------------------------------------------------------
def _environment(env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without ``BAO_*``/``VAULT_*`` (they would override the config), plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    base["BAO_LOG_FORMAT"] = "standard"
    base.update(env)
    return base


def _write_config(config_text: str, workdir: Path, name: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.write_text(config_text)
    path.chmod(0o600)
    return path


def _prepare_dirs(config_text: str) -> None:
    """Create the pid/sink directory the config names (the injector's ``/home/vault`` volume)."""
    for match in re.finditer(r'^(?:pid_file|\s+path) = "([^"]+)"$', config_text, re.MULTILINE):
        Path(json.loads(f'"{match.group(1)}"')).parent.mkdir(parents=True, exist_ok=True, mode=0o700)


def run_agent(
    config_text: str, workdir: str | os.PathLike[str], env: Mapping[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``bao agent -config=<workdir>/agent.hcl`` to its exit (pre-populate mode); stdout and
    stderr together in ``.stdout``. ``subprocess.TimeoutExpired`` (the agent killed) after ``timeout``."""
    config = _write_config(config_text, Path(workdir), "agent.hcl")
    _prepare_dirs(config_text)
    return processes.run(
        [bao_binary(), "agent", f"-config={config}"],
        cwd=workdir,
        env=_environment(env or {}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
    )


@dataclass
class RunningAgent:
    """A continuous-mode agent started by :func:`continuous_agent`."""

    process: subprocess.Popen[bytes]
    log_path: Path
    config_path: Path
    pre_stop_result: subprocess.CompletedProcess[str] | None = None
    exit_code: int | None = None
    stopped_at: float | None = field(default=None)

    def running(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _kill(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    process.wait(timeout=10)


@contextlib.contextmanager
def continuous_agent(
    config_text: str,
    workdir: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    pre_stop: PreStop | None = None,
    stop_timeout: float = 10.0,
    pre_stop_timeout: float = 15.0,
) -> Iterator[RunningAgent]:
    """Start ``bao agent`` (output in ``<workdir>/agent.log``) and yield it. On the way out, as the
    kubelet stops a container: ``pre_stop`` (if given and the agent still runs), then SIGTERM, then
    SIGKILL after ``stop_timeout``. The agent never outlives the block; if the block raised, its
    log is printed to stderr (pytest shows it with the failure)."""
    directory = Path(workdir)
    config = _write_config(config_text, directory, "agent.hcl")
    _prepare_dirs(config_text)
    log_path = directory / "agent.log"
    environment = _environment(env or {})
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [bao_binary(), "agent", f"-config={config}"],
            cwd=directory,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=processes.child_setup,
        )
    agent = RunningAgent(process, log_path, config)
    failed = False
    try:
        yield agent
    except BaseException:
        failed = True
        raise
    finally:
        try:
            if pre_stop is not None and agent.running() and not failed:
                time.sleep(pre_stop.grace_seconds)
                agent.pre_stop_result = processes.run(
                    list(pre_stop.argv),
                    env=_environment({"HOME": pre_stop.home_dir}),
                    cwd=directory,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=pre_stop_timeout,
                )
        finally:
            _kill(process, stop_timeout)
            agent.exit_code = process.returncode
            agent.stopped_at = time.monotonic()
            if failed:
                print(f"bao agent log ({log_path}):\n{agent.log_text()}", file=sys.stderr)
