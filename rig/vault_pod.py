"""The Vault server Pod the vault chart (hashicorp/vault-helm v0.34.1) renders from a stack's values.

No Helm runs here, so the parts of the StatefulSet's Pod template that matter to the container are
derived from the chart's templates at tag v0.34.1 (read upstream; line numbers at that tag):

* ``templates/server-statefulset.yaml``: ``command: ["/bin/sh", "-ec"]``, ``args: vault.args``; the
  ``env`` list (``HOST_IP``/``POD_IP`` from ``status.hostIP``/``status.podIP``, ``VAULT_K8S_POD_NAME``,
  ``VAULT_K8S_NAMESPACE``, ``VAULT_ADDR=https://127.0.0.1:8200``, ``VAULT_API_ADDR=https://$(POD_IP):8200``,
  ``SKIP_CHOWN``/``SKIP_SETCAP=true``, ``HOSTNAME`` = pod name, ``VAULT_CLUSTER_ADDR=
  https://$(HOSTNAME).<fullname>-internal:8201``, ``VAULT_RAFT_NODE_ID`` = pod name with
  ``ha.raft.setNodeId``, ``HOME=/home/vault``, then ``server.extraEnvironmentVars`` and
  ``server.extraSecretEnvironmentVars``); volumes ``vault.volumes`` + ``home`` (emptyDir); mounts
  ``vault.mounts`` + ``home`` at ``/home/vault``.
* ``templates/_helpers.tpl``: ``vault.volumes`` (``config`` = ConfigMap ``<fullname>-config`` when
  ``ha.config`` or ``standalone.config`` is set -- ``ha.config`` has a non-empty default -- then
  ``server.volumes`` as given); ``vault.mounts`` (``audit`` at ``auditStorage.mountPath``, ``data`` at
  ``dataStorage.mountPath`` with raft, ``config`` at ``/vault/config``, then ``server.volumeMounts``);
  ``vault.args`` lines 223-251 (``VAULT_ARGS_RAFT`` below); ``server.statefulSet.securityContext.pod``
  (lines 573-589: the value if set, else ``runAsNonRoot, runAsGroup 1000, runAsUser 100, fsGroup 1000``)
  and ``...container`` (lines 594-607: the value if set, else ``allowPrivilegeEscalation: false``);
  ``vault.config`` (lines 1140-...: ``ha.raft.config`` through ``tpl``, ``disable_mlock = true``
  appended unless the HCL sets ``disable_mlock``).
* ``templates/server-statefulset.yaml`` lines 168-189: with ``server.readinessProbe.enabled`` the
  container's ``readinessProbe`` is an ``httpGet`` of ``readinessProbe.path`` on ``readinessProbe.port``
  with the scheme of ``global.tlsDisable`` (HTTPS here) when a path is set, else the ``exec`` of
  ``vault status -tls-skip-verify``; thresholds and periods from ``values.yaml`` (lines 582-598).
  ``server.livenessProbe`` is disabled by default (``values.yaml`` line 601) and the stacks leave it so.
* ``templates/server-statefulset.yaml`` lines 57-59 and 240-242: ``shareProcessNamespace: true`` when
  ``server.shareProcessNamespace`` is set; ``server.extraContainers`` appended to the containers as given.
* ``templates/server-config-configmap.yaml``: the ConfigMap holds that config as
  ``extraconfig-from-values.hcl``.
* The ``data``/``audit`` volumes are the StatefulSet's ``volumeClaimTemplates`` (PVCs).

Only the HA-with-Raft path the stacks use is derived; anything else raises ``ValueError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

CHART_TAG = "v0.34.1"

#: ``vault.args`` (templates/_helpers.tpl lines 225-232, 240-246 at v0.34.1) for mode ``ha`` with
#: ``ha.raft.enabled`` and ``redundancyZones.enabled`` false, ``server.extraArgs`` empty.
VAULT_ARGS_RAFT = (
    "cp /vault/config/extraconfig-from-values.hcl /tmp/storageconfig.hcl;\n"
    '[ -n "${HOST_IP}" ] && sed -Ei "s|HOST_IP|${HOST_IP?}|g" /tmp/storageconfig.hcl;\n'
    '[ -n "${POD_IP}" ] && sed -Ei "s|POD_IP|${POD_IP?}|g" /tmp/storageconfig.hcl;\n'
    '[ -n "${HOSTNAME}" ] && sed -Ei "s|HOSTNAME|${HOSTNAME?}|g" /tmp/storageconfig.hcl;\n'
    '[ -n "${API_ADDR}" ] && sed -Ei "s|API_ADDR|${API_ADDR?}|g" /tmp/storageconfig.hcl;\n'
    '[ -n "${TRANSIT_ADDR}" ] && sed -Ei "s|TRANSIT_ADDR|${TRANSIT_ADDR?}|g" /tmp/storageconfig.hcl;\n'
    '[ -n "${RAFT_ADDR}" ] && sed -Ei "s|RAFT_ADDR|${RAFT_ADDR?}|g" /tmp/storageconfig.hcl;\n'
    "if grep -vE '^[[:space:]]*(#|//)' /tmp/storageconfig.hcl | grep -qE "
    '\'\\"?autopilot_redundancy_zone\\"?[[:space:]]*[=:][[:space:]]*\\"VAULT_REDUNDANCY_ZONE\\"\'; then\n'
    '  echo "ERROR: autopilot_redundancy_zone placeholder found but server.ha.raft.redundancyZones.enabled=false. '
    'Enable the feature or remove the placeholder." >&2;\n'
    "  exit 1;\n"
    "fi;\n"
    "/usr/local/bin/docker-entrypoint.sh vault server -config=/tmp/storageconfig.hcl \n"
)


def _check(values: Mapping[str, Any]) -> None:
    server = values["server"]
    ha = server.get("ha", {})
    if not (ha.get("enabled") and ha.get("raft", {}).get("enabled")):
        raise ValueError("only the HA Raft server is derived")
    if ha.get("raft", {}).get("redundancyZones", {}).get("enabled") or server.get("extraArgs"):
        raise ValueError("redundancy zones and server.extraArgs are not derived")
    if server.get("extraVolumes") or server.get("enterpriseLicense", {}).get("secretName"):
        raise ValueError("server.extraVolumes and enterpriseLicense are not derived")
    if "config" in ha and not ha["config"]:
        raise ValueError("an empty server.ha.config drops the config volume: not derived")


def config_map_data(values: Mapping[str, Any]) -> dict[str, str]:
    """The ``<fullname>-config`` ConfigMap's data (``vault.config`` for HA Raft)."""
    config = str(values["server"]["ha"]["raft"]["config"])
    if "{{" in config:
        raise ValueError("the config uses Helm templating (tpl): not derived")
    if not re.search(r"(?m)^\s*disable_mlock\s*=\s*(true|false)", config):
        config = f"{config}\ndisable_mlock = true"
    return {"extraconfig-from-values.hcl": config}


#: ``server.readinessProbe`` defaults of the chart's ``values.yaml`` (v0.34.1, lines 582-598).
READINESS_DEFAULTS = {
    "port": 8200,
    "failureThreshold": 2,
    "initialDelaySeconds": 5,
    "periodSeconds": 5,
    "successThreshold": 1,
    "timeoutSeconds": 3,
}


def readiness_probe(values: Mapping[str, Any]) -> dict[str, Any] | None:
    """The server container's ``readinessProbe`` as ``templates/server-statefulset.yaml`` renders it."""
    given = values["server"].get("readinessProbe") or {}
    settings = {**READINESS_DEFAULTS, "enabled": True, **given}
    if not settings["enabled"]:
        return None
    scheme = "HTTP" if values.get("global", {}).get("tlsDisable") else "HTTPS"
    handler: dict[str, Any]
    if settings.get("path"):
        handler = {"httpGet": {"path": settings["path"], "port": settings["port"], "scheme": scheme}}
    else:
        handler = {"exec": {"command": ["/bin/sh", "-ec", "vault status -tls-skip-verify"]}}
    timings = ("failureThreshold", "initialDelaySeconds", "periodSeconds", "successThreshold", "timeoutSeconds")
    return {**handler, **{key: settings[key] for key in timings}}


def vault_server_pod(values: Mapping[str, Any], *, release: str = "vault") -> dict[str, Any]:
    """The server StatefulSet's Pod template (``metadata``, ``spec``) as the chart renders it from ``values``."""
    _check(values)
    server = values["server"]
    fullname = release
    statefulset_sc = server.get("statefulSet", {}).get("securityContext", {})
    pod_sc = statefulset_sc.get("pod") or {
        "runAsNonRoot": True,
        "runAsGroup": server.get("gid") or 1000,
        "runAsUser": server.get("uid") or 100,
        "fsGroup": server.get("gid") or 1000,
    }
    container_sc = statefulset_sc.get("container") or {"allowPrivilegeEscalation": False}
    scheme = "http" if values.get("global", {}).get("tlsDisable") else "https"
    env: list[dict[str, Any]] = [
        {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "VAULT_K8S_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "VAULT_K8S_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "VAULT_ADDR", "value": f"{scheme}://127.0.0.1:8200"},
        {"name": "VAULT_API_ADDR", "value": server["ha"].get("apiAddr") or f"{scheme}://$(POD_IP):8200"},
        {"name": "SKIP_CHOWN", "value": "true"},
        {"name": "SKIP_SETCAP", "value": "true"},
        {"name": "HOSTNAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {
            "name": "VAULT_CLUSTER_ADDR",
            "value": server["ha"].get("clusterAddr") or f"https://$(HOSTNAME).{fullname}-internal:8201",
        },
    ]
    if server["ha"]["raft"].get("setNodeId"):
        env.append({"name": "VAULT_RAFT_NODE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    env.append({"name": "HOME", "value": "/home/vault"})
    env += [{"name": k, "value": str(v)} for k, v in (server.get("extraEnvironmentVars") or {}).items()]
    env += [
        {"name": e["envName"], "valueFrom": {"secretKeyRef": {"name": e["secretName"], "key": e["secretKey"]}}}
        for e in server.get("extraSecretEnvironmentVars") or []
    ]
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": f"{fullname}-config"}}]
    volumes += list(server.get("volumes") or [])
    volumes.append({"name": "home", "emptyDir": {}})
    mounts: list[dict[str, Any]] = []
    if server.get("auditStorage", {}).get("enabled"):
        mounts.append({"name": "audit", "mountPath": server["auditStorage"]["mountPath"]})
        volumes.append({"name": "audit", "persistentVolumeClaim": {"claimName": "audit"}})
    if server.get("dataStorage", {}).get("enabled"):
        mounts.append({"name": "data", "mountPath": server["dataStorage"]["mountPath"]})
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": "data"}})
    mounts.append({"name": "config", "mountPath": "/vault/config"})
    mounts += list(server.get("volumeMounts") or [])
    mounts.append({"name": "home", "mountPath": "/home/vault"})
    image = server["image"]
    container: dict[str, Any] = {
        "name": "vault",
        "image": f"{image['repository']}:{image['tag']}",
        "command": ["/bin/sh", "-ec"],
        "args": [VAULT_ARGS_RAFT],
        "securityContext": dict(container_sc),
        "env": env,
        "volumeMounts": mounts,
    }
    probe = readiness_probe(values)
    if probe is not None:
        container["readinessProbe"] = probe
    return {
        "metadata": {"labels": {"app.kubernetes.io/name": "vault", "component": "server"}},
        "spec": {
            "serviceAccountName": fullname,
            **({"shareProcessNamespace": True} if server.get("shareProcessNamespace") else {}),
            "securityContext": dict(pod_sc),
            "volumes": volumes,
            "containers": [container, *(server.get("extraContainers") or [])],
        },
    }
