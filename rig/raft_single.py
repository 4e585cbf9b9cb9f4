"""A single-node OpenBao Raft server with TLS on loopback (for snapshot and restore tests).

Raft snapshots need Raft storage (the dev server is in memory and has none), and a restore test
needs a second, fresh node. :class:`RaftSingleNode` builds on ``rig.openbao.BaoNode``
(process handling, deadlines, PR_SET_PDEATHSIG) and ``rig.pki.TestCA``::

    ca = TestCA("test-vault-ca")
    with RaftSingleNode(tmp_path / "a", ca) as node:
        init = node.initialize(shares=3, threshold=2)     # init + unseal + wait until active
        node.api("GET", "sys/health", token=init.root_token)

``initialize`` runs ``sys/init`` and unseals with the first ``threshold`` keys; ``unseal(keys)``
unseals with given keys (e.g. the SOURCE cluster's after a restore) and waits until the node is
active; ``wait_sealed()`` waits until it reports sealed. ``url`` is ``https://127.0.0.1:<port>``
with a certificate for ``127.0.0.1``/``localhost`` signed by ``ca``; ``ca_file`` is that CA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from rig.openbao import ApiResponse, BaoNode, free_port, wait_until
from rig.pki import TestCA

__all__ = ["InitResult", "RaftSingleNode"]


@dataclass(frozen=True)
class InitResult:
    """What ``sys/init`` returned."""

    keys: list[str]
    root_token: str
    shares: int
    threshold: int


class RaftSingleNode:
    """One ``bao server`` with ``storage "raft"`` and a TLS listener on 127.0.0.1."""

    def __init__(self, workdir: str | Path, ca: TestCA, name: str = "raft0", timeout: float = 20.0) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.timeout = timeout
        self.ca_file = str(ca.write(self.workdir, "ca.crt"))
        cert_path, key_path = ca.issue(name, ["localhost"], ["127.0.0.1"]).write(self.workdir)
        self.port = free_port()
        cluster_port = free_port()
        while cluster_port == self.port:
            cluster_port = free_port()
        data_dir = self.workdir / "data"
        data_dir.mkdir(exist_ok=True)
        self.url = f"https://127.0.0.1:{self.port}"
        config = f"""
ui = false
log_level = "info"
api_addr = "{self.url}"
cluster_addr = "https://127.0.0.1:{cluster_port}"

storage "raft" {{
  path                   = "{data_dir}"
  node_id                = "{name}"
  performance_multiplier = 1
}}

listener "tcp" {{
  address         = "127.0.0.1:{self.port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_cert_file   = "{cert_path}"
  tls_key_file    = "{key_path}"
}}
"""
        self.node = BaoNode(name, config, self.workdir, self.url, self.ca_file, start_timeout=timeout)

    def start(self) -> RaftSingleNode:
        """Start the process and wait until its API answers."""
        self.node.start(wait=True)
        return self

    def stop(self) -> None:
        """Kill the process (idempotent)."""
        self.node.kill()

    def __enter__(self) -> RaftSingleNode:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def api(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: dict[str, Any] | None = None,
        timeout: float = 5.0,
    ) -> ApiResponse:
        return self.node.api(method, path, token=token, body=body, timeout=timeout)

    def log_text(self) -> str:
        return self.node.log_text()

    def initialize(self, shares: int = 1, threshold: int = 1) -> InitResult:
        """``sys/init`` with Shamir ``shares``/``threshold``, unseal, wait until active."""
        resp = self.api("PUT", "sys/init", body={"secret_shares": shares, "secret_threshold": threshold})
        if resp.status != 200:
            raise RuntimeError(f"sys/init on {self.url} failed: {resp.status} {resp.text}")
        result = InitResult(list(resp.body["keys_base64"]), str(resp.body["root_token"]), shares, threshold)
        self.unseal(result.keys[:threshold])
        return result

    def unseal(self, keys: list[str]) -> None:
        """Send unseal keys, then wait (deadline) until the node is unsealed and active."""
        for key in keys:
            resp = self.api("PUT", "sys/unseal", body={"key": key})
            if resp.status != 200:
                raise RuntimeError(f"unseal of {self.url} failed: {resp.status} {resp.text}")
        self.wait_active()

    def wait_active(self) -> None:
        def active() -> bool:
            return self.api("GET", "sys/health", timeout=2).status == 200

        wait_until(active, self.timeout, 0.1, f"{self.name} to be unsealed and active", ignore=(OSError,))

    def wait_sealed(self) -> None:
        def sealed() -> bool:
            return bool(self.api("GET", "sys/seal-status", timeout=2).body.get("sealed"))

        wait_until(sealed, self.timeout, 0.1, f"{self.name} to report sealed", ignore=(OSError,))
