"""Vault API calls from a chosen client address: a loopback source address, and/or a PROXY protocol v2
header as a Linode NodeBalancer sends it before the TLS handshake.

On loopback every ``127.0.0.0/8`` address is local, so a client can bind its source to ``127.0.0.2``
while the server listens on ``127.0.0.1``: Vault then sees ``127.0.0.2`` as the client. Through the
listener the hub puts behind its NodeBalancer (``proxy_protocol_behavior = "allow_authorized"``,
components/vault_server_config.py) a header from an authorized address makes its source address the
client's; from any other address the header is ignored.

``proxy_v2_header(source, source_port, destination, destination_port)``
    The header (haproxy.org/download/2.9/doc/proxy-protocol.txt, section 2.2).
``https_call(host, port, method, path, ..., source=, header=)``
    One HTTP/1.1 request over TLS on a fresh TCP connection; status and JSON body.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import struct
from collections.abc import Mapping
from typing import Any

#: PROXY protocol v2: the signature; then version 2 + PROXY command, TCP over IPv4, 12 address bytes.
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2_header(source: str, source_port: int, destination: str, destination_port: int) -> bytes:
    addresses = ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address(destination).packed
    body = addresses + struct.pack("!HH", source_port, destination_port)
    return PROXY_V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def https_call(
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    ca_file: str,
    server_name: str,
    token: str | None = None,
    body: Mapping[str, Any] | None = None,
    source: str = "127.0.0.1",
    header: bytes = b"",
    timeout: float = 10.0,
) -> tuple[int, dict[str, Any]]:
    """``method /v1/path`` over TLS on a TCP connection from ``source``, ``header`` sent before TLS; the
    status and the JSON body (``{}`` when there is none)."""
    payload = json.dumps(dict(body)).encode() if body is not None else b""
    lines = [f"{method} /v1/{path} HTTP/1.1", f"Host: {server_name}", "Connection: close"]
    if token:
        lines.append(f"X-Vault-Token: {token}")
    lines.append(f"Content-Length: {len(payload)}")
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection((host, port), timeout=timeout, source_address=(source, 0)) as raw:
        raw.sendall(header)
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
            response = b""
            while chunk := tls.recv(65536):
                response += chunk
    head, _, content = response.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        content = _dechunk(content)
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(content) if content.strip() else {}


def https_get(
    host: str,
    port: int,
    path: str,
    *,
    token: str,
    ca_file: str,
    server_name: str,
    source: str = "127.0.0.1",
    header: bytes = b"",
) -> int:
    """The status of one GET (``https_call``)."""
    status, _ = https_call(
        host, port, "GET", path, token=token, ca_file=ca_file, server_name=server_name, source=source, header=header
    )
    return status
