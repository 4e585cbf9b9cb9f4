"""Unit tests of programs.raft_snapshot: snapshot verification, key names, retention, CLI errors.

The synthetic snapshots have the layout OpenBao 2.7 produces (measured: a gzip'd tar of
``meta.json``, ``state.bin``, ``SHA256SUMS`` listing those two, and ``SHA256SUMS.sealed``); the
real-server tests in tests/real/test_raft_snapshot.py check the same logic on real snapshots.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from programs.raft_snapshot import snapshot as snap
from programs.raft_snapshot.snapshot import (
    SNAPSHOT_POLICY_HCL,
    SnapshotInvalidError,
    StoredSnapshot,
    apply_retention,
    main,
    multipart_etag,
    snapshot_key,
    verify_snapshot,
)


def build(
    files: dict[str, bytes] | None = None,
    *,
    sums_for: list[str] | None = None,
    sums_override: bytes | None = None,
    sealed: bool = True,
) -> bytes:
    state = os.urandom(3000)
    content = (
        files
        if files is not None
        else {
            "meta.json": json.dumps(
                {"Version": 1, "ID": "bolt-snapshot", "Index": 29, "Term": 3, "Size": len(state)}
            ).encode(),
            "state.bin": state,
        }
    )
    names = sums_for if sums_for is not None else list(content)
    sums = (
        sums_override
        if sums_override is not None
        else "".join(f"{hashlib.sha256(content[n]).hexdigest()}  {n}\n" for n in names if n in content).encode()
    )
    members = dict(content)
    members["SHA256SUMS"] = sums
    if sealed:
        members["SHA256SUMS.sealed"] = os.urandom(185)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue())


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "s.snap"
    path.write_bytes(data)
    return path


def test_valid_snapshot(tmp_path: Path) -> None:
    info = verify_snapshot(write(tmp_path, build()))
    assert set(info.files) == {"meta.json", "state.bin", "SHA256SUMS", "SHA256SUMS.sealed"}
    assert (info.raft_index, info.raft_term, info.state_size) == (29, 3, 3000)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_snapshot(tmp_path: Path, keep: float) -> None:
    data = build()
    with pytest.raises(SnapshotInvalidError, match="truncated"):
        verify_snapshot(write(tmp_path, data[: int(len(data) * keep)]))


def test_truncated_by_the_gzip_trailer_only(tmp_path: Path) -> None:
    data = build()
    with pytest.raises(SnapshotInvalidError, match="truncated"):
        verify_snapshot(write(tmp_path, data[:-4]))


def test_corrupted_byte(tmp_path: Path) -> None:
    data = bytearray(build())
    data[len(data) // 2] ^= 0x55
    with pytest.raises(SnapshotInvalidError):
        verify_snapshot(write(tmp_path, bytes(data)))


def test_bad_crc(tmp_path: Path) -> None:
    data = bytearray(build())
    data[-8] ^= 0x01  # CRC-32 in the gzip trailer
    with pytest.raises(SnapshotInvalidError, match="gzip"):
        verify_snapshot(write(tmp_path, bytes(data)))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not a gzip"),
        (b'{"errors":["permission denied"]}', "not a gzip"),
        (gzip.compress(b"not a tar archive at all" * 40, mtime=0), "tar"),
    ],
    ids=["empty", "a Vault error body", "gzip but not tar"],  # stable ids: xdist workers must agree
)
def test_not_a_snapshot(tmp_path: Path, data: bytes, reason: str) -> None:
    with pytest.raises(SnapshotInvalidError, match=reason):
        verify_snapshot(write(tmp_path, data))


def test_trailing_garbage(tmp_path: Path) -> None:
    with pytest.raises(SnapshotInvalidError, match="gzip"):
        verify_snapshot(write(tmp_path, build() + b"garbage!"))


def test_hash_mismatch(tmp_path: Path) -> None:
    bogus = b"0" * 64
    sums = bogus + b"  state.bin\n" + bogus + b"  meta.json\n"
    with pytest.raises(SnapshotInvalidError, match=r"SHA-256 of meta\.json does not match"):
        verify_snapshot(write(tmp_path, build(sums_override=sums)))


def test_required_files_must_be_listed(tmp_path: Path) -> None:
    with pytest.raises(SnapshotInvalidError, match=r"does not list state\.bin"):
        verify_snapshot(write(tmp_path, build(sums_for=["meta.json"])))


def test_listed_file_missing(tmp_path: Path) -> None:
    files = {"meta.json": b"{}", "state.bin": b"x"}
    sums = "".join(f"{hashlib.sha256(v).hexdigest()}  {k}\n" for k, v in files.items()).encode()
    sums += hashlib.sha256(b"y").hexdigest().encode() + b"  extra.bin\n"
    with pytest.raises(SnapshotInvalidError, match=r"extra\.bin is listed"):
        verify_snapshot(write(tmp_path, build(files, sums_override=sums)))


def test_unlisted_file(tmp_path: Path) -> None:
    files = {"meta.json": b"{}", "state.bin": b"x", "smuggled": b"y"}
    with pytest.raises(SnapshotInvalidError, match="not listed"):
        verify_snapshot(write(tmp_path, build(files, sums_for=["meta.json", "state.bin"])))


def test_missing_sums_and_sealed_sums(tmp_path: Path) -> None:
    with pytest.raises(SnapshotInvalidError, match=r"SHA256SUMS\.sealed"):
        verify_snapshot(write(tmp_path, build(sealed=False)))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("state.bin")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(SnapshotInvalidError, match="no SHA256SUMS"):
        verify_snapshot(write(tmp_path, gzip.compress(buffer.getvalue())))


def test_meta_size_must_match_state(tmp_path: Path) -> None:
    files = {"meta.json": json.dumps({"Size": 5}).encode(), "state.bin": b"1234"}
    with pytest.raises(SnapshotInvalidError, match="declares 5"):
        verify_snapshot(write(tmp_path, build(files)))


def test_snapshot_key_sorts_by_time() -> None:
    t1 = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    expected = "vault-raft-snapshots/hub/20260102T030405.678Z.snap"
    assert snapshot_key("vault-raft-snapshots", "hub", t1) == expected
    assert snapshot_key("", "hub", t1) == "hub/20260102T030405.678Z.snap"
    t2 = t1 + dt.timedelta(milliseconds=1)
    assert snapshot_key("p", "hub", t1) < snapshot_key("p", "hub", t2)


def test_multipart_etag(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    path = write(tmp_path, data)
    parts = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-3"
    assert multipart_etag(path, 4096) == expected


def test_policy_is_exactly_snapshot_read() -> None:
    assert SNAPSHOT_POLICY_HCL == 'path "sys/storage/raft/snapshot" {\n  capabilities = ["read"]\n}\n'


class FakeStore:
    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.deleted: list[str] = []

    def where(self, key: str = "") -> str:
        return f"s3://b/{key}"

    def list_snapshots(self, prefix: str, cluster: str | None) -> list[StoredSnapshot]:
        found = [StoredSnapshot(k, "hub", k.rsplit("/", 1)[1][:-5], 1, "") for k in self.keys]
        return sorted(found, key=lambda s: s.timestamp, reverse=True)

    def delete(self, key: str) -> None:
        self.deleted.append(key)
        self.keys.remove(key)


def test_retention_keeps_newest_and_never_the_new_upload() -> None:
    keys = [f"p/hub/2026010{i}T000000.000Z.snap" for i in range(1, 6)]
    store = FakeStore(list(keys))
    deleted = apply_retention(store, "p", "hub", 2, keys[-1])  # type: ignore[arg-type]
    assert deleted == [keys[2], keys[1], keys[0]]
    assert sorted(store.keys) == keys[-2:]
    # a clock that went backwards: the just-uploaded key sorts oldest but is still kept
    store = FakeStore(list(keys))
    apply_retention(store, "p", "hub", 1, keys[0])  # type: ignore[arg-type]
    assert sorted(store.keys) == [keys[0], keys[-1]]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["take", "--cluster-name", "hub"], "missing --bucket"),
        (["take", "--bucket", "b", "--vault-addr", "https://v", "--keep", "0"], "--keep"),
        (
            ["take", "--bucket", "b", "--vault-addr", "ftp://v", "--cluster-name", "hub", "--jwt-file", __file__],
            "--vault-addr 'ftp://v' must be an https:// URL",
        ),
        (
            ["take", "--bucket", "b", "--vault-addr", "http://v", "--cluster-name", "hub", "--jwt-file", __file__],
            "--vault-addr 'http://v' must be an https:// URL",
        ),
        (["take", "--bucket", "b", "--vault-addr", "https://v", "--cluster-name", "a/b"], "cluster name"),
        (
            [
                "take",
                "--bucket",
                "b",
                "--vault-addr",
                "https://v",
                "--cluster-name",
                "hub",
                "--jwt-file",
                "/nonexistent/token",
            ],
            "cannot read the service-account token file",
        ),
        (["restore", "--bucket", "b", "--vault-addr", "https://v", "--key", "k"], "needs a Vault token"),
        (["restore", "--bucket", "b", "--vault-addr", "https://v"], "one of the arguments --key --latest"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("SNAPSHOT_", "VAULT_", "AWS_")):
            monkeypatch.delenv(name)
    assert main(argv) == snap.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("raft-snapshot: error: ") and needle in err[0], err
