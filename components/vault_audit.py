"""Vault's audit devices, and the sidecar that keeps the file device's log within its volume.

Pure data, no Pulumi: ``components.vault`` declares :data:`AUDIT_DEVICES` as ``vault.Audit`` resources
and puts :func:`rotation_sidecar` into the chart's ``server.extraContainers``.

Why two devices. Vault completes a request only if at least one audit device logged it, and answers
500 otherwise (hashicorp/vault ``audit/broker.go``, ``LogRequest``: "log the given request and that
*at least one* succeeds"; openbao/openbao ``internal/vault/audit_broker.go``: "no audit backend succeeded
in logging the request"). With the file device alone, a full audit volume stops every request. The
second device writes the same entries to the server's stdout (a ``file`` device with ``file_path =
"stdout"``, Vault docs "File audit device"), which the container runtime collects with the pod logs:
it cannot fill the audit volume, and the kubelet rotates it (``containerLogMaxSize``/``containerLogMaxFiles``).
Proven on a real server (``tests/real/test_pods.py``: the Vault pod with a full audit volume keeps serving).

Why a rotation sidecar. The file device never rotates its file; on SIGHUP Vault closes and reopens it
(Vault docs "File audit device": "Sending a SIGHUP to the Vault process will cause file audit devices
to close and re-open their underlying file"; hashicorp/vault ``vault/audit.go`` registers an
``audit_file|<path>`` reload function that ``command/server.go`` runs on SIGHUP; the same in
openbao/openbao ``internal/vault/audit.go`` and ``internal/builtin/audit/file/backend.go``, ``Reload``).
The chart offers exactly this: ``server.extraContainers`` and ``server.shareProcessNamespace``, "useful if
Vault must be signaled, e.g. to send a SIGHUP for a log rotation" (vault-helm v0.34.1 ``values.yaml``
lines 565-570; ``templates/server-statefulset.yaml`` lines 57-59 and 240-242). The sidecar runs the Vault
image's own shell tools as Vault's user (uid 100: the same user may signal it, no capability needed) and,
every :data:`ROTATE_INTERVAL_SECONDS`:

1. when ``audit.log`` has reached :func:`rotate_bytes` (1/20 of the audit volume), finds the Vault
   server process by its arguments, renames the log to ``audit-<UTC time>-<n>.log`` and sends SIGHUP;
2. once Vault has created the new ``audit.log`` (it writes to the renamed file until it reopens, so
   no entry is lost), compresses the renamed files;
3. while the volume is more than :data:`MAX_USED_PERCENT` full, deletes the oldest compressed file.

So the file device keeps the newest entries within about 70 % of the volume (60 % of archives, the
live file, a file being compressed); the complete trail is the stdout copy, which a log pipeline
keeps (docs/vault.md, "Audit"). Proven on a real server: ``tests/real/test_audit_rotation.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components import versions
from components.pod_security import restricted_container

AUDIT_DIR = "/vault/audit"
AUDIT_LOG = f"{AUDIT_DIR}/audit.log"
#: The chart's volumeClaimTemplate of ``server.auditStorage`` (vault-helm ``_helpers.tpl``, ``vault.volumeclaims``).
AUDIT_VOLUME = "audit"
#: How the server process is found: the arguments the chart's start command gives it
#: (``docker-entrypoint.sh vault server -config=/tmp/storageconfig.hcl``, vault-helm ``vault.args``).
VAULT_SERVER_ARGS = "server -config=/tmp/storageconfig.hcl"
ROTATE_INTERVAL_SECONDS = 60
MAX_USED_PERCENT = 60
#: The live log is rotated at this fraction of the audit volume.
ROTATE_FRACTION = 20


@dataclass(frozen=True)
class AuditDevice:
    """One audit device as ``vault.Audit`` declares it (``sys/audit/<path>``)."""

    path: str
    type: str
    description: str
    options: dict[str, str]


AUDIT_DEVICES = (
    AuditDevice(
        path="file",
        type="file",
        description="Every request and response, HMAC'd, on the audit volume",
        options={"file_path": AUDIT_LOG, "mode": "0600"},
    ),
    AuditDevice(
        path="stdout",
        type="file",
        description="The same entries on the server's stdout, collected with the pod logs: no full disk blocks it",
        options={"file_path": "stdout"},
    ),
)


def rotate_bytes(audit_volume_bytes: int) -> int:
    """The size at which the live audit log is rotated: 1/20 of the audit volume."""
    return max(audit_volume_bytes // ROTATE_FRACTION, 1)


#: The sidecar's program (POSIX sh; only tools both the Vault image's BusyBox and Debian have).
ROTATE_SCRIPT = r"""
log="$AUDIT_LOG"
dir="${log%/*}"
vault_pid() {
  for f in $(grep -l -F -e "${VAULT_SERVER_ARGS##* }" /proc/[0-9]*/cmdline 2>/dev/null); do
    args=$(tr '\0' ' ' < "$f" 2>/dev/null | cut -d' ' -f2-3) || continue
    if [ "$args" = "$VAULT_SERVER_ARGS" ]; then p="${f#/proc/}"; echo "${p%/cmdline}"; return 0; fi
  done
  return 1
}
seq=0
while :; do
  size=$(stat -c %s "$log" 2>/dev/null || echo 0)
  if [ "$size" -ge "$ROTATE_BYTES" ]; then
    if pid=$(vault_pid); then
      rotated="$dir/audit-$(date -u +%Y%m%dT%H%M%SZ)-$(printf %04d "$seq").log"
      while [ -e "$rotated" ] || [ -e "$rotated.gz" ]; do
        seq=$((seq + 1))
        rotated="$dir/audit-$(date -u +%Y%m%dT%H%M%SZ)-$(printf %04d "$seq").log"
      done
      seq=$(((seq + 1) % 10000))
      mv "$log" "$rotated"
      kill -HUP "$pid"
      echo "audit-rotate: moved $size bytes to $rotated and signalled Vault (pid $pid) to reopen $log"
    else
      echo "audit-rotate: no process with arguments '$VAULT_SERVER_ARGS'; $log ($size bytes) not rotated" >&2
    fi
  fi
  # Vault writes to a moved file until it has reopened the log: compress only once the log is back.
  if [ -e "$log" ]; then
    for f in "$dir"/audit-*.log; do
      [ -e "$f" ] || continue
      gzip "$f" && echo "audit-rotate: compressed $f"
    done
  fi
  while [ "$(df -P "$dir" | awk 'NR == 2 { sub("%", "", $5); print $5 }')" -gt "$MAX_USED_PERCENT" ]; do
    oldest=$(ls -1 "$dir"/audit-*.log.gz 2>/dev/null | head -n 1)
    [ -n "$oldest" ] || break
    rm -f "$oldest"
    echo "audit-rotate: removed $oldest (the volume was above $MAX_USED_PERCENT% full)"
  done
  sleep "$ROTATE_INTERVAL_SECONDS"
done
"""


def rotation_env(audit_volume_bytes: int) -> dict[str, str]:
    """The sidecar's settings (environment of :data:`ROTATE_SCRIPT`)."""
    return {
        "AUDIT_LOG": AUDIT_LOG,
        "ROTATE_BYTES": str(rotate_bytes(audit_volume_bytes)),
        "MAX_USED_PERCENT": str(MAX_USED_PERCENT),
        "ROTATE_INTERVAL_SECONDS": str(ROTATE_INTERVAL_SECONDS),
        "VAULT_SERVER_ARGS": VAULT_SERVER_ARGS,
    }


def rotation_sidecar(audit_volume_bytes: int) -> dict[str, Any]:
    """The ``audit-rotate`` container of the Vault server Pods (``server.extraContainers``)."""
    return {
        "name": "audit-rotate",
        "image": f"{versions.VAULT_IMAGE}:{versions.VAULT_VERSION}",
        "command": ["/bin/sh", "-ec", ROTATE_SCRIPT],
        "env": [{"name": k, "value": v} for k, v in rotation_env(audit_volume_bytes).items()],
        "securityContext": restricted_container(),
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}},
        "volumeMounts": [{"name": AUDIT_VOLUME, "mountPath": AUDIT_DIR}],
    }
