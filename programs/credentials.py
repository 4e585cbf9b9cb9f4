"""Load the credential files the Vault Agent renders into a Pod (``/vault/secrets/<name>``).

The files are written by the agent from the templates in :mod:`components.agent_injector`
(``render_template``) in one of two formats, and this module parses them; it never executes,
evaluates or sources them (no ``exec``, ``eval``, shell or ``source``):

``dotenv``
    One ``KEY='value'`` line per variable: ``KEY`` is ``[A-Za-z_][A-Za-z0-9_]*``, the value is
    single-quoted and contains no ``'`` and no line break, nothing else is on the line. Every other
    line (blank lines, comments, ``export``, double quotes, unquoted values, a repeated key) is
    refused, naming the line number only: the content may be a secret.
``json``
    One JSON object (Vault's ``.Data`` through ``toJSON``).

Every file must be private to its owner: a file that group or others may access
(``mode & 0o077``) is refused before it is read, since the injector renders it with mode 0400 for
the workload's own user. Error messages name the file and the reason, never its content.

Usage (in a workload whose Pod template carries the injector annotations)::

    from programs import credentials

    db = credentials.load_dotenv("/vault/secrets/db")        # {"DB_USERNAME": ..., "DB_PASSWORD": ...}
    results = credentials.load_json("/vault/secrets/results")  # {"username": ..., "password": ...}
    aws = credentials.load("/vault/secrets/aws")              # format chosen from the content
    session = boto3.Session(aws_access_key_id=aws["AWS_ACCESS_KEY_ID"], ...)

Revoking the credentials when the workload is done (Jobs): the agent of a pre-populate-only Pod
renders the files and exits without revoking anything, so the database users would live until their
leases' TTL. With ``vault.hashicorp.com/agent-inject-token: "true"`` the injector adds a second file
sink, ``/vault/secrets/token``: the agent's own auto-auth token, the one whose child leases are the
rendered credentials. :func:`revoke_token` revokes it (``auth/token/revoke-self``); Vault then
revokes every lease of that token and the database engine drops the users. The Vault address, CA
file and TLS server name come from ``VAULT_ADDR``, ``VAULT_CACERT`` and ``VAULT_TLS_SERVER_NAME``
(the Vault CLI's own variables) unless given::

    with credentials.revoked_when_done("/vault/secrets/token"):
        db = credentials.load("/vault/secrets/db")
        ...                                        # use the credentials; revoked on the way out

    python -m programs.credentials revoke --token-file /vault/secrets/token   # after a shell workload

The command exits 0 (revoked), 2 (usage: address, CA file) or 3 (not revoked: the reason on
stderr, never the token).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from programs.vault_http import VaultHttp

__all__ = [
    "CredentialFileError",
    "load",
    "load_dotenv",
    "load_json",
    "main",
    "read_token",
    "revoke_token",
    "revoked_when_done",
]

#: The exit status of ``revoke`` when the token was not revoked.
EXIT_NOT_REVOKED = 3

_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)='([^'\r\n]*)'")
#: Larger than any credential file the templates produce; a bigger file is not one of them.
_MAX_BYTES = 1 << 20


class CredentialFileError(ValueError):
    """A credential file is missing, too widely readable or not in the expected format."""


def _read_private(path: str | os.PathLike[str], refused_bits: int = 0o077) -> str:
    """The text of ``path`` after checking it is a regular file only its owner may access (none of
    ``refused_bits`` set in its mode)."""
    name = os.fspath(path)
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer; no effect on regular files
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise CredentialFileError(f"{name}: cannot open credential file ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CredentialFileError(f"{name}: not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & refused_bits:
            whom = "group or others" if refused_bits & 0o070 else "others"
            raise CredentialFileError(
                f"{name}: mode {mode:04o} lets {whom} access it; credential files must be "
                "private to their owner (0400 or 0600)"
            )
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_BYTES:
                break
        raw = b"".join(chunks)
    finally:
        os.close(fd)
    if len(raw) > _MAX_BYTES:
        raise CredentialFileError(f"{name}: larger than {_MAX_BYTES} bytes; not a credential file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass  # raised below, outside the handler: the decode error holds the file's bytes
    raise CredentialFileError(f"{name}: not UTF-8 text")


def _parse_dotenv(text: str, name: str) -> dict[str, str]:
    if not text.strip():
        raise CredentialFileError(f"{name}: empty; expected KEY='value' lines")
    if not text.endswith("\n"):
        text += "\n"
    values: dict[str, str] = {}
    for number, line in enumerate(text.split("\n")[:-1], start=1):
        match = _LINE.fullmatch(line)
        if match is None:
            raise CredentialFileError(f"{name}: line {number} is not a KEY='value' line")
        key, value = match.groups()
        if key in values:
            raise CredentialFileError(f"{name}: line {number} repeats a key given on an earlier line")
        values[key] = value
    return values


def _parse_json(text: str, name: str) -> dict[str, Any]:
    position: str | None = None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        position = f"line {exc.lineno}, column {exc.colno}"
    except ValueError:
        position = "?"
    if position is not None:  # raised outside the handler: the decode error holds the whole text
        raise CredentialFileError(f"{name}: not valid JSON ({position})")
    if not isinstance(value, dict):
        raise CredentialFileError(f"{name}: JSON is not an object")
    return value


def load_dotenv(path: str | os.PathLike[str]) -> dict[str, str]:
    """The variables of a ``dotenv`` credential file (``KEY='value'`` lines), by name."""
    return _parse_dotenv(_read_private(path), os.fspath(path))


def load_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The object of a ``json`` credential file."""
    return _parse_json(_read_private(path), os.fspath(path))


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A credential file in either format: JSON if its first non-blank character is ``{``, else dotenv."""
    name = os.fspath(path)
    text = _read_private(path)
    if text.lstrip().startswith("{"):
        return _parse_json(text, name)
    return _parse_dotenv(text, name)


# ---------------------------------------------------------------------------------------------
# revoking the agent's token (and with it the rendered credentials)
# ---------------------------------------------------------------------------------------------
def read_token(path: str | os.PathLike[str]) -> str:
    """The token in the agent's token sink file (``agent-inject-token``). The agent writes it with
    its file sink's default mode 0640, so only access by others is refused."""
    token = _read_private(path, refused_bits=0o007).strip()
    if not token or any(c.isspace() for c in token):
        raise CredentialFileError(f"{os.fspath(path)}: not a Vault token")
    return token


def _vault(address: str | None, ca_file: str | None, tls_server_name: str | None) -> VaultHttp:
    """The Vault client, from the arguments or ``VAULT_ADDR``/``VAULT_CACERT``/``VAULT_TLS_SERVER_NAME``
    (a :class:`~programs.errors.UsageError` for a missing or non-https address or an unreadable CA)."""
    from programs.errors import UsageError
    from programs.vault_http import VaultHttp

    address = address or os.environ.get("VAULT_ADDR")
    ca_file = ca_file or os.environ.get("VAULT_CACERT")
    if not address or not ca_file:
        raise UsageError(
            "the Vault address and CA file are required (--vault-address/VAULT_ADDR, --vault-ca/VAULT_CACERT)"
        )
    return VaultHttp(
        address,
        ca_file,
        timeout=10.0,
        flag="--vault-address/VAULT_ADDR",
        ca_flag="--vault-ca/VAULT_CACERT",
        server_name=tls_server_name or os.environ.get("VAULT_TLS_SERVER_NAME") or None,
    )


def revoke_token(
    token_file: str | os.PathLike[str],
    address: str | None = None,
    ca_file: str | None = None,
    *,
    tls_server_name: str | None = None,
) -> None:
    """Revoke the token in ``token_file`` (``POST auth/token/revoke-self``), verified against
    ``ca_file`` only. Vault revokes the token's leases with it: the database users are dropped.
    Failures are :class:`CredentialFileError` (the file) or :mod:`programs.vault_http` failures."""
    vault = _vault(address, ca_file, tls_server_name)
    token = read_token(token_file)
    vault.call("POST", "auth/token/revoke-self", token=token, body={}, action="revoking the agent's token")


@contextlib.contextmanager
def revoked_when_done(
    token_file: str | os.PathLike[str],
    address: str | None = None,
    ca_file: str | None = None,
    *,
    tls_server_name: str | None = None,
) -> Iterator[None]:
    """Run the block, then revoke the agent's token (and the credentials) whatever the block did.
    The client is checked before the block runs. A failed revocation raises, unless the block
    raised: then it is reported on stderr and the block's exception goes on."""
    _vault(address, ca_file, tls_server_name)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        try:
            revoke_token(token_file, address, ca_file, tls_server_name=tls_server_name)
        except Exception as exc:
            if not failed:
                raise
            print(f"the credentials were NOT revoked (they expire with their TTL): {exc}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """``revoke``: revoke the agent's token and with it the credentials (module docstring)."""
    import argparse

    from programs.errors import PodProgramError, UsageError

    parser = argparse.ArgumentParser(prog="python -m programs.credentials")
    commands = parser.add_subparsers(dest="command", required=True)
    revoke = commands.add_parser("revoke", help="revoke the agent's token and the credentials of its leases")
    revoke.add_argument("--token-file", default="/vault/secrets/token")
    revoke.add_argument("--vault-address", help="default: VAULT_ADDR")
    revoke.add_argument("--vault-ca", help="default: VAULT_CACERT")
    revoke.add_argument("--tls-server-name", help="default: VAULT_TLS_SERVER_NAME, else the address's host")
    args = parser.parse_args(argv)
    try:
        revoke_token(args.token_file, args.vault_address, args.vault_ca, tls_server_name=args.tls_server_name)
    except UsageError as exc:
        print(f"revoke: {exc}", file=sys.stderr)
        return 2
    except (PodProgramError, CredentialFileError) as exc:
        print(f"revoke: the credentials were NOT revoked (they expire with their TTL): {exc}", file=sys.stderr)
        return EXIT_NOT_REVOKED
    print("revoke: the agent's token and its credentials are revoked", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
