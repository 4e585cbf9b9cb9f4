"""The Pod Security "restricted" settings every pod of the platform runs with."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

#: A non-root user of the programs image (distroless' "nonroot").
PROGRAMS_UID = 65532


def restricted_container() -> dict[str, Any]:
    """Container securityContext: non-root, read-only root filesystem, no privilege escalation,
    every capability dropped, the runtime's default seccomp profile."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_pod(uid: int = PROGRAMS_UID) -> dict[str, Any]:
    """Pod securityContext for the programs image."""
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "seccompProfile": {"type": "RuntimeDefault"}}


def restricted_namespace(resource_name: str, namespace: str, opts: pulumi.ResourceOptions) -> k8s.core.v1.Namespace:
    """A Namespace whose Pods must meet the "restricted" Pod Security Standard (enforced by the API server)."""
    return k8s.core.v1.Namespace(
        resource_name,
        metadata={"name": namespace, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        opts=opts,
    )
