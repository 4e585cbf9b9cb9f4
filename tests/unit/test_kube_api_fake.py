"""The fake Kubernetes API (rig/kube_api.py) behaves like the documented API.

Fast: one server on loopback for the module, HTTPS with its own CA, no Vault.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from rig.kube_api import DEFAULT_ISSUER, KubeAPIServer, service_account_username

TR_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        yield server


def call(
    server: KubeAPIServer,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    content_type: str = "application/json",
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=server.ca_file)
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def review(
    server: KubeAPIServer, token: str, audiences: list[str] | None = None, reviewer: str | None = None
) -> dict[str, Any]:
    if reviewer is None:
        reviewer = server.mint_service_account_token("vault", "vault")
        server.allow_token_reviews(service_account_username("vault", "vault"))
    spec: dict[str, Any] = {"token": token}
    if audiences is not None:
        spec["audiences"] = audiences
    status, body = call(
        server,
        "POST",
        TR_PATH,
        token=reviewer,
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec},
    )
    assert status == 201, body
    assert body["kind"] == "TokenReview" and body["apiVersion"] == "authentication.k8s.io/v1"
    return dict(body["status"])


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


# ------------------------------------------------------------------------------------ tokens


def test_minted_token_is_a_signed_service_account_jwt(kube: KubeAPIServer) -> None:
    token = kube.mint_service_account_token("obs", "collector", uid="1234-uid", ttl=600)
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    assert header == {"alg": "RS256", "kid": kube.key_id}
    claims = _claims(token)
    assert claims["iss"] == DEFAULT_ISSUER
    assert claims["sub"] == "system:serviceaccount:obs:collector"
    assert claims["aud"] == [DEFAULT_ISSUER]
    assert claims["exp"] - claims["iat"] == 600
    assert claims["kubernetes.io"] == {"namespace": "obs", "serviceaccount": {"name": "collector", "uid": "1234-uid"}}
    public_key = serialization.load_pem_public_key(kube.public_key_pem.encode())
    assert isinstance(public_key, rsa.RSAPublicKey)
    signature = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
    public_key.verify(signature, f"{header_b64}.{payload_b64}".encode(), padding.PKCS1v15(), hashes.SHA256())
    jwk = kube.jwks()["keys"][0]
    n = int.from_bytes(base64.urlsafe_b64decode(jwk["n"] + "=" * (-len(jwk["n"]) % 4)), "big")
    assert n == public_key.public_numbers().n and jwk["kid"] == kube.key_id


def test_token_review_authenticates_a_minted_token(kube: KubeAPIServer) -> None:
    token = kube.mint_service_account_token("obs", "collector", uid="1234-uid")
    status = review(kube, token)
    assert status["authenticated"] is True
    assert status["user"]["username"] == "system:serviceaccount:obs:collector"
    assert status["user"]["uid"] == "1234-uid"
    assert status["user"]["groups"] == ["system:serviceaccounts", "system:serviceaccounts:obs", "system:authenticated"]
    credential_id = status["user"]["extra"]["authentication.kubernetes.io/credential-id"]
    assert credential_id == [f"JTI={_claims(token)['jti']}"]
    assert status["audiences"] == [DEFAULT_ISSUER]


def test_token_review_audiences(kube: KubeAPIServer) -> None:
    token = kube.mint_service_account_token("obs", "aud", audiences=["vault", "other"])
    ok = review(kube, token, audiences=["vault"])
    assert ok["authenticated"] is True and ok["audiences"] == ["vault"]
    both = review(kube, token, audiences=["nope", "other", "vault"])
    assert both["audiences"] == ["other", "vault"]
    wrong = review(kube, token, audiences=["https://elsewhere"])
    assert wrong["authenticated"] is False and "audiences" in wrong["error"]
    # without spec.audiences the API server's own audience applies, which this token lacks
    assert review(kube, token)["authenticated"] is False


@pytest.mark.parametrize("case", ["expired", "foreign", "garbage", "deleted", "recreated", "tampered"])
def test_token_review_rejects(kube: KubeAPIServer, case: str) -> None:
    namespace, name = "rejects", f"sa-{case}"
    token = kube.mint_service_account_token(namespace, name)
    if case == "expired":
        token = kube.mint_service_account_token(namespace, name, ttl=-5)
    elif case == "foreign":
        with KubeAPIServer() as other:
            token = other.mint_service_account_token(namespace, name)
    elif case == "garbage":
        token = "not-a-jwt"
    elif case == "deleted":
        kube.delete_service_account(namespace, name)
    elif case == "recreated":
        kube.create_service_account(namespace, name)
    elif case == "tampered":
        head, payload, sig = token.split(".")
        claims = _claims(token)
        claims["sub"] = "system:serviceaccount:kube-system:admin"
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        token = f"{head}.{payload}.{sig}"
    status = review(kube, token)
    assert status["authenticated"] is False
    assert status["error"]
    assert status["user"] == {}


def test_token_review_requires_authorization(kube: KubeAPIServer) -> None:
    token = kube.mint_service_account_token("obs", "collector")
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    status, anonymous = call(kube, "POST", TR_PATH, body=body)
    assert status == 403
    assert anonymous["message"] == (
        'tokenreviews.authentication.k8s.io is forbidden: User "system:anonymous" cannot create resource '
        '"tokenreviews" in API group "authentication.k8s.io" at the cluster scope'
    )
    status, unauthorized = call(kube, "POST", TR_PATH, token="bogus", body=body)
    assert (status, unauthorized["reason"], unauthorized["code"]) == (401, "Unauthorized", 401)
    status, forbidden = call(kube, "POST", TR_PATH, token=token, body=body)
    assert status == 403 and forbidden["reason"] == "Forbidden" and forbidden["kind"] == "Status"
    kube.allow_token_reviews(service_account_username("vault", "vault"))
    status, missing = call(
        kube, "POST", TR_PATH, token=kube.mint_service_account_token("vault", "vault"), body={"spec": {}}
    )
    assert (status, missing["reason"]) == (400, "BadRequest")


# ------------------------------------------------------------------------------------ secrets


@pytest.fixture
def writer(kube: KubeAPIServer) -> str:
    kube.allow_service_account(
        "sync", "writer", ["get", "list", "create", "update", "patch", "delete"], ["secrets"], namespace="sync"
    )
    return kube.mint_service_account_token("sync", "writer")


def _secret(name: str, data: dict[str, bytes], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, **extra},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def test_secret_create_get_update_delete(kube: KubeAPIServer, writer: str) -> None:
    base = "/api/v1/namespaces/sync/secrets"
    status, created = call(kube, "POST", base, token=writer, body=_secret("tls", {"tls.crt": b"A"}))
    assert status == 201
    rv1 = created["metadata"]["resourceVersion"]
    assert created["metadata"]["namespace"] == "sync" and created["metadata"]["uid"]
    assert created["type"] == "Opaque"

    status, again = call(kube, "POST", base, token=writer, body=_secret("tls", {"tls.crt": b"B"}))
    assert status == 409
    assert (again["reason"], again["message"], again["details"]) == (
        "AlreadyExists",
        'secrets "tls" already exists',
        {"name": "tls", "kind": "secrets"},
    )

    status, got = call(kube, "GET", f"{base}/tls", token=writer)
    assert status == 200 and base64.b64decode(got["data"]["tls.crt"]) == b"A"

    body = _secret("tls", {"tls.crt": b"B"}, resourceVersion=rv1)
    status, updated = call(kube, "PUT", f"{base}/tls", token=writer, body=body)
    assert status == 200
    rv2 = updated["metadata"]["resourceVersion"]
    assert int(rv2) > int(rv1) and updated["metadata"]["uid"] == created["metadata"]["uid"]

    stale = _secret("tls", {"x": b"C"}, resourceVersion=rv1)
    status, conflict = call(kube, "PUT", f"{base}/tls", token=writer, body=stale)
    assert status == 409 and conflict["reason"] == "Conflict"
    assert conflict["message"] == (
        'Operation cannot be fulfilled on secrets "tls": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert kube.secret_data("sync", "tls") == {"tls.crt": b"B"}

    status, _ = call(kube, "PUT", f"{base}/tls", token=writer, body=_secret("tls", {"x": b"D"}))
    assert status == 200  # no resourceVersion: unconditional update
    patch = {"data": {"y": base64.b64encode(b"E").decode()}}
    status, patched = call(
        kube, "PATCH", f"{base}/tls", token=writer, body=patch, content_type="application/merge-patch+json"
    )
    assert status == 200 and set(patched["data"]) == {"x", "y"}

    status, deleted = call(kube, "DELETE", f"{base}/tls", token=writer)
    assert status == 200 and deleted["status"] == "Success" and deleted["details"]["name"] == "tls"
    status, gone = call(kube, "GET", f"{base}/tls", token=writer)
    assert status == 404
    assert gone == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'secrets "tls" not found',
        "reason": "NotFound",
        "details": {"name": "tls", "kind": "secrets"},
        "code": 404,
    }
    status, _ = call(kube, "PUT", f"{base}/tls", token=writer, body=_secret("tls", {"x": b"F"}))
    assert status == 404
    status, _ = call(kube, "DELETE", f"{base}/tls", token=writer)
    assert status == 404


def test_dry_run_create_stores_nothing_and_the_log_keeps_write_preconditions(kube: KubeAPIServer, writer: str) -> None:
    base = "/api/v1/namespaces/sync/secrets"
    status, answered = call(kube, "POST", f"{base}?dryRun=All", token=writer, body=_secret("dry", {"k": b"v"}))
    assert status == 201 and answered["metadata"]["name"] == "dry"
    assert kube.get_secret("sync", "dry") is None
    _, created = call(kube, "POST", base, token=writer, body=_secret("dry", {"k": b"v"}))
    rv = created["metadata"]["resourceVersion"]
    status, _ = call(kube, "POST", f"{base}?dryRun=All", token=writer, body=_secret("dry", {"k": b"w"}))
    assert status == 409  # a dry run is validated like the real create
    call(kube, "PUT", f"{base}/dry", token=writer, body=_secret("dry", {"k": b"w"}, resourceVersion=rv))
    (update,) = [r for r in kube.requests if r.method == "PUT" and r.path == f"{base}/dry"]
    assert (update.resource_version, update.status) == (rv, 200)


def test_secret_validation_and_string_data(kube: KubeAPIServer, writer: str) -> None:
    base = "/api/v1/namespaces/sync/secrets"
    status, _ = call(
        kube, "POST", base, token=writer, body={"metadata": {"name": "bad"}, "data": {"k": "%%% not base64"}}
    )
    assert status == 400
    status, created = call(
        kube, "POST", base, token=writer, body={"metadata": {"name": "sd"}, "stringData": {"user": "otel"}}
    )
    assert status == 201 and "stringData" not in created
    assert kube.secret_data("sync", "sd") == {"user": b"otel"}
    status, mismatch = call(kube, "PUT", f"{base}/sd", token=writer, body=_secret("other", {}))
    assert status == 400 and "does not match the name on the URL" in mismatch["message"]


def test_secret_list_with_label_selector(kube: KubeAPIServer, writer: str) -> None:
    kube.put_secret("sync", "l1", {"a": "1"}, labels={"app": "otel", "tier": "edge"})
    kube.put_secret("sync", "l2", {"a": "2"}, labels={"app": "otel"})
    kube.put_secret("sync", "l3", {"a": "3"}, labels={"app": "other"})
    status, listed = call(kube, "GET", "/api/v1/namespaces/sync/secrets?labelSelector=app%3Dotel", token=writer)
    assert status == 200 and listed["kind"] == "SecretList"
    assert [item["metadata"]["name"] for item in listed["items"]] == ["l1", "l2"]
    status, edge = call(
        kube, "GET", "/api/v1/namespaces/sync/secrets?labelSelector=app%3Dotel,tier%3Dedge", token=writer
    )
    assert [item["metadata"]["name"] for item in edge["items"]] == ["l1"]


def test_rbac_resource_names_and_namespaces(kube: KubeAPIServer) -> None:
    kube.put_secret("edge", "otel-client-tls", {"tls.crt": "x"})
    kube.put_secret("edge", "other", {"k": "v"})
    kube.allow_service_account(
        "edge",
        "reader",
        ["get", "update", "list", "create"],
        ["secrets"],
        namespace="edge",
        resource_names=["otel-client-tls"],
    )
    token = kube.mint_service_account_token("edge", "reader")
    user = "system:serviceaccount:edge:reader"
    assert call(kube, "GET", "/api/v1/namespaces/edge/secrets/otel-client-tls", token=token)[0] == 200
    status, denied = call(kube, "GET", "/api/v1/namespaces/edge/secrets/other", token=token)
    assert status == 403 and denied["reason"] == "Forbidden" and denied["code"] == 403
    assert denied["message"] == (
        f'secrets "other" is forbidden: User "{user}" cannot get resource "secrets" in API group "" '
        'in the namespace "edge"'
    )
    assert denied["details"] == {"name": "other", "kind": "secrets"}
    # resourceNames never match list or create (the request carries no name)
    status, listing = call(kube, "GET", "/api/v1/namespaces/edge/secrets", token=token)
    assert status == 403 and "cannot list resource" in listing["message"]
    assert (
        call(kube, "POST", "/api/v1/namespaces/edge/secrets", token=token, body=_secret("otel-client-tls", {}))[0]
        == 403
    )
    # a RoleBinding does not reach into another namespace
    kube.put_secret("hub", "otel-client-tls", {"tls.crt": "x"})
    assert call(kube, "GET", "/api/v1/namespaces/hub/secrets/otel-client-tls", token=token)[0] == 403
    # authorisation comes before existence, like the real API
    assert call(kube, "GET", "/api/v1/namespaces/hub/secrets/missing", token=token)[0] == 403


def test_request_log_counts(kube: KubeAPIServer) -> None:
    kube.clear_log()
    kube.allow_service_account("count", "me", ["get"], ["secrets"], namespace="count")
    token = kube.mint_service_account_token("count", "me")
    for _ in range(3):
        call(kube, "GET", "/api/v1/namespaces/count/secrets/nothing", token=token)
    call(kube, "GET", "/api/v1/namespaces/count/secrets/nothing")
    path = "/api/v1/namespaces/count/secrets/nothing"
    assert kube.count("GET", path, user="system:serviceaccount:count:me") == 3
    assert kube.count("GET", path, user="system:anonymous", status=403) == 1
    assert kube.count(status=404) == 3
    assert {r.verb for r in kube.requests} == {"get"}


def test_tls_is_signed_by_the_throwaway_ca(kube: KubeAPIServer) -> None:
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(kube.url + "/version", timeout=5, context=ssl.create_default_context())
    with urllib.request.urlopen(
        kube.url + "/version", timeout=5, context=ssl.create_default_context(cafile=kube.ca_file)
    ) as response:
        assert json.loads(response.read())["major"] == "1"
    assert kube.ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    assert kube.url.startswith("https://127.0.0.1:")


def test_stop_releases_the_port() -> None:
    server = KubeAPIServer(tls=False).start()
    port = server.port
    assert server.url == f"http://127.0.0.1:{port}"
    server.stop()
    server.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


# --- RBAC objects, owners and the garbage collector (the bootstrap Job's grant) ----------------------------

RB_PATH = "/apis/rbac.authorization.k8s.io/v1/namespaces/grant/rolebindings"


def test_a_role_binding_grants_its_roles_rules_and_goes_with_its_owner() -> None:
    with KubeAPIServer() as server:
        server.create_service_account("grant", "runner")
        token = server.mint_service_account_token("grant", "runner")
        server.put_secret("grant", "state", {"k": "v"})
        server.put_secret("grant", "other", {"k": "v"})
        rules = [
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["state"], "verbs": ["get"]},
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["rolebindings"],
                "resourceNames": ["job-1"],
                "verbs": ["patch", "delete"],
            },
        ]
        server.put_role("grant", "runner", rules)
        assert call(server, "GET", "/api/v1/namespaces/grant/secrets/state", token=token)[0] == 403
        subjects = [{"kind": "ServiceAccount", "name": "runner", "namespace": "grant"}]
        server.put_role_binding("grant", "job-1", "runner", subjects)
        assert call(server, "GET", "/api/v1/namespaces/grant/secrets/state", token=token)[0] == 200
        assert call(server, "GET", "/api/v1/namespaces/grant/secrets/other", token=token)[0] == 403  # resourceNames
        assert call(server, "GET", "/api/v1/namespaces/grant/secrets", token=token)[0] == 403  # no list
        merge = "application/merge-patch+json"
        # roleRef is immutable; JSON (not a merge patch) is refused; a subject may be added by a requester that
        # holds the Role (as the real escalation check allows), which the next test refuses to one that does not
        status, body = call(
            server, "PATCH", f"{RB_PATH}/job-1", token=token, content_type=merge, body={"roleRef": {"name": "admin"}}
        )
        assert status == 422 and "cannot change roleRef" in body["message"]
        more = {"subjects": [*subjects, {"kind": "User", "name": "mallory"}]}
        assert call(server, "PATCH", f"{RB_PATH}/job-1", token=token, content_type=merge, body=more)[0] == 200
        server.put_role_binding("grant", "job-1", "runner", subjects)
        server.put_role_binding("grant", "elsewhere", "other-role", [])
        status, body = call(server, "PATCH", f"{RB_PATH}/elsewhere", token=token, content_type=merge, body={})
        assert status == 403  # resourceNames: only its own binding
        uid = server.create_job("grant", "job-1")
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "job-1", "uid": uid}
        patch = {"metadata": {"ownerReferences": [owner]}}
        assert call(server, "PATCH", f"{RB_PATH}/job-1", token=token, body=patch)[0] == 415
        status, body = call(server, "PATCH", f"{RB_PATH}/job-1", token=token, content_type=merge, body=patch)
        assert status == 200 and body["metadata"]["ownerReferences"] == [owner]
        assert server.collect_garbage() == []  # the owner exists
        server.delete_job("grant", "job-1")
        assert server.get_role_binding("grant", "job-1") is None
        assert call(server, "GET", "/api/v1/namespaces/grant/secrets/state", token=token)[0] == 403
        assert server.get_role_binding("grant", "elsewhere") is not None  # no owner: the collector leaves it


def test_setting_an_owner_needs_delete_on_the_binding() -> None:
    """OwnerReferencesPermissionEnforcement (modelled as enabled): patch alone cannot set an owner."""
    with KubeAPIServer() as server:
        server.create_service_account("grant", "runner")
        token = server.mint_service_account_token("grant", "runner")
        rule = {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["patch"]}
        server.put_role("grant", "runner", [rule])
        server.put_role_binding("grant", "job-1", "runner", [{"kind": "ServiceAccount", "name": "runner"}])
        patch = {"metadata": {"ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"}]}}
        status, body = call(
            server, "PATCH", f"{RB_PATH}/job-1", token=token, content_type="application/merge-patch+json", body=patch
        )
        assert status == 403 and 'cannot delete resource "rolebindings"' in body["message"]


def test_changing_a_binding_of_a_role_one_does_not_hold_is_an_escalation() -> None:
    with KubeAPIServer() as server:
        server.create_service_account("grant", "editor")
        token = server.mint_service_account_token("grant", "editor")
        server.allow_service_account("grant", "editor", ["patch", "delete"], ["rolebindings"], "grant")
        server.put_role_binding("grant", "admins", "admin", [])
        merge = "application/merge-patch+json"
        more = {"subjects": [{"kind": "ServiceAccount", "name": "editor", "namespace": "grant"}]}
        status, body = call(server, "PATCH", f"{RB_PATH}/admins", token=token, content_type=merge, body=more)
        assert status == 403 and "attempting to grant RBAC permissions not currently held" in body["message"]
        labels = {"metadata": {"finalizers": ["x"]}}  # a garbage-collection field only: no escalation check
        assert call(server, "PATCH", f"{RB_PATH}/admins", token=token, content_type=merge, body=labels)[0] == 200
