"""Applies the ``pulumi_vault`` resources a stack declares (as recorded under mocks) to a real
Vault-API server, with the HTTP calls terraform-provider-vault makes for each type.

Mapping (inputs arrive in the Pulumi schema's camelCase and are sent in Vault's snake_case):

==========================================  =====================================================
resource type                               calls (terraform-provider-vault's Create)
==========================================  =====================================================
vault:index/mount:Mount                     POST sys/mounts/<path> {type, description, local,
                                            seal_wrap, external_entropy_access, options,
                                            config{default_lease_ttl, max_lease_ttl ("<N>s", "0s" when
                                            unset), force_no_cache, and if set audit_non_hmac_request_
                                            keys, audit_non_hmac_response_keys, allowed_managed_keys,
                                            passthrough_request_headers, allowed_response_headers,
                                            delegated_auth_accessors, listing_visibility,
                                            plugin_version}}
vault:kv/secretBackendV2:SecretBackendV2    PUT <mount>/config {max_versions, cas_required,
                                            delete_version_after} (always; zero values when unset),
                                            retried on 400 (see below)
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
vault:database/secretBackendConnection:…    PUT <backend>/config/<name> {plugin_name (pluginName, else
                                            the engine block's default: postgresql-database-plugin,
                                            mysql-database-plugin, mysql-rds-/-aurora-/-legacy-…),
                                            verify_connection (default true), allowed_roles (one comma-
                                            joined string), root_rotation_statements, data.password,
                                            and the engine block flattened to the top level:
                                            connection_url, username (always), password (or passwordWo
                                            when passwordWoVersion is set), max_open_connections
                                            (default 2), max_idle_connections, max_connection_lifetime
                                            ("<N>s"), username_template, auth_type,
                                            service_account_json; postgresql also disable_escaping
                                            (always), password_authentication (default "password"),
                                            tls_ca, tls_certificate, private_key; mysql* also tls_ca,
                                            tls_certificate_key}. Only the postgresql and mysql* blocks
                                            are mapped; another engine block raises UnknownResourceType
vault:database/secretBackendRole:…          PUT <backend>/roles/<name> {db_name, creation_statements
                                            (always), default_ttl, max_ttl (int seconds),
                                            revocation_statements, rollback_statements,
                                            renew_statements, credential_type, credential_config (if set)}
vault:generic/endpoint:Endpoint             PUT <path> with dataJson (a JSON object) as the body; then,
                                            unless disableRead, GET <path> (the Read that ends the
                                            provider's Create: an error answer fails the resource, so
                                            e.g. database/rotate-root/<name> needs disableRead)
vault:appRole/authBackendRole:…             PUT auth/<backend>/role/<role_name> {bind_secret_id (default
                                            true), local_secret_ids (default false), secret_id_num_uses,
                                            secret_id_ttl, secret_id_bound_cidrs, token_policies,
                                            token_bound_cidrs, token_ttl, token_max_ttl,
                                            token_explicit_max_ttl, token_period, token_num_uses,
                                            token_no_default_policy, token_type, alias_metadata (if
                                            set)}; then PUT …/role-id {role_id} only if roleId is given;
                                            then GET …/role-id (the Read), kept in ``role_ids``.
                                            ``backend`` defaults to "approle"
vault:appRole/authBackendRoleSecretId:…     PUT auth/<backend>/role/<role_name>/secret-id, or
                                            …/custom-secret-id {secret_id} when secretId is given
                                            {metadata (normalised JSON string, else ""), cidr_list
                                            (cidrLists comma-joined), token_bound_cidrs (comma-joined),
                                            ttl, num_uses (if set)}; wrappingTtl is the X-Vault-Wrap-TTL
                                            header, not a body field. The secret_id is kept in
                                            ``secret_ids`` (the wrapping token in ``wrapping_tokens``)
vault:jwt/authBackend:AuthBackend           POST sys/auth/<path> {type (default "jwt"), description};
                                            then POST auth/<path>/config {bound_issuer,
                                            oidc_discovery_ca_pem, exactly one of oidc_discovery_url and
                                            jwt_validation_pubkeys (else the provider fails), and if set
                                            jwt_supported_algs, default_role, oidc_client_id}
                                            (resource_jwt_auth_backend.go, jwtAuthBackendWrite/Update)
vault:jwt/authBackendRole:…                 POST auth/<backend>/role/<role_name> {role_type, user_claim,
                                            bound_subject, bound_audiences, bound_claims, token_policies,
                                            token_ttl, token_max_ttl, token_no_default_policy, …: the
                                            inputs given, in snake_case}; ``backend`` defaults to "jwt"
vault:aws/secretBackend:SecretBackend       OpenBao has no AWS engine: raises :class:`NotInOpenBao`
vault:aws/secretBackendRole:…               unless the type is listed in ``not_in_openbao``, which
                                            skips it and records it in ``skipped``. Not mapped for
                                            HashiCorp Vault (``openbao=False``): UnknownResourceType
==========================================  =====================================================

Deletions (``VaultApplier.delete_removed(old, new)``): what ``pulumi up`` does when resources leave
the plan. The resources of ``old`` whose URN is not in ``new`` are deleted in reverse registration
order (dependents first), with the HTTP call of terraform-provider-vault's Delete for their type:

==========================================  =====================================================
resource type                               call (terraform-provider-vault's Delete)
==========================================  =====================================================
vault:index/policy:Policy                   DELETE sys/policies/acl/<name> (policyDelete:
                                            ``client.Sys().DeletePolicy``)
vault:jwt/authBackendRole:…                 DELETE auth/<backend>/role/<role_name> (jwtAuthBackendRoleDelete;
                                            a 404 is "already gone")
vault:tokenauth/authBackendRole:…          DELETE auth/token/roles/<role_name> (tokenAuthBackendRoleDelete)
vault:appRole/authBackendRole:…             DELETE auth/<backend>/role/<role_name> (approleAuthBackendRoleDelete;
                                            a 404 is "already gone"); Vault deletes the role's secret_ids
vault:transit/secretBackendKey:…            DELETE <backend>/keys/<name> (transitSecretBackendKeyDelete), never
                                            reached here while the key is ``protect``ed (below)
==========================================  =====================================================

A removed resource that is ``protect``ed stops the whole update before any deletion
(:class:`ProtectedResource`, with Pulumi's message): the engine refuses to delete a protected
resource (``pkg/resource/deploy/step.go``, ``DeleteStep.Apply``; the preview that ``pulumi up``
runs first already fails on it). Removed resources of other providers (``kubernetes:``, ``fedobs:``
components) are listed in ``AppliedVault.not_deleted`` and left to their own proof. A removed
``vault:`` type without a mapping raises :class:`UnknownResourceType`.

KV v2: a ``vault:index/mount:Mount`` with ``options: {version: "2"}``, then
``vault:kv/secretBackendV2:SecretBackendV2`` on it. Like the provider, the config write is retried
on HTTP 400 (a fresh KV v2 mount answers 400 while it upgrades) every 0.5 s, at most 60 times and
within ``retry_deadline`` seconds (30 by default). Against a KV *v1* mount the write does not fail
at all (it stores a secret named ``config``), with the provider as here.

The AppRole types are spelled as the SDK registers them, ``vault:appRole/…`` (capital R; there is no
``vault:approle/…`` type). Any other ``vault:`` type raises :class:`UnknownResourceType`: nothing is
silently skipped. An input ``namespace`` is refused (:class:`ApplyError`): the provider would send
it as the ``X-Vault-Namespace`` header, which the applier does not map.

``in_cluster_overrides`` replaces inputs that only mean something inside a pod (the Kubernetes
auth config's in-cluster API address and its local CA/JWT, which a loopback server cannot use):
``{resource type: {input name: value}}``. Nothing else about a resource may be changed.
``not_in_openbao`` lists the types (only ``vault:aws/…`` ones are accepted, and only with
``openbao=True``) that OpenBao cannot serve and that the caller knowingly leaves out.
Resources are applied in registration order, which follows their dependencies (a resource is
registered only once the outputs it takes from others are known).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from offline.engine import RecordedResource
from rig.openbao import ApiResponse, api


class ProtectedResource(RuntimeError):
    """A resource leaving the plan is ``protect``ed: ``pulumi up`` stops and deletes nothing."""


class UnknownResourceType(LookupError):
    """The applier has no mapping for a resource type; the stack cannot be proven here as it is."""


class NotInOpenBao(UnknownResourceType):
    """The type needs a secrets engine OpenBao does not have (AWS); list it in ``not_in_openbao``
    to leave it out knowingly."""


class ApplyError(RuntimeError):
    """Vault refused a call; names the resource and the answer."""


def _absent_from_openbao(resource_type: str) -> bool:
    """OpenBao ships no AWS secrets engine or auth method (``plugin not found in the catalog: aws``)."""
    return resource_type.startswith("vault:aws/")


#: Database connection engine blocks the applier maps, with the provider's default ``plugin_name``.
DATABASE_ENGINES: dict[str, str] = {
    "postgresql": "postgresql-database-plugin",
    "mysql": "mysql-database-plugin",
    "mysqlRds": "mysql-rds-database-plugin",
    "mysqlAurora": "mysql-aurora-database-plugin",
    "mysqlLegacy": "mysql-legacy-database-plugin",
}
#: Every engine block ``vault.database.SecretBackendConnection`` has (pulumi-vault 7.7.0 schema).
_ALL_DATABASE_BLOCKS = (
    "cassandra",
    "couchbase",
    "elasticsearch",
    "hana",
    "influxdb",
    "mongodb",
    "mongodbatlas",
    "mssql",
    "mysql",
    "mysqlAurora",
    "mysqlLegacy",
    "mysqlRds",
    "oracle",
    "postgresql",
    "redis",
    "redisElasticache",
    "redshift",
    "snowflake",
)
#: What the provider's ``util.DefaultRequestOpts()`` retries (KV v2 config): 400, every 0.5 s, 60 times.
_RETRY_INTERVAL_S = 0.5
_RETRY_MAX = 60


def _given(inputs: Mapping[str, Any], key: str) -> bool:
    """Like the provider's ``GetOkExists``: the input was given (mocks echo only given inputs)."""
    return inputs.get(key) is not None


def _nonzero(inputs: Mapping[str, Any], key: str) -> bool:
    """Like the provider's ``GetOk``: the input was given and is not the zero value of its type."""
    return bool(inputs.get(key))


def _normalized_json(text: str) -> str:
    """The provider's ``normalizeDataJSON``: Go's ``json.Marshal`` of the parsed value (sorted keys,
    compact, ``<``/``>``/``&`` escaped)."""
    out = json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return out.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _snake_keys(inputs: Mapping[str, Any], keep: Iterable[str] = ()) -> dict[str, Any]:
    keep_set = set(keep)
    return {snake(k): v for k, v in inputs.items() if not k.startswith("__") and (not keep_set or k in keep_set)}


@dataclass
class AppliedVault:
    """What the applier created that tests need, by resource name, and the calls made.

    ``role_ids``: AppRole role_id per ``approle.AuthBackendRole``; ``secret_ids``: the secret_id per
    ``approle.AuthBackendRoleSecretId`` (``wrapping_tokens`` instead when it was response-wrapped);
    ``skipped``: ``(type, name)`` of every resource left out through ``not_in_openbao``.
    """

    tokens: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    role_ids: dict[str, str] = field(default_factory=dict)
    secret_ids: dict[str, str] = field(default_factory=dict)
    wrapping_tokens: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: ``delete_removed``: ``(type, name)`` of each Vault resource deleted, and of each removed
    #: resource of another provider (not Vault's to delete).
    deleted: list[tuple[str, str]] = field(default_factory=list)
    not_deleted: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class VaultApplier:
    """Apply recorded resources to ``url`` with ``token`` (an admin or root token of the server)."""

    url: str
    token: str
    ca_file: str | None = None
    openbao: bool = True
    in_cluster_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    result: AppliedVault = field(default_factory=AppliedVault)
    not_in_openbao: Collection[str] = ()
    retry_deadline: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.not_in_openbao, str):
            raise TypeError("not_in_openbao is a collection of resource types, not one string")
        wrong = sorted(t for t in self.not_in_openbao if not _absent_from_openbao(t))
        if wrong:
            raise ValueError(f"not_in_openbao may only list types OpenBao cannot serve (vault:aws/...): {wrong}")
        if self.not_in_openbao and not self.openbao:
            raise ValueError("not_in_openbao applies to OpenBao servers only (openbao=True)")

    def send(
        self, method: str, path: str, body: Mapping[str, Any] | None, headers: Mapping[str, str] | None = None
    ) -> ApiResponse:
        """One call, recorded in ``result.calls``; the answer whatever its status."""
        self.result.calls.append((method, path))
        return api(
            self.url,
            method,
            path,
            token=self.token,
            body=dict(body) if body is not None else None,
            ca_file=self.ca_file,
            headers=headers,
        )

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        resource: RecordedResource,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        response = self.send(method, path, body, headers)
        if response.status >= 400:
            raise ApplyError(
                f"{resource.type} {resource.name}: {method} {path} -> {response.status} {response.text.strip()}"
            )
        return response.body

    def retry_call(self, method: str, path: str, body: Mapping[str, Any], resource: RecordedResource) -> Any:
        """``call``, retried on HTTP 400 like the provider's ``util.RetryWrite`` (0.5 s apart, at most 60
        retries) and never past ``retry_deadline`` seconds."""
        deadline = time.monotonic() + self.retry_deadline
        retries = 0
        while True:
            response = self.send(method, path, body)
            if response.status < 400:
                return response.body
            if response.status != 400 or retries >= _RETRY_MAX or time.monotonic() + _RETRY_INTERVAL_S > deadline:
                raise ApplyError(
                    f"{resource.type} {resource.name}: {method} {path} -> {response.status} "
                    f"{response.text.strip()} (after {retries} retries)"
                )
            retries += 1
            time.sleep(_RETRY_INTERVAL_S)

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
            "vault:database/secretBackendConnection:SecretBackendConnection": self._database_connection,
            "vault:database/secretBackendRole:SecretBackendRole": self._database_role,
            "vault:generic/endpoint:Endpoint": self._generic_endpoint,
            "vault:appRole/authBackendRole:AuthBackendRole": self._approle_role,
            "vault:appRole/authBackendRoleSecretId:AuthBackendRoleSecretId": self._approle_secret_id,
            "vault:jwt/authBackend:AuthBackend": self._jwt_backend,
            "vault:jwt/authBackendRole:AuthBackendRole": self._jwt_role,
        }
        for resource in resources:
            if not resource.type.startswith("vault:"):
                continue
            if resource.type in self.not_in_openbao:
                self.result.skipped.append((resource.type, resource.name))
                continue
            if self.openbao and _absent_from_openbao(resource.type):
                raise NotInOpenBao(
                    f"{resource.type} ({resource.name}) needs a secrets engine OpenBao does not have; "
                    "pass the type in not_in_openbao=... to leave it out knowingly"
                )
            handler = handlers.get(resource.type)
            if handler is None:
                raise UnknownResourceType(
                    f"no mapping for {resource.type} ({resource.name}); add one to rig/applier.py"
                )
            if resource.inputs.get("namespace"):
                raise ApplyError(
                    f"{resource.type} {resource.name}: input namespace "
                    f"{resource.inputs['namespace']!r} (X-Vault-Namespace) is not mapped"
                )
            overrides = self.in_cluster_overrides.get(resource.type)
            if overrides:
                resource = replace(resource, inputs={**resource.inputs, **overrides})
            handler(resource)
        return self.result

    def delete_removed(self, old: Iterable[RecordedResource], new: Iterable[RecordedResource]) -> AppliedVault:
        """Delete what ``pulumi up`` deletes going from ``old`` to ``new`` (see the module's table)."""
        kept = {r.urn for r in new}
        removed = [r for r in old if r.urn not in kept]
        protected = [r for r in removed if r.protect]
        if protected:
            raise ProtectedResource(
                "; ".join(
                    f'unable to delete resource "{r.urn}" as it is currently marked for protection '
                    f"(`pulumi state unprotect '{r.urn}'`)"
                    for r in protected
                )
            )
        for r in reversed(removed):
            if not r.type.startswith("vault:"):
                self.result.not_deleted.append((r.type, r.name))
                continue
            path = _delete_path(r)
            answer = self.send("DELETE", path, None)
            if answer.status >= 400 and answer.status != 404:
                raise ApplyError(f"{r.type} {r.name}: DELETE {path} -> {answer.status} {answer.text.strip()}")
            self.result.deleted.append((r.type, r.name))
        return self.result

    # --- one method per type -----------------------------------------------------------------

    def _mount(self, r: RecordedResource) -> None:
        i = r.inputs
        config: dict[str, Any] = {
            "default_lease_ttl": f"{i.get('defaultLeaseTtlSeconds') or 0}s",
            "max_lease_ttl": f"{i.get('maxLeaseTtlSeconds') or 0}s",
            "force_no_cache": bool(i.get("forceNoCache", False)),
        }
        for key in (
            "auditNonHmacRequestKeys",
            "auditNonHmacResponseKeys",
            "allowedManagedKeys",
            "passthroughRequestHeaders",
            "allowedResponseHeaders",
            "delegatedAuthAccessors",
            "listingVisibility",
            "pluginVersion",
        ):
            if _nonzero(i, key):
                config[snake(key)] = i[key]
        body = {
            "type": i["type"],
            "description": i.get("description", ""),
            "local": i.get("local", False),
            "seal_wrap": i.get("sealWrap", False),
            "external_entropy_access": i.get("externalEntropyAccess", False),
            "options": i.get("options") or {},
            "config": config,
        }
        self.call("POST", f"sys/mounts/{i['path']}", body, r)

    def _kv_v2_config(self, r: RecordedResource) -> None:
        i = r.inputs
        body = {
            "max_versions": i.get("maxVersions") or 0,
            "cas_required": i.get("casRequired") or False,
            "delete_version_after": i.get("deleteVersionAfter") or 0,
        }
        self.retry_call("PUT", f"{i['mount']}/config", body, r)

    def _auth_backend(self, r: RecordedResource) -> None:
        i = r.inputs
        path = i.get("path") or i["type"]
        self.call(
            "POST",
            f"sys/auth/{path}",
            {"type": i["type"], "description": i.get("description", ""), "local": i.get("local", False)},
            r,
        )

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
        create = {
            k: v
            for k, v in {
                "type": i.get("type", "aes256-gcm96"),
                "exportable": i.get("exportable", False),
                "allow_plaintext_backup": i.get("allowPlaintextBackup", False),
                "derived": i.get("derived", False),
                "convergent_encryption": i.get("convergentEncryption", False),
            }.items()
        }
        self.call("POST", f"{i['backend']}/keys/{i['name']}", create, r)
        config = {
            k: v
            for k, v in {
                "deletion_allowed": i.get("deletionAllowed", False),
                "exportable": i.get("exportable", False),
                "allow_plaintext_backup": i.get("allowPlaintextBackup", False),
                "min_decryption_version": i.get("minDecryptionVersion"),
                "min_encryption_version": i.get("minEncryptionVersion"),
            }.items()
            if v is not None
        }
        self.call("POST", f"{i['backend']}/keys/{i['name']}/config", config, r)

    def _token(self, r: RecordedResource) -> None:
        i = r.inputs
        body = {
            k: v
            for k, v in {
                "policies": i.get("policies"),
                "no_default_policy": i.get("noDefaultPolicy"),
                "renewable": i.get("renewable"),
                "ttl": i.get("ttl"),
                "explicit_max_ttl": i.get("explicitMaxTtl"),
                "period": i.get("period"),
                "display_name": i.get("displayName"),
                "num_uses": i.get("numUses"),
                "meta": i.get("metadata"),
            }.items()
            if v is not None
        }
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
            body = {
                "type": r.inputs["type"],
                "description": r.inputs.get("description", ""),
                "local": r.inputs.get("local", False),
                "options": r.inputs.get("options") or {},
            }
            self.call("PUT", f"sys/audit/{path}", body, r)
            return
        devices = self.call("GET", "sys/audit", None, r)
        device = (devices.get("data") or devices).get(f"{path}/")
        if not device or device.get("type") != r.inputs["type"]:
            raise ApplyError(
                f"{r.type} {r.name}: OpenBao declares audit devices in its server config; "
                f"the server has no '{r.inputs['type']}' device at '{path}/'"
            )

    def _database_connection(self, r: RecordedResource) -> None:
        i = r.inputs
        blocks = [b for b in _ALL_DATABASE_BLOCKS if i.get(b)]
        if len(blocks) != 1:
            raise ApplyError(f"{r.type} {r.name}: needs exactly one engine block, has {blocks or 'none'}")
        engine = blocks[0]
        if engine not in DATABASE_ENGINES:
            raise UnknownResourceType(
                f"{r.type} {r.name}: engine block {engine!r} is not mapped; add it to rig/applier.py"
            )
        b: Mapping[str, Any] = i[engine]
        body: dict[str, Any] = {"plugin_name": i.get("pluginName") or DATABASE_ENGINES[engine]}
        # setDatabaseConnectionData
        if _nonzero(b, "connectionUrl"):
            body["connection_url"] = b["connectionUrl"]
        max_open = b.get("maxOpenConnections", 2)  # schema default 2; GetOk drops 0
        if max_open:
            body["max_open_connections"] = max_open
        if _given(b, "maxIdleConnections"):
            body["max_idle_connections"] = b["maxIdleConnections"]
        if _given(b, "maxConnectionLifetime"):
            body["max_connection_lifetime"] = f"{b['maxConnectionLifetime']}s"
        if _given(b, "usernameTemplate"):
            body["username_template"] = b["usernameTemplate"]
        # setDatabaseConnectionDataWithUserPass (a new resource: the password is sent)
        body["username"] = b.get("username") or ""
        if _nonzero(b, "password"):
            body["password"] = b["password"]
        elif _nonzero(b, "passwordWoVersion") and _given(b, "passwordWo"):
            body["password"] = b["passwordWo"]
        # setCloudDatabaseConnectionData (server >= 1.15, which OpenBao is)
        for key in ("authType", "serviceAccountJson"):
            if _nonzero(b, key):
                body[snake(key)] = b[key]
        if engine == "postgresql":
            body["disable_escaping"] = bool(b.get("disableEscaping", False))
            for key in ("tlsCa", "tlsCertificate", "privateKey"):
                if _nonzero(b, key):
                    body[snake(key)] = b[key]
            body["password_authentication"] = b.get("passwordAuthentication") or "password"
            # self_managed is sent to Vault Enterprise only
        else:
            for key in ("tlsCertificateKey", "tlsCa"):
                if _nonzero(b, key):
                    body[snake(key)] = b[key]
        # writeDatabaseSecretConfig: the top-level fields (rotation_* are Enterprise-only)
        body["verify_connection"] = bool(i.get("verifyConnection", True))
        if _given(i, "allowedRoles"):
            body["allowed_roles"] = ",".join(i["allowedRoles"])
        if _nonzero(i, "rootRotationStatements"):
            body["root_rotation_statements"] = list(i["rootRotationStatements"])
        if (i.get("data") or {}).get("password") is not None:
            body["password"] = i["data"]["password"]  # the only key of ``data`` the provider forwards
        self.call("PUT", f"{i['backend']}/config/{i['name']}", body, r)

    def _database_role(self, r: RecordedResource) -> None:
        i = r.inputs
        body: dict[str, Any] = {"db_name": i["dbName"], "creation_statements": list(i.get("creationStatements") or [])}
        for key in (
            "defaultTtl",
            "maxTtl",
            "revocationStatements",
            "rollbackStatements",
            "renewStatements",
            "credentialConfig",
            "credentialType",
        ):
            if _nonzero(i, key):  # HasChange from the empty state
                body[snake(key)] = i[key]
        self.call("PUT", f"{i['backend']}/roles/{i['name']}", body, r)

    def _generic_endpoint(self, r: RecordedResource) -> None:
        i = r.inputs
        try:
            data = json.loads(i["dataJson"])
        except ValueError as exc:
            raise ApplyError(f"{r.type} {r.name}: dataJson is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApplyError(f"{r.type} {r.name}: dataJson must be a JSON object")
        path = i["path"]
        self.call("PUT", path, data, r)
        if not i.get("disableRead", False):
            answer = self.send("GET", path, None)
            if answer.status >= 400:
                raise ApplyError(
                    f"{r.type} {r.name}: the read after the write, GET {path} -> {answer.status} "
                    f"{answer.text.strip()} (the provider fails here too; set disableRead for "
                    "write-only paths)"
                )

    def _approle_role(self, r: RecordedResource) -> None:
        i = r.inputs
        backend = str(i.get("backend") or "approle").strip("/")
        path = f"auth/{backend}/role/{i['roleName']}"
        body: dict[str, Any] = {}
        # updateTokenFields(create=true)
        for key in ("tokenBoundCidrs", "tokenPolicies"):
            if _nonzero(i, key):
                body[snake(key)] = list(i[key])
        for key in (
            "tokenExplicitMaxTtl",
            "tokenMaxTtl",
            "tokenPeriod",
            "tokenType",
            "tokenTtl",
            "tokenNumUses",
            "aliasMetadata",
        ):
            if _nonzero(i, key):
                body[snake(key)] = i[key]
        if _given(i, "tokenNoDefaultPolicy"):
            body["token_no_default_policy"] = bool(i["tokenNoDefaultPolicy"])
        # approleAuthBackendRoleUpdateFields(create=true)
        body["bind_secret_id"] = bool(i.get("bindSecretId", True))
        for key in ("secretIdNumUses", "secretIdTtl"):
            if _nonzero(i, key):
                body[snake(key)] = i[key]
        if _nonzero(i, "secretIdBoundCidrs"):
            body["secret_id_bound_cidrs"] = list(i["secretIdBoundCidrs"])
        body["local_secret_ids"] = bool(i.get("localSecretIds", False))
        self.call("PUT", path, body, r)
        if _nonzero(i, "roleId"):
            self.call("PUT", f"{path}/role-id", {"role_id": i["roleId"]}, r)
        answer = self.call("GET", f"{path}/role-id", None, r)
        self.result.role_ids[r.name] = answer["data"]["role_id"]

    def _approle_secret_id(self, r: RecordedResource) -> None:
        i = r.inputs
        backend = str(i.get("backend") or "approle").strip("/")
        role_path = f"auth/{backend}/role/{i['roleName']}"
        body: dict[str, Any] = {}
        if _nonzero(i, "secretId"):
            path = f"{role_path}/custom-secret-id"
            body["secret_id"] = i["secretId"]
        else:
            path = f"{role_path}/secret-id"
        if _nonzero(i, "cidrLists"):
            body["cidr_list"] = ",".join(i["cidrLists"])
        if _nonzero(i, "tokenBoundCidrs"):
            body["token_bound_cidrs"] = ",".join(i["tokenBoundCidrs"])
        body["metadata"] = _normalized_json(i["metadata"]) if _nonzero(i, "metadata") else ""
        for key in ("ttl", "numUses"):
            if _nonzero(i, key):
                body[snake(key)] = i[key]
        wrapping_ttl = i.get("wrappingTtl")
        headers = {"X-Vault-Wrap-TTL": str(wrapping_ttl)} if wrapping_ttl else None
        answer = self.call("PUT", path, body, r, headers=headers)
        if wrapping_ttl:
            self.result.wrapping_tokens[r.name] = answer["wrap_info"]["token"]
        else:
            self.result.secret_ids[r.name] = answer["data"]["secret_id"]

    def _jwt_backend(self, r: RecordedResource) -> None:
        i = r.inputs
        path = str(i.get("path") or "jwt")
        self.call(
            "POST", f"sys/auth/{path}", {"type": i.get("type", "jwt"), "description": i.get("description", "")}, r
        )
        if _nonzero(i, "oidcDiscoveryUrl") == _nonzero(i, "jwtValidationPubkeys"):
            raise ApplyError(f"{r.type} {r.name}: exactly one of oidc_discovery_url and jwt_validation_pubkeys")
        body: dict[str, Any] = {
            "oidc_discovery_ca_pem": i.get("oidcDiscoveryCaPem", ""),
            "bound_issuer": i.get("boundIssuer", ""),
        }
        for key in ("oidcDiscoveryUrl", "jwtValidationPubkeys"):
            if _nonzero(i, key):
                body[snake(key)] = i[key]
        for key in ("jwtSupportedAlgs", "defaultRole", "oidcClientId"):
            if _given(i, key):
                body[snake(key)] = i[key]
        self.call("POST", f"auth/{path}/config", body, r)

    def _jwt_role(self, r: RecordedResource) -> None:
        backend = str(r.inputs.get("backend") or "jwt")
        body = _snake_keys({k: v for k, v in r.inputs.items() if k not in ("backend", "roleName")})
        self.call("POST", f"auth/{backend}/role/{r.inputs['roleName']}", body, r)


def _delete_path(r: RecordedResource) -> str:
    """The path terraform-provider-vault's Delete sends ``DELETE`` to (its resource ID)."""
    i = r.inputs
    if r.type == "vault:index/policy:Policy":
        return f"sys/policies/acl/{i['name']}"
    if r.type == "vault:jwt/authBackendRole:AuthBackendRole":
        return f"auth/{str(i.get('backend') or 'jwt').strip('/')}/role/{i['roleName']}"
    if r.type == "vault:tokenauth/authBackendRole:AuthBackendRole":
        return f"auth/token/roles/{i['roleName']}"
    if r.type == "vault:appRole/authBackendRole:AuthBackendRole":
        return f"auth/{str(i.get('backend') or 'approle').strip('/')}/role/{i['roleName']}"
    if r.type == "vault:transit/secretBackendKey:SecretBackendKey":
        return f"{str(i['backend']).strip('/')}/keys/{i['name']}"
    raise UnknownResourceType(f"no deletion mapped for {r.type} ({r.name}); add one to rig/applier.py")
