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
"""

from __future__ import annotations

import json
import os
import re
import stat
from typing import Any

__all__ = ["CredentialFileError", "load", "load_dotenv", "load_json"]

_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)='([^'\r\n]*)'")
#: Larger than any credential file the templates produce; a bigger file is not one of them.
_MAX_BYTES = 1 << 20


class CredentialFileError(ValueError):
    """A credential file is missing, too widely readable or not in the expected format."""


def _read_private(path: str | os.PathLike[str]) -> str:
    """The text of ``path`` after checking it is a regular file only its owner may access."""
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
        if mode & 0o077:
            raise CredentialFileError(
                f"{name}: mode {mode:04o} lets group or others access it; credential files must be "
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
