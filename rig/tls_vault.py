"""A real OpenBao server with TLS and a file audit device, in memory, for tests of what crosses
Vault's API (cert-sync, the hub and edge flow).

``start_vault(name, workdir, ca, audit=...)`` starts one (TLS certificate for 127.0.0.1 from the test CA,
the audit log in ``workdir/audit.log`` unless ``audit`` gives other stanzas: OpenBao takes audit devices
only from its config);
``initialise(name, node, kv=True)`` inits and unseals it and, unless ``kv=False``, mounts KV v2 at
``kv`` with ``cas_required``. :class:`Vault` reads KV state and counts writes in the audit log.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rig.openbao import ApiResponse, BaoNode, free_port, wait_until
from rig.pki import TestCA


@dataclass
class Vault:
    """One real OpenBao server (in memory, TLS, file audit device), initialised and unsealed."""

    name: str
    node: BaoNode
    root: str
    audit_path: Path

    @property
    def url(self) -> str:
        return self.node.url

    @property
    def ca_file(self) -> str:
        assert self.node.ca_file
        return self.node.ca_file

    def api(self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> ApiResponse:
        return self.node.api(method, path, token=token or self.root, body=body)

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> ApiResponse:
        resp = self.api(method, path, body)
        assert resp.status in (200, 204), (self.name, method, path, resp.status, resp.text)
        return resp

    def version(self, path: str) -> int:
        """The KV v2 current version of ``kv/<path>`` (0: nothing), read from metadata (no write)."""
        resp = self.api("GET", f"kv/metadata/{path}")
        if resp.status == 404:
            return 0
        assert resp.status == 200, resp.text
        return int(resp.data["current_version"])

    def kv(self, path: str) -> dict[str, Any] | None:
        resp = self.api("GET", f"kv/data/{path}")
        return resp.data.get("data") if resp.status == 200 else None

    def put(self, path: str, data: dict[str, str]) -> int:
        """A write by someone else (root), with the right cas."""
        resp = self.ok("POST", f"kv/data/{path}", {"options": {"cas": self.version(path)}, "data": data})
        return int(resp.data["version"])

    def audit_mark(self) -> int:
        return len(self.audit_path.read_bytes()) if self.audit_path.exists() else 0

    def audit_requests(self, since: int = 0) -> list[dict[str, Any]]:
        """Request entries of the real server's audit log written after byte offset ``since``."""
        return audit_requests(self.audit_path, since)

    def kv_writes(self, since: int) -> list[str]:
        """Paths of every create/update request on ``kv/data/`` after ``since`` (allowed or not)."""
        return [
            r["path"]
            for r in self.audit_requests(since)
            if r.get("operation") in ("create", "update") and str(r.get("path", "")).startswith("kv/data/")
        ]

    def count(self, since: int, path: str) -> int:
        return sum(1 for r in self.audit_requests(since) if r.get("path") == path)


def audit_requests(audit_path: Path, since: int = 0) -> list[dict[str, Any]]:
    """Request entries of a file audit device's log written after byte offset ``since``."""
    with open(audit_path, "rb") as handle:
        handle.seek(since)
        lines = handle.read().splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    return [e["request"] for e in entries if e.get("type") == "request"]


#: The audit device of :func:`start_vault` unless the caller gives its own stanzas.
DEFAULT_AUDIT = """audit "file" "file" {
  options {
    file_path = "audit.log"
  }
}
"""


def start_vault(
    name: str, workdir: Path, ca: TestCA, dns_names: Sequence[str] = ("localhost",), *, audit: str = DEFAULT_AUDIT
) -> BaoNode:
    """A started (not initialised) server; ``audit`` replaces its audit stanzas (``DEFAULT_AUDIT``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = ca.issue(f"{name}-vault", list(dns_names), ["127.0.0.1"]).write(workdir)
    ca_file = str(ca.write(workdir, "ca.crt"))
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    config = f"""
ui = false
log_level = "info"
api_addr = "{url}"
storage "inmem" {{}}
listener "tcp" {{
  address       = "127.0.0.1:{port}"
  tls_cert_file = "{cert_path}"
  tls_key_file  = "{key_path}"
}}
{audit}"""
    node = BaoNode(name, config, workdir, url, ca_file)
    node.start(wait=True)
    return node


def initialise(name: str, node: BaoNode, *, kv: bool = True, audit_path: Path | None = None) -> Vault:
    """Init (one key) and unseal; ``audit_path``: the file audit log, ``workdir/audit.log`` by default."""
    init = node.api("PUT", "sys/init", body={"secret_shares": 1, "secret_threshold": 1})
    assert init.status == 200, init.text
    assert node.api("PUT", "sys/unseal", body={"key": init.body["keys_base64"][0]}).status == 200
    wait_until(
        lambda: node.api("GET", "sys/health", timeout=2).status == 200,
        20,
        0.05,
        f"{name} Vault to be active",
        ignore=(OSError,),
    )
    vault = Vault(name, node, str(init.body["root_token"]), audit_path or node.workdir / "audit.log")
    if not kv:
        return vault
    vault.ok("POST", "sys/mounts/kv", {"type": "kv", "options": {"version": "2"}})

    def configured() -> bool:  # a new KV v2 mount needs a moment before it takes its config
        return vault.api("POST", "kv/config", {"cas_required": True, "max_versions": 10}).status in (200, 204)

    wait_until(configured, 10, 0.1, f"kv/config on the {name} Vault")
    assert vault.api("GET", "kv/config").data["cas_required"] is True
    return vault
