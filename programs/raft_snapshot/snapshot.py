"""Vault Raft snapshots to S3-compatible object storage (Linode Object Storage), and back.

Runs in a CronJob pod (``take``, the default command) and on an operator's workstation or in a
Job (``list``, ``restore``). Python standard library + boto3 only.

``take``
    1. Logs in to Vault with the pod's own identity: Kubernetes auth (``POST
       /v1/auth/<mount>/login`` with the service-account JWT read from ``--jwt-file``) for a role
       whose only policy is :data:`SNAPSHOT_POLICY_HCL`.
    2. Streams ``GET /v1/sys/storage/raft/snapshot`` into a private temporary file (mode 0600).
    3. Verifies it is a complete snapshot (:func:`verify_snapshot`): a gzip stream whose CRC and
       length check out, holding a tar archive with ``SHA256SUMS`` (which must list ``meta.json``
       and ``state.bin``), ``SHA256SUMS.sealed``, and nothing unlisted; every listed file's SHA-256
       matches; ``meta.json``'s ``Size`` equals the size of ``state.bin``.
    4. Uploads it to ``<prefix>/<cluster-name>/<UTC timestamp>.snap`` with ``Content-MD5`` (per
       part for multipart uploads) and the SHA-256 in the object metadata; a failed multipart
       upload is aborted, so no partial object is ever left. An existing key is never overwritten.
    5. Verifies the stored object (``HEAD``: size, ETag = the MD5 / multipart MD5 computed
       locally, SHA-256 metadata); a mismatching object is deleted again.
    6. Only then applies retention: keeps the newest ``--keep`` snapshots of this cluster and
       deletes older ones. Only keys of the form ``<prefix>/<cluster>/<timestamp>.snap`` are
       considered; anything else under the prefix is left alone.
    7. Revokes its Vault token.

``list``
    Snapshots under the prefix (one cluster with ``--cluster-name``), newest first:
    ``key<TAB>size<TAB>last-modified``.

``restore --key K | --latest``
    Downloads the object, checks size and SHA-256 against the upload's metadata, verifies the
    snapshot as above and POSTs it to ``sys/storage/raft/snapshot-force`` (``--same-cluster``:
    ``sys/storage/raft/snapshot``, which Vault refuses for a snapshot of another cluster). Needs a
    token allowed to do that (``--token-file`` or ``VAULT_TOKEN``) and ``--yes``. Afterwards the
    target is sealed: unseal it with the SOURCE cluster's unseal keys; only the source cluster's
    tokens and credentials are valid from then on.

Configuration: every flag has an environment variable (flags win); see ``--help``. S3 credentials
come only from boto3's standard chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, which
the pod gets from a Secret). Vault is reached through :mod:`programs.vault_http`: ``https://``
only (an ``http://`` address is a usage error), TLS always verified against ``--ca-file`` /
``VAULT_CACERT`` (the only CA trusted when given; the system's CAs otherwise), redirects never
followed, a timeout on every request; the snapshot is streamed to its file, at most
:data:`MAX_SNAPSHOT` bytes. There is no option to skip verification. Nothing prints tokens or
credentials.

Exit codes: 0 success; 2 usage or configuration error; 3 Vault error (unreachable, TLS, login
refused, snapshot download or restore refused); 4 the snapshot failed verification; 5 object
storage error (upload, upload verification, list, download); 6 the snapshot was uploaded and
verified but retention failed; 1 anything unexpected; 143 terminated by SIGTERM. A failure prints
exactly one line on stderr: ``raft-snapshot: error: <reason>``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as _dt
import gzip
import hashlib
import json
import os
import re
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from programs.cli import UsageErrorParser, env, read_token_file, run_program
from programs.errors import EXIT_TERMINATED, EXIT_UNEXPECTED, ExitCodes, PodProgramError, UsageError
from programs.vault_http import HttpFailure, VaultHttp

__all__ = [
    "EXIT_RETENTION",
    "EXIT_STORAGE",
    "EXIT_TERMINATED",
    "EXIT_UNEXPECTED",
    "EXIT_USAGE",
    "EXIT_VAULT",
    "EXIT_VERIFY",
    "SNAPSHOT_POLICY_HCL",
    "FileDigest",
    "SnapshotError",
    "SnapshotInfo",
    "SnapshotInvalidError",
    "digest_file",
    "main",
    "multipart_etag",
    "snapshot_key",
    "verify_snapshot",
]

SNAPSHOT_POLICY_HCL = 'path "sys/storage/raft/snapshot" {\n  capabilities = ["read"]\n}\n'
"""The whole Vault policy the snapshot role needs (read = ``GET sys/storage/raft/snapshot``)."""

PROG = "raft-snapshot"
DEFAULT_JWT_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
DEFAULT_PREFIX = "vault-raft-snapshots"
DEFAULT_ROLE = "raft-snapshot"
DEFAULT_AUTH_PATH = "kubernetes"
DEFAULT_KEEP = 30
DEFAULT_TIMEOUT = 60.0
DEFAULT_PART_SIZE = 32 * 1024 * 1024
MIN_PART_SIZE = 1024
CHUNK = 1024 * 1024
MAX_SNAPSHOT = 64 * 1024**3
"""Largest snapshot downloaded (streamed to a file; never held in memory)."""

#: Besides the shared EXIT_UNEXPECTED (1) and EXIT_TERMINATED (143) of programs.errors:
EXIT_USAGE = 2
EXIT_VAULT = 3
EXIT_VERIFY = 4
EXIT_STORAGE = 5
EXIT_RETENTION = 6

_TIMESTAMP_RE = r"\d{8}T\d{6}(?:\.\d{3})?Z"
_SNAPSHOT_NAME = re.compile(rf"^(?P<ts>{_TIMESTAMP_RE})\.snap$")
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_REQUIRED_FILES = ("meta.json", "state.bin")
_SUMS = "SHA256SUMS"
_SEALED_SUMS = "SHA256SUMS.sealed"


# ---------------------------------------------------------------------------------------------
# errors: the program's own failure kinds; EXIT_CODES maps them and the shared ones to exit codes
# ---------------------------------------------------------------------------------------------
class SnapshotError(PodProgramError):
    """A raft-snapshot failure; ``str()`` is the single line printed on stderr."""


class SnapshotInvalidError(SnapshotError):
    """The file is not a complete, intact Raft snapshot."""


class StorageError(SnapshotError):
    """Object storage failed (upload, upload verification, list, download)."""


class RetentionError(SnapshotError):
    """The snapshot is stored and verified, but deleting old ones failed."""


EXIT_CODES: ExitCodes = {
    UsageError: EXIT_USAGE,
    HttpFailure: EXIT_VAULT,  # Vault: unreachable, TLS, refused, bad answer (programs.vault_http)
    SnapshotInvalidError: EXIT_VERIFY,
    StorageError: EXIT_STORAGE,
    RetentionError: EXIT_RETENTION,
}
"""Each failure's exit code (the module docstring)."""


# ---------------------------------------------------------------------------------------------
# snapshot verification
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileDigest:
    """Size and digests of a whole file (what S3 sees)."""

    size: int
    sha256: str
    md5: str

    @property
    def md5_b64(self) -> str:
        return base64.b64encode(bytes.fromhex(self.md5)).decode()


@dataclass(frozen=True)
class SnapshotInfo:
    """What :func:`verify_snapshot` found in a valid snapshot."""

    files: dict[str, str]
    raft_index: int | None = None
    raft_term: int | None = None
    state_size: int = 0


def digest_file(path: str | os.PathLike[str]) -> FileDigest:
    """Size, SHA-256 and MD5 of a file, in one pass."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return FileDigest(size, sha.hexdigest(), md5.hexdigest())


def multipart_etag(path: str | os.PathLike[str], part_size: int) -> str:
    """The ETag S3 gives a multipart upload of ``path`` in ``part_size`` parts:
    MD5 of the concatenated part MD5s, ``-<number of parts>``."""
    digests: list[bytes] = []
    with open(path, "rb") as handle:
        while part := handle.read(part_size):
            digests.append(hashlib.md5(part, usedforsecurity=False).digest())
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


def _parse_sums(text: str) -> dict[str, str]:
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.strip())
        if not match:
            raise SnapshotInvalidError(f"{_SUMS} line {number} is malformed")
        name = match.group(2)
        if name in sums:
            raise SnapshotInvalidError(f"{_SUMS} lists {name!r} twice")
        sums[name] = match.group(1).lower()
    return sums


def verify_snapshot(path: str | os.PathLike[str]) -> SnapshotInfo:
    """Check that ``path`` is a complete Vault/OpenBao Raft snapshot; raise
    :class:`SnapshotInvalidError` with the reason if not (see the module docstring)."""
    with open(path, "rb") as raw:
        magic = raw.read(2)
    if magic != b"\x1f\x8b":
        raise SnapshotInvalidError("snapshot is not a gzip stream (is it an error page or empty?)")
    hashes: dict[str, str] = {}
    sizes: dict[str, int] = {}
    small: dict[str, bytes] = {}
    try:
        with gzip.open(path, "rb") as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                if not member.isfile():
                    raise SnapshotInvalidError(f"snapshot contains an unexpected non-file entry {member.name!r}")
                if member.name in hashes:
                    raise SnapshotInvalidError(f"snapshot contains {member.name!r} twice")
                extracted = archive.extractfile(member)
                if extracted is None:
                    raise SnapshotInvalidError(f"cannot read {member.name!r} from the snapshot")
                sha, size = hashlib.sha256(), 0
                keep = member.name in (_SUMS, _SEALED_SUMS, "meta.json")
                kept = bytearray()
                while chunk := extracted.read(CHUNK):
                    sha.update(chunk)
                    size += len(chunk)
                    if keep and len(kept) < 1024 * 1024:
                        kept += chunk
                if size != member.size:
                    raise SnapshotInvalidError(f"{member.name!r} is truncated in the snapshot")
                hashes[member.name], sizes[member.name] = sha.hexdigest(), size
                if keep:
                    small[member.name] = bytes(kept)
            # Read the gzip stream to its end so that its CRC-32 and length trailer are checked.
            while stream.read(CHUNK):
                pass
    except SnapshotInvalidError:
        raise
    except EOFError as exc:
        raise SnapshotInvalidError(f"snapshot is truncated ({exc})") from exc
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise SnapshotInvalidError(f"snapshot is not a valid gzip stream ({exc})") from exc
    except tarfile.TarError as exc:
        raise SnapshotInvalidError(f"snapshot is not a valid tar archive ({exc})") from exc
    except OSError as exc:
        raise SnapshotInvalidError(f"snapshot cannot be read ({exc})") from exc
    if _SUMS not in small:
        raise SnapshotInvalidError(f"snapshot has no {_SUMS}")
    try:
        sums = _parse_sums(small[_SUMS].decode())
    except UnicodeDecodeError as exc:
        raise SnapshotInvalidError(f"{_SUMS} is not text") from exc
    for required in _REQUIRED_FILES:
        if required not in sums:
            raise SnapshotInvalidError(f"{_SUMS} does not list {required}")
    for name, expected in sorted(sums.items()):
        if name not in hashes:
            raise SnapshotInvalidError(f"{name} is listed in {_SUMS} but missing from the snapshot")
        if hashes[name] != expected:
            raise SnapshotInvalidError(f"SHA-256 of {name} does not match {_SUMS}")
    unlisted = sorted(set(hashes) - set(sums) - {_SUMS, _SEALED_SUMS})
    if unlisted:
        raise SnapshotInvalidError(f"snapshot contains files not listed in {_SUMS}: {', '.join(unlisted)}")
    if not sizes.get(_SEALED_SUMS):
        raise SnapshotInvalidError(f"snapshot has no {_SEALED_SUMS} (Vault cannot restore it)")
    try:
        meta = json.loads(small["meta.json"])
    except ValueError as exc:
        raise SnapshotInvalidError("meta.json is not JSON") from exc
    if not isinstance(meta, dict):
        raise SnapshotInvalidError("meta.json is not a JSON object")
    declared = meta.get("Size")
    if isinstance(declared, int) and declared != sizes["state.bin"]:
        raise SnapshotInvalidError(f"state.bin has {sizes['state.bin']} bytes but meta.json declares {declared}")
    index, term = meta.get("Index"), meta.get("Term")
    return SnapshotInfo(
        files={name: hashes[name] for name in sorted(hashes)},
        raft_index=index if isinstance(index, int) else None,
        raft_term=term if isinstance(term, int) else None,
        state_size=sizes["state.bin"],
    )


# ---------------------------------------------------------------------------------------------
# Vault (the shared client: programs.vault_http.VaultHttp)
# ---------------------------------------------------------------------------------------------
def _vault(args: argparse.Namespace) -> VaultHttp:
    return VaultHttp(args.vault_addr, args.ca_file, timeout=args.timeout, flag="--vault-addr", ca_flag="--ca-file")


def download_snapshot(vault: VaultHttp, token: str, dest: IO[bytes]) -> int:
    """Stream the Raft snapshot into ``dest`` (at most :data:`MAX_SNAPSHOT` bytes); the byte count."""
    return vault.download(
        "sys/storage/raft/snapshot", dest, token=token, max_bytes=MAX_SNAPSHOT, action="snapshot download"
    )


def restore_snapshot(vault: VaultHttp, token: str, source: IO[bytes], size: int, force: bool) -> None:
    path = "sys/storage/raft/snapshot-force" if force else "sys/storage/raft/snapshot"
    vault.upload("POST", path, source, size, token=token, action="snapshot restore")


# ---------------------------------------------------------------------------------------------
# object storage
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredSnapshot:
    key: str
    cluster: str
    timestamp: str
    size: int
    last_modified: str


@dataclass
class ObjectStore:
    """The S3 calls this program makes (boto3, credentials from the standard chain)."""

    endpoint_url: str | None
    region: str | None
    bucket: str
    addressing_style: str = "auto"
    timeout: float = DEFAULT_TIMEOUT
    _client: Any = field(default=None, init=False, repr=False)

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=min(self.timeout, 10.0),
                read_timeout=self.timeout,
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": self.addressing_style},
                # Content-MD5 is sent explicitly; S3-compatible stores (Ceph RGW behind Linode
                # Object Storage among them) do not all accept the newer default CRC trailers.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
            )
        return self._client

    def where(self, key: str = "") -> str:
        location = f"s3://{self.bucket}/{key}"
        return f"{location} at {self.endpoint_url}" if self.endpoint_url else location

    def _fail(self, action: str, key: str, exc: Exception) -> StorageError:
        return StorageError(f"{action} {self.where(key)} failed: {_describe_boto_error(exc)}")

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _boto_status(exc) == 404:
                return False
            raise self._fail("checking for an existing object at", key, exc) from None
        return True

    def upload(self, path: Path, key: str, digest: FileDigest, part_size: int, metadata: dict[str, str]) -> str:
        """Upload ``path`` as ``key``; returns the ETag S3 must report. Leaves nothing behind
        on failure (single PUTs are atomic; a failed multipart upload is aborted)."""
        if digest.size <= part_size:
            try:
                with open(path, "rb") as body:
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=body,
                        ContentLength=digest.size,
                        ContentMD5=digest.md5_b64,
                        ContentType="application/gzip",
                        Metadata=metadata,
                    )
            except Exception as exc:
                raise self._fail("upload to", key, exc) from None
            return digest.md5
        try:
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType="application/gzip", Metadata=metadata
            )["UploadId"]
        except Exception as exc:
            raise self._fail("starting the multipart upload to", key, exc) from None
        try:
            parts: list[dict[str, Any]] = []
            part_md5s: list[bytes] = []
            with open(path, "rb") as handle:
                while chunk := handle.read(part_size):
                    md5 = hashlib.md5(chunk, usedforsecurity=False).digest()
                    number = len(parts) + 1
                    try:
                        result = self.client.upload_part(
                            Bucket=self.bucket,
                            Key=key,
                            UploadId=upload_id,
                            PartNumber=number,
                            Body=chunk,
                            ContentLength=len(chunk),
                            ContentMD5=base64.b64encode(md5).decode(),
                        )
                    except Exception as exc:
                        raise self._fail(f"upload of part {number} to", key, exc) from None
                    parts.append({"ETag": result["ETag"], "PartNumber": number})
                    part_md5s.append(md5)
            try:
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            except Exception as exc:
                raise self._fail("completing the multipart upload to", key, exc) from None
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return f"{hashlib.md5(b''.join(part_md5s), usedforsecurity=False).hexdigest()}-{len(parts)}"

    def verify(self, key: str, digest: FileDigest, etag: str) -> None:
        """``HEAD`` the object: size, ETag and SHA-256 metadata must match what was uploaded."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._fail("verifying the uploaded object", key, exc) from None
        problems = []
        if int(head.get("ContentLength", -1)) != digest.size:
            problems.append(f"size {head.get('ContentLength')} != {digest.size}")
        stored_etag = str(head.get("ETag", "")).strip('"')
        if stored_etag != etag:
            problems.append(f"ETag {stored_etag or '(none)'} != {etag}")
        stored_sha = (head.get("Metadata") or {}).get("sha256")
        if stored_sha != digest.sha256:
            problems.append("SHA-256 metadata differs")
        if problems:
            raise StorageError(f"uploaded object {self.where(key)} does not match the snapshot: {'; '.join(problems)}")

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._fail("deleting", key, exc) from None

    def list_snapshots(self, prefix: str, cluster: str | None) -> list[StoredSnapshot]:
        """Snapshot objects (``<prefix>/<cluster>/<timestamp>.snap``), newest first."""
        base = f"{prefix}/" if prefix else ""
        list_prefix = f"{base}{cluster}/" if cluster else base
        found: list[StoredSnapshot] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=list_prefix):
                for obj in page.get("Contents", []):
                    key = str(obj["Key"])
                    rest = key[len(base) :].split("/")
                    if len(rest) != 2 or (cluster and rest[0] != cluster):
                        continue
                    match = _SNAPSHOT_NAME.match(rest[1])
                    if not match:
                        continue
                    modified = obj.get("LastModified")
                    when = modified.isoformat() if isinstance(modified, _dt.datetime) else str(modified or "")
                    size = int(obj.get("Size", 0))
                    found.append(StoredSnapshot(key, rest[0], match.group("ts"), size, when))
        except Exception as exc:
            raise self._fail("listing", list_prefix, exc) from None
        found.sort(key=lambda s: (s.timestamp, s.key), reverse=True)
        return found

    def download(self, key: str, dest: IO[bytes]) -> tuple[int, dict[str, str]]:
        """Stream an object into ``dest``; returns (bytes written, its metadata)."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            written = 0
            for chunk in response["Body"].iter_chunks(CHUNK):
                dest.write(chunk)
                written += len(chunk)
            dest.flush()
            expected = int(response.get("ContentLength", written))
        except Exception as exc:
            raise self._fail("downloading", key, exc) from None
        if written != expected:
            raise StorageError(f"download of {self.where(key)} stopped after {written} of {expected} bytes")
        return written, dict(response.get("Metadata") or {})


def _boto_status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def _describe_boto_error(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response.get("Error") or {}
        code = error.get("Code") or "error"
        message = error.get("Message") or ""
        status = _boto_status(exc)
        text = f"{code} (HTTP {status})" if status else str(code)
        return f"{text}: {message}" if message else text
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------
def snapshot_key(prefix: str, cluster: str, now: _dt.datetime | None = None) -> str:
    """``<prefix>/<cluster>/<YYYYMMDDTHHMMSS.mmmZ>.snap`` (UTC; sorts by time)."""
    moment = (now or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%S") + f".{moment.microsecond // 1000:03d}Z"
    return f"{prefix}/{cluster}/{stamp}.snap" if prefix else f"{cluster}/{stamp}.snap"


@contextlib.contextmanager
def _temp_file(directory: str | None) -> Iterator[tuple[Path, IO[bytes]]]:
    """A private (0600) temporary file, always removed."""
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed and removed below
        mode="w+b", prefix="raft-", suffix=".snap", dir=directory, delete=False
    )
    path = Path(handle.name)
    try:
        yield path, handle
    finally:
        handle.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _out(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def _store(args: argparse.Namespace) -> ObjectStore:
    return ObjectStore(
        endpoint_url=args.s3_endpoint or None,
        region=args.s3_region or None,
        bucket=args.bucket,
        addressing_style=args.addressing_style,
        timeout=args.timeout,
    )


def cmd_take(args: argparse.Namespace) -> int:
    """Log in, download, verify, upload, verify the upload, apply retention."""
    cluster = _require_cluster(args)
    jwt = read_token_file(args.jwt_file)
    vault = _vault(args)
    store = _store(args)
    token = vault.login_kubernetes(args.auth_path, args.role, jwt, action="Vault login")
    try:
        with _temp_file(args.tmp_dir) as (path, handle):
            download_snapshot(vault, token, handle)
            handle.close()
            vault.revoke_self(token)
            token = ""
            info = verify_snapshot(path)
            digest = digest_file(path)
            key = snapshot_key(args.prefix, cluster)
            if store.exists(key):
                raise StorageError(f"{store.where(key)} already exists; refusing to overwrite it")
            metadata = {"sha256": digest.sha256, "cluster": cluster}
            if info.raft_index is not None:
                metadata["raft-index"] = str(info.raft_index)
            if info.raft_term is not None:
                metadata["raft-term"] = str(info.raft_term)
            etag = store.upload(path, key, digest, args.part_size, metadata)
            try:
                store.verify(key, digest, etag)
            except StorageError:
                with contextlib.suppress(StorageError):
                    store.delete(key)
                raise
    finally:
        if token:
            vault.revoke_self(token)
    _out(f"uploaded {store.where(key)} ({digest.size} bytes, sha256 {digest.sha256}, raft index {info.raft_index})")
    deleted = apply_retention(store, args.prefix, cluster, args.keep, key)
    _out(
        f"retention: keeping the newest {args.keep}; deleted {len(deleted)}"
        + (f": {', '.join(deleted)}" if deleted else "")
    )
    return 0


def apply_retention(store: ObjectStore, prefix: str, cluster: str, keep: int, just_uploaded: str) -> list[str]:
    """Delete all but the newest ``keep`` snapshots of ``cluster`` (never ``just_uploaded``)."""
    try:
        snapshots = store.list_snapshots(prefix, cluster)
    except StorageError as exc:
        raise RetentionError(f"snapshot {store.where(just_uploaded)} is stored, but retention failed: {exc}") from None
    doomed = [s.key for s in snapshots[keep:] if s.key != just_uploaded]
    deleted: list[str] = []
    for key in doomed:
        try:
            store.delete(key)
        except StorageError as exc:
            raise RetentionError(
                f"snapshot {store.where(just_uploaded)} is stored, but retention failed after deleting "
                f"{len(deleted)} of {len(doomed)}: {exc}"
            ) from None
        deleted.append(key)
    return deleted


def cmd_list(args: argparse.Namespace) -> int:
    """Print the stored snapshots, newest first."""
    cluster = args.cluster_name or None
    if cluster is not None:
        _require_cluster(args)
    store = _store(args)
    for snap in store.list_snapshots(args.prefix, cluster):
        print(f"{snap.key}\t{snap.size}\t{snap.last_modified}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Download, verify and restore a snapshot into the Vault at ``--vault-addr``."""
    token = _restore_token(args)
    store = _store(args)
    if args.latest:
        cluster = _require_cluster(args)
        snapshots = store.list_snapshots(args.prefix, cluster)
        if not snapshots:
            raise StorageError(f"no snapshots of {cluster} under {store.where(args.prefix + '/')}")
        key = snapshots[0].key
    else:
        key = args.key
    vault = _vault(args)
    with _temp_file(args.tmp_dir) as (path, handle):
        size, metadata = store.download(key, handle)
        handle.close()
        digest = digest_file(path)
        if digest.size != size:
            raise StorageError(f"downloaded {size} bytes of {store.where(key)} but the file has {digest.size}")
        expected_sha = metadata.get("sha256")
        if expected_sha and expected_sha != digest.sha256:
            raise SnapshotInvalidError(f"SHA-256 of {store.where(key)} does not match its upload metadata")
        info = verify_snapshot(path)
        _out(f"verified {store.where(key)} ({digest.size} bytes, raft index {info.raft_index})")
        if not args.yes:
            raise UsageError(
                "restore replaces ALL data of the Vault at "
                f"{vault.url}; re-run with --yes to go ahead (snapshot verified, nothing changed)"
            )
        with open(path, "rb") as source:
            restore_snapshot(vault, token, source, digest.size, force=not args.same_cluster)
    _out(
        f"restored {key} into {vault.url}. The cluster is now sealed: unseal it with the unseal keys of "
        "the cluster the snapshot was taken from; only that cluster's tokens and credentials are valid now."
    )
    return 0


def _restore_token(args: argparse.Namespace) -> str:
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the token file {args.token_file}: {exc.strerror}") from None
    else:
        token = os.environ.get("VAULT_TOKEN", "").strip()
    if not token:
        raise UsageError("restore needs a Vault token: --token-file or VAULT_TOKEN")
    return token


def _require_cluster(args: argparse.Namespace) -> str:
    cluster = str(args.cluster_name or "")
    if not cluster:
        raise UsageError("--cluster-name (SNAPSHOT_CLUSTER_NAME) is required")
    if not _CLUSTER_NAME.match(cluster):
        raise UsageError(f"cluster name {cluster!r} must match {_CLUSTER_NAME.pattern}")
    return cluster


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _part_size(text: str) -> int:
    value = int(text)
    if value < MIN_PART_SIZE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_PART_SIZE} bytes")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (every option also reads an environment variable)."""
    s3 = UsageErrorParser(add_help=False)
    g = s3.add_argument_group("object storage (credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")
    g.add_argument(
        "--s3-endpoint",
        default=env("SNAPSHOT_S3_ENDPOINT"),
        help="S3 endpoint URL, e.g. https://us-east-1.linodeobjects.com [SNAPSHOT_S3_ENDPOINT]",
    )
    g.add_argument(
        "--s3-region",
        default=env("SNAPSHOT_S3_REGION", None, "AWS_REGION", "AWS_DEFAULT_REGION"),
        help="region [SNAPSHOT_S3_REGION, AWS_REGION]",
    )
    g.add_argument("--bucket", default=env("SNAPSHOT_S3_BUCKET"), help="bucket [SNAPSHOT_S3_BUCKET]")
    g.add_argument(
        "--prefix",
        default=env("SNAPSHOT_S3_PREFIX", DEFAULT_PREFIX),
        help=f"key prefix (default {DEFAULT_PREFIX}) [SNAPSHOT_S3_PREFIX]",
    )
    g.add_argument(
        "--addressing-style",
        choices=("auto", "path", "virtual"),
        default=env("SNAPSHOT_S3_ADDRESSING_STYLE", "auto"),
        help="S3 addressing style (default auto) [SNAPSHOT_S3_ADDRESSING_STYLE]",
    )
    g.add_argument(
        "--cluster-name",
        default=env("SNAPSHOT_CLUSTER_NAME"),
        help="cluster name, the key's second path segment [SNAPSHOT_CLUSTER_NAME]",
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=env("SNAPSHOT_TIMEOUT", str(DEFAULT_TIMEOUT)),
        help=f"network timeout per operation in seconds (default {DEFAULT_TIMEOUT:g}) [SNAPSHOT_TIMEOUT]",
    )
    g.add_argument(
        "--tmp-dir",
        default=env("SNAPSHOT_TMP_DIR"),
        help="directory for the temporary snapshot file (default: TMPDIR) [SNAPSHOT_TMP_DIR]",
    )

    vault = UsageErrorParser(add_help=False)
    v = vault.add_argument_group("Vault (TLS is always verified)")
    v.add_argument("--vault-addr", default=env("VAULT_ADDR"), help="Vault URL [VAULT_ADDR]")
    v.add_argument(
        "--ca-file", default=env("VAULT_CACERT"), help="PEM CA bundle to verify Vault's certificate [VAULT_CACERT]"
    )

    parser = UsageErrorParser(prog="python -m programs.raft_snapshot", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    take = sub.add_parser("take", parents=[s3, vault], help="take a snapshot and upload it (default)")
    take.add_argument(
        "--role",
        default=env("SNAPSHOT_VAULT_ROLE", DEFAULT_ROLE),
        help=f"Kubernetes auth role (default {DEFAULT_ROLE}) [SNAPSHOT_VAULT_ROLE]",
    )
    take.add_argument(
        "--auth-path",
        default=env("SNAPSHOT_VAULT_AUTH_PATH", DEFAULT_AUTH_PATH),
        help=f"Kubernetes auth mount path (default {DEFAULT_AUTH_PATH}) [SNAPSHOT_VAULT_AUTH_PATH]",
    )
    take.add_argument(
        "--jwt-file",
        default=env("SNAPSHOT_JWT_FILE", DEFAULT_JWT_FILE),
        help="the pod's service-account token [SNAPSHOT_JWT_FILE]",
    )
    take.add_argument(
        "--keep",
        type=_positive_int,
        default=env("SNAPSHOT_KEEP", str(DEFAULT_KEEP)),
        help=f"snapshots of this cluster to keep (default {DEFAULT_KEEP}) [SNAPSHOT_KEEP]",
    )
    take.add_argument(
        "--part-size",
        type=_part_size,
        default=env("SNAPSHOT_PART_SIZE", str(DEFAULT_PART_SIZE)),
        help="multipart part size in bytes; larger snapshots are uploaded in parts "
        "(S3 requires >= 5 MiB) [SNAPSHOT_PART_SIZE]",
    )
    take.set_defaults(handler=cmd_take, needs=("bucket", "vault_addr"))

    lst = sub.add_parser("list", parents=[s3], help="list stored snapshots, newest first")
    lst.set_defaults(handler=cmd_list, needs=("bucket",))

    restore = sub.add_parser("restore", parents=[s3, vault], help="restore a stored snapshot into Vault")
    which = restore.add_mutually_exclusive_group(required=True)
    which.add_argument("--key", help="object key of the snapshot")
    which.add_argument("--latest", action="store_true", help="the newest snapshot of --cluster-name")
    restore.add_argument(
        "--token-file",
        default=env("VAULT_TOKEN_FILE"),
        help="file with a Vault token allowed to restore (else VAULT_TOKEN) [VAULT_TOKEN_FILE]",
    )
    restore.add_argument(
        "--same-cluster",
        action="store_true",
        help="use sys/storage/raft/snapshot (refused for another cluster's snapshot)",
    )
    restore.add_argument("--yes", action="store_true", help="really replace the target's data")
    restore.set_defaults(handler=cmd_restore, needs=("bucket", "vault_addr"))
    return parser


_FLAGS = {"bucket": "--bucket (SNAPSHOT_S3_BUCKET)", "vault_addr": "--vault-addr (VAULT_ADDR)"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the program; returns the exit code (see the module docstring)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (arguments[0].startswith("-") and arguments[0] not in ("-h", "--help")):
        arguments.insert(0, "take")
    return run_program(
        PROG,
        EXIT_CODES,
        lambda: _run(build_parser().parse_args(arguments)),
        terminated_note=" (temporary file removed, unfinished upload aborted)",
    )


def _run(args: argparse.Namespace) -> int:
    missing = [_FLAGS[name] for name in args.needs if not getattr(args, name)]
    if missing:
        raise UsageError(f"missing {', '.join(missing)}")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    args.prefix = str(args.prefix or "").strip("/")
    code: int = args.handler(args)
    return code
