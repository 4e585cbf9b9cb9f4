"""A TLS handshake on loopback between two Python ``ssl`` contexts, as the OTLP collectors make
them (``tests/real/test_otlp_mtls.py``, ``test_hub_edge_flow.py``).

:class:`Gateway` serves one connection with a server context and reports what each side saw: the
server's error (a refused client certificate), the client's error (a refused server certificate)
and the common name of the client certificate the server accepted.
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any


@dataclass
class Handshake:
    """What each side of one handshake saw (``None``: no error, or no client certificate)."""

    server_error: str | None
    peer_common_name: str | None
    client_error: str | None


@dataclass
class Gateway:
    """A server context (the receiver's TLS settings and files)."""

    context: ssl.SSLContext

    def handshake(self, client: ssl.SSLContext, server_hostname: str) -> Handshake:
        """One connection from ``client`` dialling ``server_hostname``; the server echoes a ping."""
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(10)
        outcome: dict[str, Any] = {"error": None, "cn": None}

        def serve() -> None:
            connection, _ = listener.accept()
            connection.settimeout(10)
            try:
                with self.context.wrap_socket(connection, server_side=True) as tls:
                    peer = tls.getpeercert()
                    subject: Any = peer["subject"] if peer else ()
                    outcome["cn"] = next((rdn[0][1] for rdn in subject if rdn[0][0] == "commonName"), None)
                    tls.sendall(b"ok:" + tls.recv(16))
            except (ssl.SSLError, OSError) as err:
                outcome["error"] = str(err)

        thread = threading.Thread(target=serve)
        thread.start()
        client_error = None
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=10) as raw,
                client.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                tls.sendall(b"ping")
                if tls.recv(16) != b"ok:ping":
                    client_error = "no answer"
        except (ssl.SSLError, OSError) as err:
            client_error = str(err)
        thread.join(timeout=15)
        listener.close()
        return Handshake(outcome["error"], outcome["cn"], client_error)
