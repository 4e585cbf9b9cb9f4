"""``programs.credentials`` (the loader of rendered credential files) and
``rig.agent.agent_config_from_annotations`` (injector annotations -> ``bao agent`` config),
pinned to what ``components.agent_injector`` produces."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

from components.agent_injector import (
    PRE_POPULATE_FAILURE,
    PREFIX,
    InjectedCredential,
    InjectorTarget,
    injector_annotations,
    render_template,
)
from offline.engine import Recording
from programs import credentials
from programs.vault_http import ServerUnreachable
from rig.agent import (
    DEFAULT_REVOKE_GRACE,
    agent_config_from_annotations,
    pre_stop_revocation,
    template_retry_sleeps,
)
from rig.pki import TestCA

SECRET = "s3cr3t-Pa55word-that-must-not-leak"


def write(path: Path, text: str | bytes, mode: int = 0o400) -> Path:
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    path.chmod(mode)
    return path


# --------------------------------------------------------------------------------------------------
# programs.credentials
# --------------------------------------------------------------------------------------------------
def test_dotenv_in_the_rendered_format_is_loaded(tmp_path: Path) -> None:
    path = write(tmp_path / "db", f"DB_USERNAME='v-kubernetes-readonly-x1'\nDB_PASSWORD='{SECRET}'\n")
    assert credentials.load_dotenv(path) == {"DB_USERNAME": "v-kubernetes-readonly-x1", "DB_PASSWORD": SECRET}
    assert credentials.load(path) == credentials.load_dotenv(path)
    no_final_newline = write(tmp_path / "aws", "AWS_ACCESS_KEY_ID='AKIA'\nAWS_SESSION_TOKEN=''", 0o600)
    assert credentials.load_dotenv(no_final_newline) == {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SESSION_TOKEN": ""}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (f"A='x'\n\nB='{SECRET}'\n", 2),  # blank line
        (f"# comment {SECRET}\n", 1),
        (f"export A='{SECRET}'\n", 1),
        (f'A="{SECRET}"\n', 1),  # double quotes
        (f"A={SECRET}\n", 1),  # unquoted
        (f"A='x'\nB='{SECRET}'x'\n", 2),  # a quote inside the value
        (f"A='{SECRET}' \n", 1),  # trailing space
        (f" A='{SECRET}'\n", 1),  # leading space
        (f"1A='{SECRET}'\n", 1),  # not a variable name
        (f"A='x'\r\nB='{SECRET}'\r\n", 1),  # CRLF
        (f"A='{SECRET}'\nA='other'\n", 2),  # repeated key
        (f"A='x'\nB='$(touch /tmp/pwned){SECRET}\n", 2),  # unterminated
    ],
)
def test_anything_else_is_refused_by_line_number_without_its_content(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path / "db", text)
    with pytest.raises(ValueError, match=rf"line {line}\b") as refused:
        credentials.load_dotenv(path)
    assert SECRET not in str(refused.value) and "pwned" not in str(refused.value)
    assert refused.value.__cause__ is None and refused.value.__context__ is None


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        credentials.load_dotenv(write(tmp_path / "db", "\n"))


@pytest.mark.parametrize("mode", [0o440, 0o404, 0o640, 0o604, 0o410, 0o401, 0o644, 0o666])
def test_files_group_or_others_may_access_are_refused_before_reading(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "db", f"A='{SECRET}'\n", mode)
    for loader in (credentials.load_dotenv, credentials.load_json, credentials.load):
        with pytest.raises(ValueError, match=f"mode {mode:04o}") as refused:
            loader(path)
        assert "private to their owner" in str(refused.value) and SECRET not in str(refused.value)


@pytest.mark.parametrize("mode", [0o400, 0o600, 0o500])
def test_owner_only_files_are_accepted(tmp_path: Path, mode: int) -> None:
    assert credentials.load(write(tmp_path / "db", "A='b'\n", mode)) == {"A": "b"}


def test_symlinks_missing_files_and_directories_are_refused(tmp_path: Path) -> None:
    target = write(tmp_path / "real", "A='b'\n")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(ValueError, match="cannot open"):
        credentials.load(tmp_path / "link")
    with pytest.raises(ValueError, match="cannot open"):
        credentials.load(tmp_path / "missing")
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(ValueError, match="not a regular file"):
        credentials.load(tmp_path / "dir")


def test_json_objects_are_loaded_and_anything_else_refused(tmp_path: Path) -> None:
    data = {"username": "v-kubernetes-results-r-x", "password": SECRET}
    path = write(tmp_path / "results", json.dumps(data) + "\n")
    assert credentials.load_json(path) == data
    assert credentials.load(path) == data
    for text, message in (
        (json.dumps([SECRET]), "not an object"),
        ('{"password": "' + SECRET, "not valid JSON"),
        (f"{{{SECRET}}}", "not valid JSON"),
    ):
        with pytest.raises(ValueError, match=message) as refused:
            credentials.load_json(write(tmp_path / "bad", text, 0o600))
        assert SECRET not in str(refused.value)
        assert refused.value.__cause__ is None and refused.value.__context__ is None


def test_load_chooses_the_format_by_content(tmp_path: Path) -> None:
    assert credentials.load(write(tmp_path / "a", '  {"a": 1}')) == {"a": 1}
    assert credentials.load(write(tmp_path / "b", "A='1'\n")) == {"A": "1"}
    with pytest.raises(ValueError, match="line 1"):
        credentials.load(write(tmp_path / "c", "[1]"))


def test_non_utf8_is_refused_without_its_bytes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not UTF-8") as refused:
        credentials.load(write(tmp_path / "a", b"A='\xff\xfe'\n"))
    assert "xff" not in str(refused.value)


def test_the_loader_never_executes_anything() -> None:
    tree = ast.parse(Path(credentials.__file__).read_text())
    imported = {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom) for alias in node.names
    } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"subprocess", "shlex", "runpy", "importlib", "pickle", "ctypes"}, imported
    names = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not names & {"exec", "eval", "compile", "__import__", "open"}, names
    methods = {
        node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert not {m for m in methods if m.startswith(("exec", "spawn", "popen", "system"))}, methods


# --------------------------------------------------------------------------------------------------
# rig.agent
# --------------------------------------------------------------------------------------------------
SETTINGS = InjectorTarget(
    role="notebook-validation",
    vault_address="https://vault-active.vault.svc:8200",
    tls_server_name="vault-active.vault.svc",
)
FILES = (
    InjectedCredential("db", "database/creds/readonly", "database", "dotenv", "DB_"),
    InjectedCredential("results", "database/creds/results-readonly", "database", "json"),
    InjectedCredential("aws", "aws/creds/s3-readonly", "aws", "dotenv"),
)
PATHS: dict[str, Any] = {
    "vault_addr": "https://127.0.0.1:8200",
    "ca_file": "/t/ca.crt",
    "jwt_file": "/t/jwt",
    "secrets_dir": "/t/pod/secrets",
}


def parse(text: str) -> dict[str, Any]:
    parsed: dict[str, Any] = hcl2.loads(
        text, serialization_options=SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
    )
    parsed.pop("__comments__", None)
    return parsed


def config(annotations: dict[str, str], **overrides: Any) -> dict[str, Any]:
    return parse(agent_config_from_annotations(annotations, **{**PATHS, **overrides}))


@pytest.mark.parametrize("run_to_completion", [True, False])
def test_the_project_annotations_map_to_the_documented_config(run_to_completion: bool) -> None:
    annotations = injector_annotations(SETTINGS, FILES, run_to_completion=run_to_completion)
    assert config(annotations) == {
        "pid_file": "/t/pod/home/.pid",
        "exit_after_auth": run_to_completion,
        "vault": [
            {
                "address": "https://127.0.0.1:8200",
                "ca_cert": "/t/ca.crt",
                "tls_server_name": "vault-active.vault.svc",
            }
        ],
        "auto_auth": [
            {
                "method": [
                    {
                        "kubernetes": {
                            "mount_path": "auth/kubernetes",
                            # Jobs: the stack's PRE_POPULATE_FAILURE; sidecars: the injector's defaults
                            **(
                                {"exit_on_err": True, "min_backoff": "500ms", "max_backoff": "2s"}
                                if run_to_completion
                                else {}
                            ),
                            "config": {"role": "notebook-validation", "token_path": "/t/jwt"},
                        }
                    }
                ],
                # agent-inject-token (Jobs): the injector's second sink, /vault/secrets/token
                "sink": [{"file": {"config": {"path": "/t/pod/home/.vault-token"}}}]
                + ([{"file": {"config": {"path": "/t/pod/secrets/token"}}}] if run_to_completion else []),
            }
        ],
        "template_config": [{"exit_on_retry_failure": True}],
        "template": [
            {
                "destination": f"/t/pod/secrets/{c.name}",
                "contents": render_template(c),
                "left_delimiter": "{{",
                "right_delimiter": "}}",
                "perms": "0400",
            }
            for c in sorted(FILES, key=lambda c: c.name)
        ],
    }


def test_failure_settings_come_from_the_annotations_with_the_injectors_defaults() -> None:
    """No setting the injector would not write: without the failure annotations there is no
    exit_on_err, no backoff and no vault.retry; template_config.exit_on_retry_failure defaults to true
    (vault-k8s agent.go:36,39); the annotations, when present, are what the config says."""
    job = injector_annotations(SETTINGS, FILES, run_to_completion=True)
    bare = {k: v for k, v in job.items() if k.removeprefix(PREFIX) not in PRE_POPULATE_FAILURE}
    assert len(bare) == len(job) - 4
    method = config(bare)["auto_auth"][0]["method"][0]["kubernetes"]
    assert not {"exit_on_err", "min_backoff", "max_backoff"} & set(method)
    assert "retry" not in config(bare)["vault"][0]
    assert config(bare)["template_config"] == [{"exit_on_retry_failure": True}]
    off = bare | {
        PREFIX + "template-config-exit-on-retry-failure": "false",
        PREFIX + "agent-auto-auth-exit-on-err": "0",
    }
    assert config(off)["template_config"] == [{"exit_on_retry_failure": False}]
    assert "exit_on_err" not in config(off)["auto_auth"][0]["method"][0]["kubernetes"]
    for value in ("5", "2 s", "two"):  # the injector's time.ParseDuration refuses these (missing unit, space)
        with pytest.raises(ValueError, match="not a Go duration"):
            config(job | {PREFIX + "auth-max-backoff": value})
    with pytest.raises(ValueError, match="not a boolean"):
        config(job | {PREFIX + "agent-auto-auth-exit-on-err": "yes"})


def test_template_retry_sleeps_follow_the_agents_retry_function() -> None:
    # openbao-template config/retry.go RetryFunc: base * 2^retry, the cap once past log2(cap/base)
    assert template_retry_sleeps({}) == (0.25, 0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60, 60)
    assert sum(template_retry_sleeps({})) == 303.75
    job = injector_annotations(SETTINGS, FILES, run_to_completion=True)
    assert template_retry_sleeps(job) == (0.5, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2)
    assert sum(template_retry_sleeps(job)) == 21.5
    assert template_retry_sleeps({PREFIX + "auth-min-backoff": "1s", PREFIX + "auth-max-backoff": "1m30s"})[-1] == 90


def test_exit_after_auth_can_be_overridden_for_the_init_container_or_a_sidecar() -> None:
    sidecar = injector_annotations(SETTINGS, FILES, run_to_completion=False)
    job = injector_annotations(SETTINGS, FILES, run_to_completion=True)
    assert config(sidecar, exit_after_auth_override=True)["exit_after_auth"] is True
    assert config(job, exit_after_auth_override=False)["exit_after_auth"] is False
    assert (
        config(job, home_dir="/t/home-init")["auto_auth"][0]["sink"][0]["file"]["config"]["path"]
        == "/t/home-init/.vault-token"
    )


def test_every_annotation_the_project_produces_is_mapped() -> None:
    for run_to_completion in (True, False):
        annotations = injector_annotations(SETTINGS, FILES, run_to_completion=run_to_completion)
        assert all(key.startswith(PREFIX) for key in annotations)
        agent_config_from_annotations(annotations, **PATHS)  # raises on any annotation it does not map


@pytest.mark.parametrize(
    "unknown",
    [
        "agent-cache-enable",
        "agent-inject-file-db",
        "agent-inject-template-file-db",
        "agent-inject-command-db",
        "agent-inject-containers",
        "namespace",
        "tls-skip-verify",
        "auth-config-token-path",
        "agent-init-first",
        "agent-inject-status",
        "preserve-secret-case-db",
        "secret-volume-path",
        "agent-inject-default-template",
    ],
)
def test_an_unknown_injector_annotation_is_refused_by_name(unknown: str) -> None:
    annotations = injector_annotations(SETTINGS, FILES, run_to_completion=True) | {PREFIX + unknown: "x"}
    with pytest.raises(ValueError, match=f"'{PREFIX}{unknown}' is not mapped"):
        agent_config_from_annotations(annotations, **PATHS)


def test_annotations_of_others_are_left_alone() -> None:
    annotations = injector_annotations(SETTINGS, FILES, run_to_completion=True) | {
        "kubectl.kubernetes.io/restartedAt": "now",
        "prometheus.io/scrape": "true",
    }
    assert config(annotations)["exit_after_auth"] is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"agent-inject": "false"}, "agent-inject is not"),
        ({"agent-inject": None}, "agent-inject is not"),
        ({"role": ""}, "role is required"),
        ({"service": None}, "service"),
        ({"agent-pre-populate-only": "yes"}, "not a boolean"),
        ({"agent-inject-perms-db": "rw"}, "not an octal file mode"),
        ({"agent-inject-template-db": None}, "has no agent-inject-template-db"),
        ({"agent-inject-secret-db": None}, "without"),
        ({"agent-inject-template-db": '{{ with secret "database/creds/other" }}{{ end }}'}, "does not read the path"),
        ({"agent-inject-template-db": '{{ with secret "database/creds/readonly" }}${x}{{ end }}'}, r"\$\{"),
    ],
)
def test_inconsistent_annotations_are_refused(change: dict[str, str | None], message: str) -> None:
    annotations = injector_annotations(SETTINGS, FILES, run_to_completion=True)
    for key, value in change.items():
        if value is None:
            annotations.pop(PREFIX + key)
        else:
            annotations[PREFIX + key] = value
    with pytest.raises(ValueError, match=message):
        agent_config_from_annotations(annotations, **PATHS)


def test_secret_names_are_lower_cased_like_the_injector_does() -> None:
    annotations = injector_annotations(
        SETTINGS, (InjectedCredential("DB", "database/creds/readonly", "database"),), run_to_completion=True
    )
    assert config(annotations)["template"][0]["destination"] == "/t/pod/secrets/db"


def test_revoke_on_shutdown_is_the_sidecar_pre_stop_hook_only() -> None:
    kwargs = {"vault_addr": "https://127.0.0.1:8200", "ca_file": "/t/ca.crt", "secrets_dir": "/t/pod/secrets"}
    assert pre_stop_revocation(injector_annotations(SETTINGS, FILES, run_to_completion=True), **kwargs) is None
    sidecar = injector_annotations(SETTINGS, FILES, run_to_completion=False)
    hook = pre_stop_revocation(sidecar, **kwargs, home_dir="/t/home-sidecar")
    assert hook is not None
    assert hook.grace_seconds == DEFAULT_REVOKE_GRACE == 5
    assert os.path.basename(hook.argv[0]) == "bao"
    assert hook.argv[1:] == ("token", "revoke", "-address=https://127.0.0.1:8200", "-ca-cert=/t/ca.crt", "-self")
    assert hook.home_dir == "/t/home-sidecar"
    without = {k: v for k, v in sidecar.items() if k != PREFIX + "agent-revoke-on-shutdown"}
    assert pre_stop_revocation(without, **kwargs) is None
    assert pre_stop_revocation(sidecar | {PREFIX + "agent-revoke-grace": "2"}, **kwargs).grace_seconds == 2  # type: ignore[union-attr]


def test_the_stack_pod_templates_with_injector_annotations_all_map(hub: Recording) -> None:
    """Every Pod template of the hub stack that carries injector annotations maps (none is ignored)."""
    found = 0
    for obj in hub.kubernetes_objects():
        if obj["kind"] == "ServiceAccount":  # the injector reads Pods only
            assert not any(k.startswith(PREFIX) for k in obj["metadata"].get("annotations") or {})
        spec = obj.get("spec") or {}
        template = (
            spec.get("jobTemplate", {}).get("spec", {}).get("template")
            if obj["kind"] == "CronJob"
            else spec.get("template")
        )
        annotations = ((template or {}).get("metadata") or {}).get("annotations") or {}
        if any(key.startswith(PREFIX) for key in annotations):
            found += 1
            parsed = config(annotations)
            assert parsed["auto_auth"][0]["method"][0]["kubernetes"]["config"]["token_path"] == "/t/jwt"
    assert found, "no Pod template in the hub stack carries injector annotations"


# --------------------------------------------------------------------------------------------------
# programs.credentials: the agent's token (agent-inject-token) and its revocation
# --------------------------------------------------------------------------------------------------
TOKEN = "s.unit-test-token-value"


@pytest.mark.parametrize("mode", [0o400, 0o600, 0o640, 0o440])  # 0640: the agent's file sink default
def test_the_agent_token_file_is_read_with_the_sink_default_mode(tmp_path: Path, mode: int) -> None:
    assert credentials.read_token(write(tmp_path / "token", TOKEN + "\n", mode)) == TOKEN


@pytest.mark.parametrize(("text", "mode", "reason"), [(TOKEN, 0o644, "mode 0644"), ("", 0o400, "not a Vault token")])
def test_a_token_file_others_may_read_or_without_a_token_is_refused(
    tmp_path: Path, text: str, mode: int, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason) as refused:
        credentials.read_token(write(tmp_path / "token", text, mode))
    assert TOKEN not in str(refused.value)


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_revoke_needs_an_https_address_and_a_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = write(tmp_path / "token", TOKEN)
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    monkeypatch.delenv("VAULT_CACERT", raising=False)
    assert credentials.main(["revoke", "--token-file", str(token)]) == 2
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:8200")
    monkeypatch.setenv("VAULT_CACERT", str(TestCA("revoke CA").write(tmp_path)))
    assert credentials.main(["revoke", "--token-file", str(token)]) == 2
    assert "https://" in capsys.readouterr().err


def test_a_revocation_that_fails_is_reported_without_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    token = write(tmp_path / "token", TOKEN)
    monkeypatch.setenv("VAULT_ADDR", f"https://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("VAULT_CACERT", str(TestCA("revoke CA").write(tmp_path)))
    assert credentials.main(["revoke", "--token-file", str(token)]) == credentials.EXIT_NOT_REVOKED
    err = capsys.readouterr().err
    assert "NOT revoked" in err and "connection refused" in err and TOKEN not in err
    # the block's own failure wins; a failed revocation after a successful block raises
    with pytest.raises(KeyError), credentials.revoked_when_done(token):
        raise KeyError("the workload failed")
    assert "NOT revoked" in capsys.readouterr().err
    with pytest.raises(ServerUnreachable, match="connection refused"), credentials.revoked_when_done(token):
        pass
