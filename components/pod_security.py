"""The Pod Security "restricted" settings every pod of the platform runs with."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

#: A non-root user of the programs image (distroless' "nonroot").
PROGRAMS_UID = 65532
#: ``defaultMode`` of a Secret volume whose files a non-root container reads. The kubelet writes them
#: owned by root (kubernetes ``pkg/volume/util/atomic_writer.go``), so a non-root user reads them only
#: through a Pod ``fsGroup``: the kubelet then chowns them to that group and adds group read
#: (``pkg/volume/volume_linux.go`` ``SetVolumeOwnership``, ``roMask = 0440``) - hence
#: ``restricted_pod(..., reads_secret_files=True)``. This mode keeps the files from being world-readable
#: (the default is 0644). Proven on rung 5 (``tests/real/test_pods.py``; the rules in docs/testing.md).
SECRET_FILE_MODE = 0o440


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


def restricted_pod(uid: int = PROGRAMS_UID, *, reads_secret_files: bool = False) -> dict[str, Any]:
    """Pod securityContext running as ``uid``; ``reads_secret_files`` adds ``fsGroup: uid`` so the
    kubelet makes the Pod's Secret-volume files (``SECRET_FILE_MODE``) readable by that user."""
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if reads_secret_files:
        context["fsGroup"] = uid
    return context


def restricted_namespace(resource_name: str, namespace: str, opts: pulumi.ResourceOptions) -> k8s.core.v1.Namespace:
    """A Namespace whose Pods must meet the "restricted" Pod Security Standard (enforced by the API server)."""
    return k8s.core.v1.Namespace(
        resource_name,
        metadata={"name": namespace, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        opts=opts,
    )


def baseline_namespace(resource_name: str, namespace: str, opts: pulumi.ResourceOptions) -> k8s.core.v1.Namespace:
    """A Namespace that enforces the "baseline" Pod Security Standard and warns and audits against
    "restricted": for Pods a third-party controller builds that cannot meet "restricted". The Jupyter
    Notebook Validator Operator v1.0.8 (commit 2d4323d4) gives its validation Pod no seccomp profile
    and runs its git-clone init container without ``runAsNonRoot``
    (internal/controller/notebookvalidationjob_controller.go ``createValidationPod``,
    internal/controller/git_helper.go ``buildGitCloneInitContainer``)."""
    return k8s.core.v1.Namespace(
        resource_name,
        metadata={
            "name": namespace,
            "labels": {
                "pod-security.kubernetes.io/enforce": "baseline",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            },
        },
        opts=opts,
    )
