"""A Pod's container, run here as the kubelet would run it: its Pod spec enforced by the kernel.

No kubelet, container runtime or image runs on this machine, but what a Pod spec asks of the kernel
can be enforced for real (facts measured in ``../shared/REAL-PEERS.md``, "A Pod's container"):

* **Filesystem** -- Debian's ``bwrap`` (bubblewrap) builds a private mount namespace. Its root is a
  fresh tmpfs holding the "image" (below) and nothing else: the host's system directories
  (``IMAGE_HOST_DIRS``: ``/usr``, ``/etc``, ``/var``, ``/opt``, ``/bin``, ``/lib*``...) bound read-only,
  the image's own files, an empty ``/tmp`` (mode 1777, as in every base image) and ``/proc``, ``/dev``.
  Then each of the container's ``volumeMounts``, and only those, is bound at its ``mountPath``
  (``subPath`` honoured); finally, with ``readOnlyRootFilesystem: true``, the root itself is remounted
  read-only (``--remount-ro /``), as runc does after creating the mount points. So a write anywhere
  but a writable volume fails with "Read-only file system". (``--ro-bind / /`` cannot be used: it
  leaves no way to create mount points such as ``/fedobs/admin`` that exist only in the image.)
  Without ``readOnlyRootFilesystem`` the tmpfs root stays writable while the host's directories stay
  read-only: no container of the stacks runs so, and such a container would get an error, not a
  silently writable host.
* **Identity** -- util-linux ``setpriv --reuid U --regid G --groups fsGroup,supplementalGroups`` runs
  INSIDE bwrap, so the process really is that uid (bwrap's own ``--uid`` maps the user onto root in a
  user namespace and so bypasses file permissions). ``allowPrivilegeEscalation: false`` ->
  ``--no-new-privs``; ``capabilities.drop: [ALL]`` -> an empty bounding and inheritable set (a non-root
  uid has no effective capabilities anyway). ``runAsNonRoot: true`` with uid 0 is refused before the
  start, as the kubelet refuses it (``CreateContainerConfigError``).
* **Network** is shared (the loopback peers the tests start); PID, IPC and UTS namespaces are private,
  the hostname is the pod name (as in a pod).
* **Volumes** are laid out on the host under ``workdir/volumes/<name>`` with the kubelet's documented
  ownership and modes (upstream sources in ``docs/testing.md``, rung 5):

  - Secret, ConfigMap, projected, downwardAPI (``pkg/volume/util/atomic_writer.go``): the volume
    directory is a tmpfs root (mode 1777); the payload is written into a ``..<timestamp>`` directory
    (``os.Chmod(tsDir, 0755)``), each file with its item ``mode`` or the volume's ``defaultMode``
    (0644 when unset: the API server's default, ``SecretVolumeSourceDefaultMode``), owned by root;
    ``..data`` is a symlink to it and each top-level name a symlink ``name -> ..data/name``.
    ``items`` select and rename keys (a missing key is an error unless ``optional``).
  - A projected ``serviceAccountToken`` file (``pkg/volume/projected/projected.go``): mode 0600 instead
    of ``defaultMode`` when the pod has an fsUser or fsGroup, owned by the fsUser
    (``FsUserFrom``: the runAsUser all containers share, if they share one).
  - ``pkg/volume/volume_linux.go`` ``SetVolumeOwnership`` with a Pod ``fsGroup`` (``changeFilePermission``):
    every file and directory (not symlinks) gets group fsGroup and mode ``|= 0440`` for read-only volume
    kinds (Secret, ConfigMap, projected, downwardAPI) or ``|= 0660`` for writable ones (emptyDir, a
    persistent volume), directories also ``|= 0110 | setgid``. The fsGroup is a supplemental group of
    every container. Without fsGroup nothing is changed: a root-owned 0400 file is readable by root only.
  - emptyDir (``pkg/volume/emptydir``): a directory of mode 0777; with fsGroup as above (group-owned,
    setgid). A ``persistentVolumeClaim`` is a fresh filesystem root (0755, root) with the same
    ownership change; given a capacity (``capacities``) it is a tmpfs of that size, so a write past
    it fails with ENOSPC as on a full volume (mounting needs root; ``close()`` unmounts).
  - The kubelet mounts Secret, ConfigMap, projected and downwardAPI volumes read-only whatever the
    mount says; other volumes are read-only only with ``readOnly: true``.
* **ServiceAccount admission**: unless ``automountServiceAccountToken: false``, the pod gets the
  ``kube-api-access`` projected volume at ``/var/run/secrets/kubernetes.io/serviceaccount`` (token
  with ``expirationSeconds: 3607``, ``ca.crt`` from ``kube-root-ca.crt``, ``namespace``; defaultMode 0644)
  as ``plugin/pkg/admission/serviceaccount`` adds it, and ``KUBERNETES_SERVICE_HOST``/``_PORT`` name
  the API server (the loopback fake, when the test gives one).
* **Environment**: the image's (``Image.env``), ``HOSTNAME``, the Kubernetes service variables, then the
  container's ``env`` in order: plain values with ``$(VAR)`` expanded from earlier entries (``$$`` escapes),
  ``valueFrom.secretKeyRef``/``configMapKeyRef`` from the test's objects and ``fieldRef`` for the pod's
  name, namespace, IPs, service account and labels (``metadata.labels['<key>']``: the template's plus
  those a controller adds, given as ``labels``; "" for one the pod lacks). A test's localisations (an
  address that has no DNS name here) are passed explicitly (``env_overrides``) and nothing else is changed.
* **Probes** are not run by the sandbox; :func:`http_probe` runs a container's ``httpGet`` probe once
  with the kubelet's rule (``pkg/probe/http/http.go``) against the address a test gives.
* **Command**: the container's ``command`` + ``args`` exactly (an image entrypoint is not modelled: every
  container here declares its command), resolved on the image's ``PATH`` in its ``workingDir``.

Images (``Image``): no image can be pulled here, so each is mapped onto what exists here, read-only:

* ``programs_image()`` for ``ghcr.io/fedobs/programs`` (``programs/Containerfile``: python:3.11-slim,
  ``COPY programs /opt/fedobs/programs``, ``WORKDIR /opt/fedobs``, ``USER 65532:65532``,
  ``PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1``): the repository's ``programs/`` at
  ``/opt/fedobs/programs``, and ``python`` on ``PATH`` is the interpreter of the programs' own
  environment (``rig.programs_env``: ``programs/requirements.lock`` only, as the Containerfile installs
  it; its ``bin`` first on ``PATH``; the environment and its base interpreter are bound read-only at
  their own paths, their parents created traversable). So ``python -m programs.X`` runs the
  repository's code with exactly the image's packages.
* ``vault_image(bao)`` for ``hashicorp/vault``: ``vault`` on ``PATH`` is the OpenBao ``bao`` binary and
  ``/usr/local/bin/docker-entrypoint.sh`` is the part of the image's entrypoint the chart's command
  reaches (see ``VAULT_ENTRYPOINT``).
"""

from __future__ import annotations

import os
import re
import ssl
import stat
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig import processes
from rig.programs_env import PROGRAMS_VENV, programs_python

REPO = Path(__file__).resolve().parents[1]

BWRAP = "/usr/bin/bwrap"
SETPRIV = "/usr/bin/setpriv"

#: The host directories that stand in for an image's system directories (read-only).
IMAGE_HOST_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "var", "opt")
#: Where the ServiceAccount admission plugin mounts the API access volume.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: The API server's default ``defaultMode`` of Secret, ConfigMap, projected and downwardAPI volumes.
DEFAULT_MODE = 0o644
#: Volume kinds the kubelet always mounts read-only (and ``SetVolumeOwnership`` treats as read-only).
READ_ONLY_KINDS = ("secret", "configMap", "projected", "downwardAPI")

_RO_MASK, _RW_MASK, _EXEC_MASK = 0o440, 0o660, 0o110

#: ``hashicorp/vault``'s ``docker-entrypoint.sh``, reduced to the path the chart's start command takes:
#: it calls ``docker-entrypoint.sh vault server -config=/tmp/storageconfig.hcl`` with ``SKIP_CHOWN`` and
#: ``SKIP_SETCAP`` set and a non-root user, so upstream only disables core dumps (``ulimit -c 0``), skips
#: the chown/setcap branches and ``exec``s its arguments (``$1 = vault``: no ``-config=/vault/config`` is
#: added, that is only for ``$1 = server``).
VAULT_ENTRYPOINT = """#!/bin/sh
set -e
ulimit -c 0
if [ "$1" = 'vault' ] && [ -z "$SKIP_CHOWN" ]; then echo "docker-entrypoint.sh: chown is not modelled" >&2; exit 1; fi
if [ "$1" = 'vault' ] && [ -z "$SKIP_SETCAP" ]; then echo "docker-entrypoint.sh: setcap is not modelled" >&2; exit 1; fi
if [ "$(id -u)" = '0' ]; then echo "docker-entrypoint.sh: su-exec is not modelled" >&2; exit 1; fi
exec "$@"
"""


class PodSpecError(ValueError):
    """The Pod spec asks for something the kubelet would refuse, or this sandbox does not model."""


@dataclass(frozen=True)
class Image:
    """What an image gives its containers, mapped onto this machine (read-only)."""

    name: str
    user: int
    group: int
    workdir: str
    env: Mapping[str, str]
    #: container path -> host path, bound read-only
    binds: Mapping[str, str] = field(default_factory=dict)
    #: container path -> file content (executable), written by the sandbox and bound read-only
    files: Mapping[str, str] = field(default_factory=dict)


def programs_image(repo: Path = REPO) -> Image:
    """``ghcr.io/fedobs/programs`` (``programs/Containerfile``) as it runs here: see the module docstring."""
    venv = PROGRAMS_VENV
    base = Path(programs_python()).resolve().parents[1]
    path = f"{venv}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    binds = {"/opt/fedobs/programs": str(repo / "programs"), str(venv): str(venv)}
    if base != venv:
        binds[str(base)] = str(base)
    return Image(
        name="ghcr.io/fedobs/programs",
        user=65532,
        group=65532,
        workdir="/opt/fedobs",
        env={"PATH": path, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"},
        binds=binds,
    )


#: Where the vault image's stand-in binary (OpenBao's ``bao``) sits inside the sandbox.
VAULT_BINARY_IN_IMAGE = "/opt/openbao/bin/bao"


def vault_image(vault_binary: str) -> Image:
    """``hashicorp/vault`` as it runs here: ``vault`` is ``vault_binary`` (OpenBao's ``bao``), the
    entrypoint is ``VAULT_ENTRYPOINT``; the image's user is ``vault`` (uid 100, group 1000)."""
    return Image(
        name="hashicorp/vault",
        user=100,
        group=1000,
        workdir="/",
        env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
        # At a path of the image's own, not the host's: a checkout under /tmp would otherwise be hidden
        # by the Pod's /tmp emptyDir (the chart's start command needs one).
        binds={VAULT_BINARY_IN_IMAGE: str(Path(vault_binary).resolve())},
        files={
            "/usr/local/bin/docker-entrypoint.sh": VAULT_ENTRYPOINT,
            "/usr/local/bin/vault": f'#!/bin/sh\nexec {VAULT_BINARY_IN_IMAGE} "$@"\n',
        },
    )


@dataclass
class Cluster:
    """What the API server holds for the pod: the objects its volumes and env refer to."""

    namespace: str
    #: Secret name -> data (decoded text, as ``stringData``)
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: ConfigMap name -> data
    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: ``(audience or None, expirationSeconds) -> JWT`` of the pod's ServiceAccount (projected tokens)
    token: Callable[[str | None, int], str] | None = None
    #: ``(host, port, CA PEM)`` of the API server (KUBERNETES_SERVICE_HOST/PORT, ``kube-root-ca.crt``)
    api_server: tuple[str, int, str] | None = None


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]
    read_only_root: bool
    no_new_privs: bool
    drop_all_capabilities: bool


def _sc(pod_spec: Mapping[str, Any], container: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """The effective value of a securityContext field: the container's, else the pod's."""
    for context in (container.get("securityContext") or {}, pod_spec.get("securityContext") or {}):
        if key in context:
            return context[key]
    return default


def fs_user(pod_spec: Mapping[str, Any]) -> int | None:
    """``FsUserFrom``: the runAsUser every container of the pod shares, else None."""
    users = {_sc(pod_spec, c, "runAsUser") for c in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]}
    return next(iter(users)) if len(users) == 1 and None not in users else None


class PodSandbox:
    """One container of a Pod, with its volumes laid out under ``workdir`` (see the module docstring).

    ``pod`` is a Pod template (``{"metadata": ..., "spec": ...}``) or a Pod spec. ``extra_volumes`` and
    ``extra_mounts`` add what an admission webhook would add (e.g. the agent injector's
    ``/vault/secrets`` emptyDir); tests name them explicitly. ``capacities`` gives persistent volumes a
    size (volume name -> bytes): such a volume is a filesystem of that size (a tmpfs; use the sandbox
    as a context manager, or call ``close()``, to unmount it)."""

    def __init__(
        self,
        pod: Mapping[str, Any],
        container: str,
        image: Image,
        cluster: Cluster,
        workdir: Path,
        *,
        pod_name: str = "pod-0",
        pod_ip: str = "127.0.0.1",
        host_ip: str = "127.0.0.1",
        extra_volumes: Sequence[Mapping[str, Any]] = (),
        extra_mounts: Sequence[Mapping[str, Any]] = (),
        capacities: Mapping[str, int] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        spec = dict(pod.get("spec", pod))
        #: the Pod's labels: its template's, plus what a controller adds (``labels``: a Job's job-name, controller-uid)
        self.labels = {**((pod.get("metadata") or {}).get("labels") or {}), **(labels or {})}
        #: volume name -> bytes: a persistentVolumeClaim with a capacity is a filesystem of that size
        self.capacities = dict(capacities or {})
        self._mounted: list[Path] = []
        self.spec = spec
        self.image = image
        self.cluster = cluster
        self.workdir = workdir
        self.pod_name, self.pod_ip, self.host_ip = pod_name, pod_ip, host_ip
        self.service_account: str = spec.get("serviceAccountName", "default")
        matches = [c for c in spec["containers"] if c["name"] == container]
        if len(matches) != 1:
            raise PodSpecError(f"the pod has no container {container!r}")
        self.container: dict[str, Any] = dict(matches[0])
        self.volumes: list[dict[str, Any]] = [dict(v) for v in [*spec.get("volumes", []), *extra_volumes]]
        self.mounts: list[dict[str, Any]] = [dict(m) for m in [*self.container.get("volumeMounts", []), *extra_mounts]]
        if spec.get("automountServiceAccountToken", True) is not False:
            self._admit_service_account_volume()
        self.identity = self._identity()
        self.volume_dirs: dict[str, Path] = {}
        self._layout()

    # ------------------------------------------------------------------ admission and identity
    def _admit_service_account_volume(self) -> None:
        if any(m["mountPath"] == SERVICE_ACCOUNT_DIR for m in self.mounts):
            return
        name = "kube-api-access-sandbox"
        self.volumes.append(
            {
                "name": name,
                "projected": {
                    "defaultMode": DEFAULT_MODE,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {
                            "downwardAPI": {
                                "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                            }
                        },
                    ],
                },
            }
        )
        self.mounts.append({"name": name, "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True})

    def _identity(self) -> Identity:
        spec, container = self.spec, self.container
        uid = int(_sc(spec, container, "runAsUser", self.image.user))
        gid = int(_sc(spec, container, "runAsGroup", self.image.group))
        if _sc(spec, container, "runAsNonRoot", False) and uid == 0:
            raise PodSpecError(f"container {container['name']!r}: runAsNonRoot is set and the user is root")
        supplemental = (spec.get("securityContext") or {}).get("supplementalGroups", [])
        groups = [int(g) for g in [self.fs_group, *supplemental] if g is not None]
        csc = container.get("securityContext") or {}
        return Identity(
            uid=uid,
            gid=gid,
            groups=tuple(dict.fromkeys(groups)),
            read_only_root=bool(csc.get("readOnlyRootFilesystem", False)),
            no_new_privs=csc.get("allowPrivilegeEscalation") is False,
            drop_all_capabilities="ALL" in ((csc.get("capabilities") or {}).get("drop") or []),
        )

    @property
    def fs_group(self) -> int | None:
        value = (self.spec.get("securityContext") or {}).get("fsGroup")
        return None if value is None else int(value)

    # ------------------------------------------------------------------ volumes
    def _field(self, path: str) -> str:
        fields = {
            "metadata.name": self.pod_name,
            "metadata.namespace": self.cluster.namespace,
            "status.podIP": self.pod_ip,
            "status.hostIP": self.host_ip,
            "spec.serviceAccountName": self.service_account,
            "spec.nodeName": "sandbox",
        }
        label = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
        if label:  # the downward API gives the label's value, "" for a label the Pod does not have
            return str(self.labels.get(label.group(1), ""))
        if path not in fields:
            raise PodSpecError(f"fieldRef {path!r} is not modelled")
        return fields[path]

    def _object(self, kind: str, name: str, optional: bool) -> Mapping[str, str] | None:
        store = self.cluster.secrets if kind == "secret" else self.cluster.config_maps
        if name == "kube-root-ca.crt" and kind == "configMap" and self.cluster.api_server is not None:
            return {"ca.crt": self.cluster.api_server[2]}
        if name not in store:
            if optional:
                return None
            raise PodSpecError(f"{kind} {name!r} does not exist (the pod would stay ContainerCreating)")
        return store[name]

    def _key_payload(
        self, kind: str, source: Mapping[str, Any], default_mode: int
    ) -> dict[str, tuple[bytes, int, int | None]]:
        """``MakePayload`` of the secret/configmap plugins: path -> (data, mode, owner uid or None)."""
        name = source["secretName"] if kind == "secret" and "secretName" in source else source["name"]
        optional = bool(source.get("optional", False))
        data = self._object(kind, name, optional)
        if data is None:
            return {}
        items = source.get("items")
        if not items:
            return {key: (value.encode(), default_mode, None) for key, value in data.items()}
        payload: dict[str, tuple[bytes, int, int | None]] = {}
        for item in items:
            if item["key"] not in data:
                if optional:
                    continue
                raise PodSpecError(f"{kind} {name!r} has no key {item['key']!r}")
            payload[item["path"]] = (data[item["key"]].encode(), int(item.get("mode", default_mode)), None)
        return payload

    def _payload(self, volume: Mapping[str, Any]) -> dict[str, tuple[bytes, int, int | None]]:
        """The files of a Secret, ConfigMap, downwardAPI or projected volume; the first three are read as
        a projected volume with that one source (the same ``MakePayload`` rules, one ``defaultMode``)."""
        kind = next(k for k in READ_ONLY_KINDS if k in volume)
        source = volume[kind]
        mode = int(source.get("defaultMode", DEFAULT_MODE))
        payload: dict[str, tuple[bytes, int, int | None]] = {}
        for src in source["sources"] if kind == "projected" else [{kind: source}]:
            if "secret" in src or "configMap" in src:
                key_kind = "secret" if "secret" in src else "configMap"
                payload |= self._key_payload(key_kind, src[key_kind], mode)
            elif "downwardAPI" in src:
                for i in src["downwardAPI"]["items"]:
                    value = self._field(i["fieldRef"]["fieldPath"]).encode()
                    payload[i["path"]] = (value, int(i.get("mode", mode)), None)
            elif "serviceAccountToken" in src:
                sat = src["serviceAccountToken"]
                if self.cluster.token is None:
                    raise PodSpecError(f"volume {volume['name']!r} projects a token and the test gives no token source")
                token = self.cluster.token(sat.get("audience"), int(sat.get("expirationSeconds", 3600)))
                owner = fs_user(self.spec)
                token_mode = 0o600 if owner is not None or self.fs_group is not None else mode
                payload[sat["path"]] = (token.encode(), token_mode, owner)
            else:
                raise PodSpecError(f"projected source {sorted(src)} is not modelled")
        return payload

    def _write_atomic(self, target: Path, payload: Mapping[str, tuple[bytes, int, int | None]]) -> None:
        """``AtomicWriter.Write``: files in ``..<timestamp>``, ``..data`` -> it, ``name -> ..data/name``."""
        target.mkdir(parents=True)
        os.chmod(target, 0o1777)  # noqa: S103 - the kubelet's mode: the wrapped emptyDir's tmpfs root
        ts_dir = target / "..2026_01_01_00_00_00.sandbox"
        ts_dir.mkdir()
        os.chmod(ts_dir, 0o755)  # noqa: S103 - the kubelet's mode (atomic_writer.go)
        for rel, (data, mode, owner) in payload.items():
            path = ts_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.chmod(path, mode)
            if owner is not None:
                os.chown(path, owner, -1)
        (target / "..data").symlink_to(ts_dir.name)
        for top in sorted({rel.split("/", 1)[0] for rel in payload}):
            (target / top).symlink_to(f"..data/{top}")

    def _set_volume_ownership(self, root: Path, read_only: bool) -> None:
        """``SetVolumeOwnership``/``changeFilePermission`` (pkg/volume/volume_linux.go) for the pod's fsGroup."""
        group = self.fs_group
        if group is None:
            return
        file_mask = _RO_MASK if read_only else _RW_MASK
        # each directory once, as the walk's ``dirpath`` (a symlink to a directory is listed in
        # ``dirnames`` and not walked into: skipped, as are symlinks among ``filenames``)
        for dirpath, _, filenames in os.walk(root):
            for path in [dirpath, *(os.path.join(dirpath, name) for name in filenames)]:
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode):
                    continue
                os.chown(path, info.st_uid, group)
                mask = file_mask | 0o2000 | _EXEC_MASK if stat.S_ISDIR(info.st_mode) else file_mask
                os.chmod(path, stat.S_IMODE(info.st_mode) | mask)

    def _layout(self) -> None:
        base = self.workdir / "volumes"
        used = {m["name"] for m in self.mounts}
        declared = {v["name"] for v in self.volumes}
        if used - declared:
            raise PodSpecError(f"volumeMounts name undeclared volumes: {sorted(used - declared)}")
        for volume in self.volumes:
            name = volume["name"]
            if name not in used:
                continue
            target = base / name
            if any(kind in volume for kind in READ_ONLY_KINDS):
                self._write_atomic(target, self._payload(volume))
                self._set_volume_ownership(target, read_only=True)
            elif "emptyDir" in volume:
                target.mkdir(parents=True)
                os.chmod(target, 0o777)  # noqa: S103 - the kubelet's emptyDir mode
                self._set_volume_ownership(target, read_only=False)
            elif "persistentVolumeClaim" in volume:
                target.mkdir(parents=True)
                if name in self.capacities:
                    self._mount_filesystem(target, self.capacities[name])
                os.chmod(target, 0o755)  # noqa: S103 - a fresh filesystem root
                self._set_volume_ownership(target, read_only=False)
            else:
                raise PodSpecError(f"volume {name!r}: kind {sorted(set(volume) - {'name'})} is not modelled")
            self.volume_dirs[name] = target

    def _mount_filesystem(self, target: Path, size: int) -> None:
        mount_sized_filesystem(target, size)
        self._mounted.append(target)

    def close(self) -> None:
        """Unmount the filesystems of volumes with a capacity."""
        while self._mounted:
            unmount(self._mounted.pop())

    def __enter__(self) -> PodSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ environment
    def environment(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        env: dict[str, str] = {**self.image.env, "HOSTNAME": self.pod_name, "HOME": "/"}
        if self.cluster.api_server is not None:
            host, port, _ = self.cluster.api_server
            env |= {
                "KUBERNETES_SERVICE_HOST": host,
                "KUBERNETES_SERVICE_PORT": str(port),
                "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
                "KUBERNETES_PORT": f"tcp://{host}:{port}",
            }
        declared: dict[str, str] = {}
        for entry in self.container.get("env", []):
            name = entry["name"]
            if "value" in entry:
                value = _expand(str(entry["value"]), declared)
            elif "valueFrom" in entry:
                value = self._value_from(name, entry["valueFrom"])
            else:
                value = ""
            declared[name] = value
        env |= declared
        env |= dict(overrides or {})
        return env

    def _value_from(self, name: str, source: Mapping[str, Any]) -> str:
        for kind, key in (("secret", "secretKeyRef"), ("configMap", "configMapKeyRef")):
            if key in source:
                ref = source[key]
                data = self._object(kind, ref["name"], bool(ref.get("optional", False))) or {}
                if ref["key"] not in data:
                    raise PodSpecError(f"env {name}: {kind} {ref['name']!r} has no key {ref['key']!r}")
                return data[ref["key"]]
        if "fieldRef" in source:
            return self._field(source["fieldRef"]["fieldPath"])
        raise PodSpecError(f"env {name}: valueFrom {sorted(source)} is not modelled")

    # ------------------------------------------------------------------ the command line
    def _root_ops(self) -> list[str]:
        """The image's root: host system dirs (read-only), the image's binds and files, an empty /tmp."""
        files_dir = self.workdir / "image"
        provided: dict[str, tuple[str, str]] = {}
        for path, content in self.image.files.items():
            host = files_dir / path.lstrip("/")
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_text(content)
            host.chmod(0o755)
            provided[path] = ("--ro-bind", str(host))
        for path, host_path in self.image.binds.items():
            provided[path] = ("--ro-bind", host_path)
        mount_paths = {_image_path(m["mountPath"].rstrip("/")) for m in self.mounts}
        # paths that do not exist in the host dirs need their parents to be synthetic (tmpfs) dirs
        needs = [p for p in [*provided, *mount_paths] if not _in_image(p)]
        ops: list[str] = ["--dir", "/run"]  # empty in an image (/var/run -> /run on Debian)

        def mirror(directory: str) -> None:
            ops.extend(["--dir", directory])
            for child in sorted(os.listdir(directory)):
                path = f"{directory}/{child}"
                if path in provided:
                    continue
                if any(n.startswith(path + "/") for n in needs) and os.path.isdir(path) and not os.path.islink(path):
                    mirror(path)
                elif os.path.islink(path):
                    ops.extend(["--symlink", os.readlink(path), path])
                elif os.path.isdir(path) or os.path.isfile(path):
                    ops.extend(["--ro-bind", path, path])

        for top in IMAGE_HOST_DIRS:
            path = f"/{top}"
            if not os.path.lexists(path):
                continue
            if os.path.islink(path):
                ops.extend(["--symlink", os.readlink(path), path])
            elif any(n.startswith(path + "/") for n in needs):
                mirror(path)
            else:
                ops.extend(["--ro-bind", path, path])
        # the parents of bound paths are created traversable (0755), as an image's are (bwrap would
        # create them 0700, and a non-root container could not reach its own volumes)
        parents = sorted({str(a) for n in needs for a in Path(n).parents if a != Path("/") and not _in_image(str(a))})
        for parent in sorted(parents, key=lambda a: a.count("/")):
            ops.extend(["--dir", parent])
        for path, (op, host_path) in sorted(provided.items(), key=lambda kv: kv[0].count("/")):
            ops.extend([op, host_path, path])
        if "/tmp" not in mount_paths:
            ops.extend(["--perms", "1777", "--dir", "/tmp"])
        return ops

    def _mount_ops(self) -> list[str]:
        by_name = {v["name"]: v for v in self.volumes}
        ops: list[str] = []
        for mount in sorted(self.mounts, key=lambda m: m["mountPath"].rstrip("/").count("/")):
            volume = by_name[mount["name"]]
            source = self.volume_dirs[mount["name"]]
            if mount.get("subPath"):
                source = source / mount["subPath"]
                if not source.exists():
                    raise PodSpecError(f"subPath {mount['subPath']!r} does not exist in volume {mount['name']!r}")
            read_only = mount.get("readOnly", False) or any(kind in volume for kind in READ_ONLY_KINDS)
            ops.extend(["--ro-bind" if read_only else "--bind", str(source), _image_path(mount["mountPath"])])
        return ops

    def argv(self, command: Sequence[str] | None = None) -> list[str]:
        """The bwrap + setpriv command line that runs ``command`` (default: the container's command + args)."""
        if command is None:
            if "command" not in self.container:
                raise PodSpecError("the container declares no command (image entrypoints are not modelled)")
            command = [*self.container["command"], *self.container.get("args", [])]
        ident = self.identity
        sandbox = [
            BWRAP,
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--hostname",
            self.pod_name,
            *self._root_ops(),
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            *self._mount_ops(),
        ]
        if ident.read_only_root:
            sandbox += ["--remount-ro", "/"]
        sandbox += ["--chdir", self.container.get("workingDir", self.image.workdir)]
        user = [SETPRIV, "--reuid", str(ident.uid), "--regid", str(ident.gid)]
        user += ["--groups", ",".join(map(str, ident.groups))] if ident.groups else ["--clear-groups"]
        if ident.no_new_privs:
            user.append("--no-new-privs")
        if ident.drop_all_capabilities:
            user += ["--bounding-set", "-all", "--inh-caps", "-all"]
        return [*sandbox, "--", *user, "--", *command]

    def run(
        self,
        command: Sequence[str] | None = None,
        *,
        env_overrides: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the container to completion (output captured as text)."""
        return processes.run(
            self.argv(command), env=self.environment(env_overrides), capture_output=True, timeout=timeout
        )

    def popen(
        self,
        command: Sequence[str] | None = None,
        *,
        env_overrides: Mapping[str, str] | None = None,
        log: Path,
    ) -> subprocess.Popen[bytes]:
        """Start the container in the background, its output in ``log``; stop it with ``stop(proc)``."""
        with log.open("ab") as out:
            return subprocess.Popen(
                self.argv(command), env=self.environment(env_overrides), stdout=out, stderr=subprocess.STDOUT
            )


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a container started with ``PodSandbox.popen`` (SIGTERM, then SIGKILL): bwrap's
    ``--die-with-parent`` and the private PID namespace take every process of the container with it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def _image_path(path: str) -> str:
    """``path`` with the image's symlinked directories resolved (``/var/run/x`` -> ``/run/x``): bwrap
    creates mount points from outside the new root, where an absolute symlink points elsewhere."""
    parts = Path(path).parts
    current = Path("/")
    for i, part in enumerate(parts[1:], start=1):
        candidate = current / part
        if _in_image(str(candidate)) and candidate.is_symlink() and i < len(parts) - 1:
            target = Path(os.readlink(candidate))
            return _image_path(str((target if target.is_absolute() else current / target).joinpath(*parts[i + 1 :])))
        current = candidate
    return path


def _in_image(path: str) -> bool:
    """Whether ``path`` exists in the sandbox's root before any volume or image file is added."""
    parts = Path(path).parts
    return len(parts) > 1 and parts[1] in IMAGE_HOST_DIRS and os.path.lexists(path)


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _expand(value: str, env: Mapping[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion of an env value: defined names expand, ``$$`` is ``$``,
    undefined references stay as written."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(repl, value)


def mount_sized_filesystem(target: Path, size: int) -> None:
    """A filesystem that holds at most ``size`` bytes at the directory ``target`` (a tmpfs with ``size=``:
    a write beyond it fails with ENOSPC, as on a full volume). Mounting needs root, as the sandbox's
    ``setpriv`` does; :func:`unmount` undoes it."""
    result = processes.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target)], capture_output=True, timeout=30
    )
    if result.returncode != 0:
        raise PodSpecError(f"cannot mount a {size}-byte filesystem at {target} (root needed): {result.stderr}")


def unmount(target: Path) -> None:
    """Unmount ``target`` (lazily, if a process still uses it)."""
    if processes.run(["umount", str(target)], capture_output=True, timeout=30).returncode != 0:
        processes.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


def http_probe(probe: Mapping[str, Any], base_url: str, timeout: float | None = None) -> tuple[bool, int | None]:
    """One run of a container's ``httpGet`` probe as the kubelet makes it (kubernetes/kubernetes
    ``pkg/probe/http/http.go``, ``DoHTTPProbe``): a GET of the probe's ``path``, over TLS without
    certificate verification (``InsecureSkipVerify``) when its scheme is HTTPS; Success if and only if
    ``200 <= status < 400``; a refused connection or a timeout is a Failure. ``base_url`` is where
    ``scheme://<pod IP>:<port>`` of the probe is on this machine (a loopback address and port).
    Returns (success, status or None)."""
    get = probe["httpGet"]
    scheme = str(get.get("scheme", "HTTP")).lower()
    if not base_url.startswith(f"{scheme}://"):
        raise PodSpecError(f"the probe's scheme is {scheme}, the address given is {base_url}")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    seconds = timeout if timeout is not None else float(probe.get("timeoutSeconds", 1))
    try:
        with urllib.request.urlopen(base_url + get["path"], timeout=seconds, context=context) as resp:
            status = int(resp.status)
    except urllib.error.HTTPError as err:
        status = int(err.code)
    except OSError:
        return False, None
    return 200 <= status < 400, status


def sandbox_tools_missing() -> list[str]:
    """The sandbox's tools that are not installed (``make system-packages`` installs them)."""
    return [tool for tool in (BWRAP, SETPRIV) if not os.access(tool, os.X_OK)]
