"""Writes docs/vault-config.md: every mount, auth method, role and policy a hub and an edge get,
generated from the shipped stacks by the offline engine (a test fails when the doc drifts).

    python -m offline.vault_config_doc          # rewrite docs/vault-config.md
    python -m offline.vault_config_doc --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

from offline.engine import ROOT, RecordedResource, Recording, run_stack_file

DOC = ROOT / "docs" / "vault-config.md"


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |")
    return lines


def _ttl(seconds: object) -> str:
    if not isinstance(seconds, int):
        return "-"
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds}s"


def _of(recording: Recording, token: str) -> list[RecordedResource]:
    return sorted(recording.of_type(token), key=lambda r: r.name)


def section(title: str, recording: Recording) -> list[str]:
    lines = [f"## {title}", ""]
    mounts = [
        (
            f"`{m.inputs['path']}/`",
            m.inputs["type"] + (" v2" if m.inputs.get("options") == {"version": "2"} else ""),
            m.inputs.get("description", ""),
        )
        for m in _of(recording, "vault:index/mount:Mount")
    ]
    mounts += [
        (f"`{b.inputs['path']}/`", "aws", b.inputs.get("description", ""))
        for b in _of(recording, "vault:aws/secretBackend:SecretBackend")
    ]
    lines += ["### Secrets engines", "", *_table(("path", "type", "what for"), sorted(mounts)), ""]
    for kv in _of(recording, "vault:kv/secretBackendV2:SecretBackendV2"):
        lines += [
            f"KV `{kv.inputs['mount']}/`: check-and-set required: {kv.inputs.get('casRequired')}, "
            f"versions kept: {kv.inputs.get('maxVersions')}.",
            "",
        ]
    auths = [
        (f"`auth/{a.inputs.get('path') or a.inputs['type']}/`", a.inputs["type"], a.inputs.get("description", ""))
        for a in (
            *_of(recording, "vault:index/authBackend:AuthBackend"),
            *_of(recording, "vault:jwt/authBackend:AuthBackend"),
        )
    ]
    auths.append(("`auth/userpass-pulumi/`", "userpass", "Pulumi's own login (created by the bootstrap Job)"))
    lines += ["### Auth methods", "", *_table(("path", "type", "what for"), sorted(auths)), ""]
    deploy_roles = [
        (
            f"`{r.inputs['roleName']}`",
            f"`{r.inputs['boundSubject']}`",
            ", ".join(r.inputs["boundAudiences"]),
            ", ".join(r.inputs["tokenPolicies"]),
            _ttl(r.inputs.get("tokenTtl")),
        )
        for r in _of(recording, "vault:jwt/authBackendRole:AuthBackendRole")
    ]
    if deploy_roles:
        lines += [
            "### Edge deploy identities (JWT roles; each mints only its own edge's hub credentials)",
            "",
            *_table(("role", "JWT subject", "audience", "policies", "token TTL"), sorted(deploy_roles)),
            "",
        ]
    k8s_roles = [
        (
            f"`{r.inputs['roleName']}`",
            ", ".join(r.inputs["boundServiceAccountNamespaces"]),
            ", ".join(r.inputs["boundServiceAccountNames"]),
            r.inputs.get("audience", ""),
            _ttl(r.inputs.get("tokenTtl")),
            _ttl(r.inputs.get("tokenMaxTtl")),
            ", ".join(r.inputs.get("tokenPolicies", [])),
        )
        for r in _of(recording, "vault:kubernetes/authBackendRole:AuthBackendRole")
    ]
    lines += [
        "### Kubernetes auth roles",
        "",
        *_table(
            ("role", "namespace", "service account", "audience", "token TTL", "max TTL", "policies"), sorted(k8s_roles)
        ),
        "",
    ]
    approles = [
        (
            f"`{r.inputs['roleName']}`",
            f"`auth/{r.inputs['backend']}`",
            ", ".join(r.inputs["tokenPolicies"]),
            _ttl(r.inputs.get("tokenTtl")),
        )
        for r in _of(recording, "vault:appRole/authBackendRole:AuthBackendRole")
    ]
    if approles:
        lines += [
            "### AppRoles (one per edge, its cert-sync's hub login; the role id is `edge-<edge>`, the secret id "
            "is created by the edge's own deploy identity and kept in that edge's state only)",
            "",
            *_table(("role", "mount", "policies", "token TTL"), sorted(approles)),
            "",
        ]
    connections = []
    for c in _of(recording, "vault:database/secretBackendConnection:SecretBackendConnection"):
        engine = "postgresql" if c.inputs.get("postgresql") else "mysql"
        connections.append(
            (
                f"`{c.inputs['name']}`",
                engine,
                f"`{c.inputs[engine]['connectionUrl']}`",
                ", ".join(c.inputs.get("allowedRoles", [])),
            )
        )
    if connections:
        lines += [
            "### Database connections (admin login from Pulumi secrets, rotated by Vault after setup)",
            "",
            *_table(("connection", "engine", "connection URL", "roles"), sorted(connections)),
            "",
        ]
        db_roles = [
            (
                f"`{r.inputs['backend']}/creds/{r.inputs['name']}`",
                f"`{r.inputs['dbName']}`",
                _ttl(r.inputs.get("defaultTtl")),
                _ttl(r.inputs.get("maxTtl")),
                "<br>".join(f"`{s}`" for s in r.inputs["creationStatements"]),
            )
            for r in _of(recording, "vault:database/secretBackendRole:SecretBackendRole")
        ]
        lines += [
            "Database roles:",
            "",
            *_table(
                ("credentials at", "connection", "default TTL", "max TTL", "creation statements"), sorted(db_roles)
            ),
            "",
        ]
    aws_roles = [
        (
            f"`{r.inputs['backend']}/creds/{r.inputs['name']}`",
            r.inputs["credentialType"],
            ", ".join(r.inputs.get("roleArns", [])),
            _ttl(r.inputs.get("defaultStsTtl")),
            _ttl(r.inputs.get("maxStsTtl")),
        )
        for r in _of(recording, "vault:aws/secretBackendRole:SecretBackendRole")
    ]
    if aws_roles:
        lines += [
            "### AWS roles",
            "",
            *_table(("credentials at", "type", "role ARNs", "default STS TTL", "max STS TTL"), sorted(aws_roles)),
            "",
        ]
    keys = [
        (
            f"`{k.inputs['backend']}/keys/{k.inputs['name']}`",
            k.inputs.get("type", ""),
            "no" if not k.inputs.get("exportable") else "yes",
        )
        for k in _of(recording, "vault:transit/secretBackendKey:SecretBackendKey")
    ]
    if keys:
        lines += [
            "### Transit keys (edge auto-unseal; each edge's deploy identity creates its own token through "
            "its token role `transit-unseal-<edge>`)",
            "",
            *_table(("key", "type", "exportable"), sorted(keys)),
            "",
        ]
    lines += ["### Policies", ""]
    for policy in sorted(_of(recording, "vault:index/policy:Policy"), key=lambda p: str(p.inputs["name"])):
        lines += [f"`{policy.inputs['name']}`:", "", "```hcl", policy.inputs["policy"].rstrip(), "```", ""]
    admin = next(
        o
        for o in recording.kubernetes_objects()
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "vault-admin-policy"
    )
    lines += [
        "`fedobs-admin` (written by the bootstrap Job, used by Pulumi through `auth/userpass-pulumi`):",
        "",
        "```hcl",
        admin["data"]["admin.hcl"].rstrip(),
        "```",
        "",
    ]
    return lines


def render() -> str:
    hub = run_stack_file("hub")
    if hub.error is not None:
        raise SystemExit(f"the hub stack failed: {hub.error}")
    edge = run_stack_file("edge", {"organization/fedobs/hub": hub.outputs})
    if edge.error is not None:
        raise SystemExit(f"the edge stack failed: {edge.error}")
    lines = [
        "# What lives inside each Vault",
        "",
        "<!-- Generated by `python -m offline.vault_config_doc` from Pulumi.hub.yaml and Pulumi.edge.yaml;",
        "     do not edit by hand. tests/unit/test_vault_config_doc.py fails when it drifts. -->",
        "",
        "Everything below is declared with `pulumi_vault` by `components/vault_config.py`,",
        "`components/kubernetes_auth.py`, `components/transit_unseal.py` and `components/vault.py`, from the",
        "shipped stack config. Workload policies are generated from each consumer's declared access",
        "(`components/vault_policies.py`): KV v2 reads go to `<mount>/data/<path>` only, dynamic credentials",
        "to `<engine>/creds/<role>`; no workload policy holds `sudo` or a `sys/` path, except `raft-snapshot`,",
        "which may only read `sys/storage/raft/snapshot`.",
        "",
        *section("Hub (`Pulumi.hub.yaml`)", hub),
        *section("Edge (`Pulumi.edge.yaml`, the template of every edge)", edge),
    ]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if docs/vault-config.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is out of date: run python -m offline.vault_config_doc", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
