"""Applies the ``pulumi_vault`` resources a stack declares (as recorded under mocks) to a real
Vault-API server, with the HTTP calls terraform-provider-vault makes for each type.

Mapping (inputs arrive in the Pulumi schema's camelCase and are sent in Vault's snake_case):

==========================================  =====================================================
resource type                               calls (terraform-provider-vault's Create)
==========================================  =====================================================
vault:index/mount:Mount                     POST sys/mounts/<path> {type, description, local,
                                            seal_wrap, options, config{default_lease_ttl, max_lease_ttl}}
vault:kv/secretBackendV2:SecretBackendV2    POST <mount>/config {max_versions, cas_required,
                                            delete_version_after}
vault:index/authBackend:AuthBackend         POST sys/auth/<path> {type, description, local}
vault:kubernetes/authBackendConfig:…        POST auth/<backend>/config {kubernetes_host,
                                            kubernetes_ca_cert, token_reviewer_jwt, pem_keys, issuer,
                                            disable_iss_validation, disable_local_ca_jwt}
vault:kubernetes/authBackendRole:…          POST auth/<backend>/role/<role_name> {bound_service_account_
                                            names, bound_service_account_namespaces, audience,
                                            token_policies, token_ttl, token_max_ttl, …}
vault:index/policy:Policy                   PUT sys/policies/acl/<name> {policy}
vault:transit/secretBackendKey:…            POST <backend>/keys/<name> {type, exportable,
                                            allow_plaintext_backup, derived, convergent_encryption}
                                            then POST <backend>/keys/<name>/config {deletion_allowed,
                                            exportable, allow_plaintext_backup, min_*_version}
vault:tokenauth/authBackendRole:…          POST auth/token/roles/<role_name> {allowed_policies,
                                            disallowed_policies, orphan, renewable, path_suffix,
                                            token_period, token_ttl, token_no_default_policy, …}
vault:index/token:Token                     POST auth/token/create/<role_name> with a role, else
                                            auth/token/create-orphan when no_parent, else
                                            auth/token/create {policies, no_default_policy, renewable,
                                            ttl, explicit_max_ttl, period, display_name, num_uses}
vault:index/raftAutopilot:RaftAutopilot     POST sys/storage/raft/autopilot/configuration
vault:index/audit:Audit                     PUT sys/audit/<path> on HashiCorp Vault. OpenBao declares
                                            audit devices only in its server config (its API answers
                                            400), so against OpenBao the applier instead checks that
                                            the server already has a device of that type at that path.
==========================================  =====================================================

Any other ``vault:`` type raises :class:`UnknownResourceType`: nothing is silently skipped.

``in_cluster_overrides`` replaces inputs that only mean something inside a pod (the Kubernetes
auth config's in-cluster API address and its local CA/JWT, which a loopback server cannot use):
``{resource type: {input name: value}}``. Nothing else about a resource may be changed.
Resources are applied in registration order, which follows their dependencies (a resource is
registered only once the outputs it takes from others are known).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from offline.engine import RecordedResource
from tests.support.openbao import api


class UnknownResourceType(LookupError):
    """The applier has no mapping for a resource type; the stack cannot be proven here as it is."""


class ApplyError(RuntimeError):
    """Vault refused a call; names the resource and the answer."""


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _snake_keys(inputs: Mapping[str, Any], keep: Iterable[str] = ()) -> dict[str, Any]:
    keep_set = set(keep)
    return {snake(k): v for k, v in inputs.items() if not k.startswith("__") and (not keep_set or k in keep_set)}


@dataclass
class AppliedVault:
    """What the applier created that tests need: tokens by resource name, the calls made."""

    tokens: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class VaultApplier:
    """Apply recorded resources to ``url`` with ``token`` (an admin or root token of the server)."""

    url: str
    token: str
    ca_file: str | None = None
    openbao: bool = True
    in_cluster_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    result: AppliedVault = field(default_factory=AppliedVault)

    def call(self, method: str, path: str, body: Mapping[str, Any] | None, resource: RecordedResource) -> Any:
        response = api(self.url, method, path, token=self.token, body=dict(body) if body is not None else None,
                       ca_file=self.ca_file)
        self.result.calls.append((method, path))
        if response.status >= 400:
            raise ApplyError(f"{resource.type} {resource.name}: {method} {path} -> {response.status} {response.text}")
        return response.body

    def apply(self, resources: Iterable[RecordedResource]) -> AppliedVault:
        handlers: dict[str, Callable[[RecordedResource], None]] = {
            "vault:index/mount:Mount": self._mount,
            "vault:kv/secretBackendV2:SecretBackendV2": self._kv_v2_config,
            "vault:index/authBackend:AuthBackend": self._auth_backend,
            "vault:kubernetes/authBackendConfig:AuthBackendConfig": self._kubernetes_config,
            "vault:kubernetes/authBackendRole:AuthBackendRole": self._kubernetes_role,
            "vault:index/policy:Policy": self._policy,
            "vault:transit/secretBackendKey:SecretBackendKey": self._transit_key,
            "vault:tokenauth/authBackendRole:AuthBackendRole": self._token_role,
            "vault:index/token:Token": self._token,
            "vault:index/raftAutopilot:RaftAutopilot": self._autopilot,
            "vault:index/audit:Audit": self._audit,
        }
        for resource in resources:
            if not resource.type.startswith("vault:"):
                continue
            handler = handlers.get(resource.type)
            if handler is None:
                raise UnknownResourceType(
                    f"no mapping for {resource.type} ({resource.name}); add one to tests/support/applier.py")
            overrides = self.in_cluster_overrides.get(resource.type)
            if overrides:
                resource = replace(resource, inputs={**resource.inputs, **overrides})
            handler(resource)
        return self.result

    # --- one method per type -----------------------------------------------------------------

    def _mount(self, r: RecordedResource) -> None:
        i = r.inputs
        config = {k: v for k, v in {
            "default_lease_ttl": i.get("defaultLeaseTtlSeconds"),
            "max_lease_ttl": i.get("maxLeaseTtlSeconds"),
        }.items() if v is not None}
        body = {"type": i["type"], "description": i.get("description", ""), "local": i.get("local", False),
                "seal_wrap": i.get("sealWrap", False), "options": i.get("options") or {}, "config": config}
        self.call("POST", f"sys/mounts/{i['path']}", body, r)

    def _kv_v2_config(self, r: RecordedResource) -> None:
        body = _snake_keys(r.inputs, ("maxVersions", "casRequired", "deleteVersionAfter"))
        self.call("POST", f"{r.inputs['mount']}/config", body, r)

    def _auth_backend(self, r: RecordedResource) -> None:
        i = r.inputs
        path = i.get("path") or i["type"]
        self.call("POST", f"sys/auth/{path}", {"type": i["type"], "description": i.get("description", ""),
                                               "local": i.get("local", False)}, r)

    def _kubernetes_config(self, r: RecordedResource) -> None:
        body = _snake_keys({k: v for k, v in r.inputs.items() if k != "backend"})
        self.call("POST", f"auth/{r.inputs['backend']}/config", body, r)

    def _kubernetes_role(self, r: RecordedResource) -> None:
        body = _snake_keys({k: v for k, v in r.inputs.items() if k not in ("backend", "roleName")})
        self.call("POST", f"auth/{r.inputs['backend']}/role/{r.inputs['roleName']}", body, r)

    def _policy(self, r: RecordedResource) -> None:
        self.call("PUT", f"sys/policies/acl/{r.inputs['name']}", {"policy": r.inputs["policy"]}, r)

    def _transit_key(self, r: RecordedResource) -> None:
        i = r.inputs
        create = {k: v for k, v in {
            "type": i.get("type", "aes256-gcm96"), "exportable": i.get("exportable", False),
            "allow_plaintext_backup": i.get("allowPlaintextBackup", False), "derived": i.get("derived", False),
            "convergent_encryption": i.get("convergentEncryption", False)}.items()}
        self.call("POST", f"{i['backend']}/keys/{i['name']}", create, r)
        config = {k: v for k, v in {
            "deletion_allowed": i.get("deletionAllowed", False), "exportable": i.get("exportable", False),
            "allow_plaintext_backup": i.get("allowPlaintextBackup", False),
            "min_decryption_version": i.get("minDecryptionVersion"),
            "min_encryption_version": i.get("minEncryptionVersion")}.items() if v is not None}
        self.call("POST", f"{i['backend']}/keys/{i['name']}/config", config, r)

    def _token(self, r: RecordedResource) -> None:
        i = r.inputs
        body = {k: v for k, v in {
            "policies": i.get("policies"), "no_default_policy": i.get("noDefaultPolicy"),
            "renewable": i.get("renewable"), "ttl": i.get("ttl"), "explicit_max_ttl": i.get("explicitMaxTtl"),
            "period": i.get("period"), "display_name": i.get("displayName"), "num_uses": i.get("numUses"),
            "meta": i.get("metadata")}.items() if v is not None}
        if i.get("roleName"):
            path = f"auth/token/create/{i['roleName']}"
        else:
            path = "auth/token/create-orphan" if i.get("noParent") else "auth/token/create"
        answer = self.call("POST", path, body, r)
        self.result.tokens[r.name] = answer["auth"]["client_token"]

    def _token_role(self, r: RecordedResource) -> None:
        body = _snake_keys({k: v for k, v in r.inputs.items() if k != "roleName"})
        self.call("POST", f"auth/token/roles/{r.inputs['roleName']}", body, r)

    def _autopilot(self, r: RecordedResource) -> None:
        self.call("POST", "sys/storage/raft/autopilot/configuration", _snake_keys(r.inputs), r)

    def _audit(self, r: RecordedResource) -> None:
        path = r.inputs.get("path") or r.inputs["type"]
        if not self.openbao:
            body = {"type": r.inputs["type"], "description": r.inputs.get("description", ""),
                    "local": r.inputs.get("local", False), "options": r.inputs.get("options") or {}}
            self.call("PUT", f"sys/audit/{path}", body, r)
            return
        devices = self.call("GET", "sys/audit", None, r)
        device = (devices.get("data") or devices).get(f"{path}/")
        if not device or device.get("type") != r.inputs["type"]:
            raise ApplyError(f"{r.type} {r.name}: OpenBao declares audit devices in its server config; "
                             f"the server has no '{r.inputs['type']}' device at '{path}/'")
