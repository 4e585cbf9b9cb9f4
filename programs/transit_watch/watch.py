"""The hub's watch on each edge's transit-unseal token: its remaining TTL, seen from outside the edge.

Each edge Vault auto-unseals through its own key on the hub, with a periodic token its deploy
identity created through the token role ``<prefix><edge>`` (``components.transit_unseal``). Only the
edge Vault's seal renews it (go-kms-wrapping ``wrappers/transit/transit_client.go``: one
``renew-self`` at start, then an ``api.LifetimeWatcher``, which retries a failed renewal with backoff
until the token is gone): nothing renews it while that edge is down, cut off from the hub, or running
an older token.
An edge whose token ran out stays sealed at its next restart. This program, run by a hub CronJob
and by an operator (``kubectl create job --from=cronjob/transit-watch ...``), says how long each
edge's token has left, and fails naming every edge whose token is missing or below the threshold.

How, with no ``sudo`` on ``auth/token/accessors`` (which lists every token of the hub): OpenBao
keeps the lease of a token under the token's creation path, for a token made through a role
``auth/token/create/<role>/<salted id>`` (``internal/vault/expiration.go`` ``RegisterAuth``:
``leaseID := path.Join(te.Path, saltedID)``; ``te.Path`` is the creation request's path). So the
program

1. logs in with Kubernetes auth (``--jwt-file``) as ``--role``, whose only policy is
   :func:`watch_policy_hcl`: ``list`` (+ ``sudo``: ``sys/leases/lookup/*`` is a root path,
   ``internal/vault/logical_system.go`` ``PathsSpecial.Root``) on exactly each edge's lease prefix,
   and ``update`` on ``sys/leases/lookup`` (one lease by its id; the ids come from those lists);
2. per edge, lists the leases of tokens made through its token role and looks each up (``id``,
   ``issue_time``, ``expire_time``, ``last_renewal``, ``ttl``, ``renewable``);
3. prints one line per edge and revokes its own token: ``ok`` (one live token with at least
   ``--min-ttl`` left), ``LOW`` (one, with less), ``MISSING`` (none) or ``EXTRA`` (more than one:
   the edge's stack holds one, so any other is stale or someone else's, and the hub cannot tell
   which one the edge holds).

A token that expired is revoked by OpenBao with its lease: the edge then has no live token
(``MISSING``), exactly the state in which its next restart stays sealed. Nothing here sees a token or
an accessor: a lease id holds the token's salted hash only, and the policy grants nothing that acts
on a lease.

Options come from flags or environment variables (flags win); see ``--help``. Vault is reached
through :mod:`programs.vault_http` (https only, pinned CA, no redirects, timeouts).

Exit codes: 0 every edge has exactly one live token, with at least ``--min-ttl`` seconds left; 4 at
least one edge is ``LOW``, ``MISSING`` or ``EXTRA`` (one line on stderr naming each such edge); 2 usage
or configuration error; 3 Vault error (unreachable, TLS, login refused, lookup refused); 1 anything
unexpected; 143 terminated by SIGTERM. A failure prints exactly one line on stderr:
``transit-watch: error: <reason>``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from programs.cli import UsageErrorParser, env, read_token_file, run_program
from programs.errors import EXIT_TERMINATED, EXIT_UNEXPECTED, ExitCodes, PodProgramError, UsageError
from programs.vault_http import HttpFailure, VaultHttp

__all__ = [
    "EXIT_ALERT",
    "EXIT_TERMINATED",
    "EXIT_UNEXPECTED",
    "EdgeReport",
    "TokenLease",
    "WatchAlert",
    "lease_prefix",
    "main",
    "watch_policy_hcl",
]

PROG = "transit-watch"
DEFAULT_JWT_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
DEFAULT_AUTH_PATH = "kubernetes"
#: A running seal renews when 2/3 of its token's TTL plus a third of a grace of 10-20 % has passed
#: (OpenBao ``api/lifetime_watcher.go``: ``calculateSleepDuration``, ``calculateGrace``), so a 768 h
#: token stays above about 205 h (8.5 days) while its edge runs and reaches the hub. Seven days left
#: means nothing has renewed it for more than a day, with a week to act.
DEFAULT_MIN_TTL = 7 * 24 * 3600
DEFAULT_TIMEOUT = 30.0

#: Besides the shared EXIT_UNEXPECTED (1) and EXIT_TERMINATED (143) of programs.errors:
EXIT_USAGE = 2
EXIT_VAULT = 3
EXIT_ALERT = 4

_EDGE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_FRACTION = re.compile(r"\.(\d{6})\d+")


class WatchAlert(PodProgramError):
    """At least one edge's token is missing or below the threshold; the message names each."""


EXIT_CODES: ExitCodes = {UsageError: EXIT_USAGE, HttpFailure: EXIT_VAULT, WatchAlert: EXIT_ALERT}


def lease_prefix(token_role: str) -> str:
    """Where OpenBao keeps the leases of the tokens created through ``token_role``."""
    return f"auth/token/create/{token_role}/"


def watch_policy_hcl(token_role_prefix: str, edges: Sequence[str]) -> str:
    """The whole Vault policy of the watch role: list each edge's token leases, look a lease up."""
    lines = [
        f'path "sys/leases/lookup/{lease_prefix(token_role_prefix + edge)}" {{ capabilities = ["list", "sudo"] }}'
        for edge in sorted(set(edges))
    ]
    lines.append('path "sys/leases/lookup" { capabilities = ["update"] }')
    return "\n".join(lines) + "\n"


def _time(value: Any) -> _dt.datetime | None:
    """An RFC 3339 time as OpenBao writes it (nanoseconds; ``Z``), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return _dt.datetime.fromisoformat(_FRACTION.sub(r".\1", value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _stamp(moment: _dt.datetime | None) -> str:
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "never"


def duration(seconds: int) -> str:
    """``seconds`` as ``31d23h59m`` (``45s`` under a minute)."""
    if seconds < 60:
        return f"{max(seconds, 0)}s"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return (f"{days}d" if days else "") + f"{hours}h{rest // 60:02d}m"


@dataclass(frozen=True)
class TokenLease:
    """One transit-unseal token's lease as ``sys/leases/lookup`` describes it."""

    issue_time: _dt.datetime | None
    expire_time: _dt.datetime | None
    last_renewal: _dt.datetime | None
    ttl: int
    renewable: bool

    @classmethod
    def from_lookup(cls, data: dict[str, Any]) -> TokenLease:
        ttl = data.get("ttl")
        return cls(
            issue_time=_time(data.get("issue_time")),
            expire_time=_time(data.get("expire_time")),
            last_renewal=_time(data.get("last_renewal")),
            ttl=ttl if isinstance(ttl, int) else 0,
            renewable=data.get("renewable") is True,
        )


@dataclass(frozen=True)
class EdgeReport:
    """What the watch found for one edge, and whether it needs attention.

    An edge's stack holds exactly one token (a replacement revokes the old one, ``vault_token``'s
    delete); a second live token through its role is either stale or made by someone else, and
    either way a second credential that can decrypt with the edge's key. Which one the edge holds
    cannot be seen from the hub, so more than one is a finding of its own (``EXTRA``)."""

    edge: str
    leases: tuple[TokenLease, ...]
    min_ttl: int

    @property
    def current(self) -> TokenLease | None:
        """The newest token (the one a sole token is; with several, the last one made)."""
        epoch = _dt.datetime.min.replace(tzinfo=_dt.UTC)
        return max(self.leases, key=lambda lease: lease.issue_time or epoch, default=None)

    @property
    def status(self) -> str:
        current = self.current
        if current is None:
            return "MISSING"
        if len(self.leases) > 1:
            return "EXTRA"
        return "ok" if current.ttl >= self.min_ttl else "LOW"

    @property
    def problem(self) -> str:
        """Why the edge needs attention ("" when it does not)."""
        status = self.status
        if status == "MISSING":
            return f"{self.edge} (no live transit-unseal token: expired, revoked or never created)"
        if status == "EXTRA":
            return f"{self.edge} ({len(self.leases)} live transit-unseal tokens where its stack holds one)"
        if status == "LOW" and self.current is not None:
            return f"{self.edge} (ttl {duration(self.current.ttl)} < {duration(self.min_ttl)})"
        return ""

    def line(self) -> str:
        current = self.current
        if current is None:
            return f"{self.edge}: MISSING: no live transit-unseal token (expired, revoked or never created)"
        extra = ""
        if len(self.leases) > 1:
            ttls = ", ".join(duration(lease.ttl) for lease in sorted(self.leases, key=lambda lease: lease.ttl))
            extra = f", {len(self.leases)} live tokens (ttls {ttls})"
        return (
            f"{self.edge}: {self.status}: ttl {duration(current.ttl)} (expires {_stamp(current.expire_time)}),"
            f" last renewal {_stamp(current.last_renewal)}, issued {_stamp(current.issue_time)}{extra}"
        )


def edge_leases(vault: VaultHttp, token: str, token_role: str) -> tuple[TokenLease, ...]:
    """The live leases of the tokens created through ``token_role`` (none: an empty tuple)."""
    prefix = lease_prefix(token_role)
    listing = f"sys/leases/lookup/{prefix}"
    reply = vault.raw("LIST", listing, token=token, action=f"listing the tokens of {token_role}")
    if reply.status == 404:  # no lease under the prefix
        return ()
    if reply.status != 200:
        raise vault.fail_for(reply, "LIST", listing, action=f"listing the tokens of {token_role}", token=token)
    keys = reply.body.get("data", {}).get("keys", [])
    leases = []
    for key in keys if isinstance(keys, list) else []:
        action = f"looking up a token lease of {token_role}"
        found = vault.raw("PUT", "sys/leases/lookup", token=token, body={"lease_id": prefix + str(key)}, action=action)
        if found.status == 400:  # expired and revoked between the list and the lookup
            continue
        if found.status != 200:
            raise vault.fail_for(found, "PUT", "sys/leases/lookup", action=action, token=token)
        leases.append(TokenLease.from_lookup(found.body.get("data") or {}))
    return tuple(leases)


def watch(vault: VaultHttp, token: str, edges: Sequence[str], token_role_prefix: str, min_ttl: int) -> list[EdgeReport]:
    return [EdgeReport(edge, edge_leases(vault, token, token_role_prefix + edge), min_ttl) for edge in edges]


def parse_edges(raw: str) -> tuple[str, ...]:
    edges = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    bad = [edge for edge in edges if not _EDGE.match(edge)]
    if bad:
        raise UsageError(f"--edges: not edge names (DNS labels): {', '.join(bad)}")
    if not edges:
        raise UsageError("--edges (TRANSIT_WATCH_EDGES) names no edge")
    return edges


def build_parser() -> argparse.ArgumentParser:
    parser = UsageErrorParser(prog=PROG, description="Report each edge's transit-unseal token TTL, seen from the hub.")
    parser.add_argument("--vault-addr", default=env("VAULT_ADDR"), help="the hub Vault (VAULT_ADDR), https://")
    parser.add_argument("--ca-file", default=env("VAULT_CACERT"), help="CA of the hub Vault (VAULT_CACERT)")
    parser.add_argument("--role", default=env("TRANSIT_WATCH_VAULT_ROLE"), help="Kubernetes auth role")
    parser.add_argument("--auth-path", default=env("TRANSIT_WATCH_VAULT_AUTH_PATH", DEFAULT_AUTH_PATH))
    parser.add_argument("--jwt-file", default=env("TRANSIT_WATCH_JWT_FILE", DEFAULT_JWT_FILE))
    parser.add_argument("--edges", default=env("TRANSIT_WATCH_EDGES"), help="edge names, comma-separated")
    parser.add_argument(
        "--token-role-prefix",
        default=env("TRANSIT_WATCH_TOKEN_ROLE_PREFIX"),
        help="an edge's token role is this prefix + its name (TRANSIT_WATCH_TOKEN_ROLE_PREFIX)",
    )
    parser.add_argument(
        "--min-ttl",
        default=env("TRANSIT_WATCH_MIN_TTL", str(DEFAULT_MIN_TTL)),
        help="seconds a token must have left (TRANSIT_WATCH_MIN_TTL; default 7 days)",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per request")
    return parser


_REQUIRED = {
    "vault_addr": "--vault-addr (VAULT_ADDR)",
    "role": "--role (TRANSIT_WATCH_VAULT_ROLE)",
    "edges": "--edges (TRANSIT_WATCH_EDGES)",
    "token_role_prefix": "--token-role-prefix (TRANSIT_WATCH_TOKEN_ROLE_PREFIX)",
}


def run(args: argparse.Namespace) -> int:
    missing = [flag for name, flag in _REQUIRED.items() if not getattr(args, name)]
    if missing:
        raise UsageError(f"missing {', '.join(missing)}")
    try:
        min_ttl = int(args.min_ttl)
    except ValueError:
        raise UsageError(f"--min-ttl (TRANSIT_WATCH_MIN_TTL) is not a number of seconds: {args.min_ttl!r}") from None
    if min_ttl <= 0 or args.timeout <= 0:
        raise UsageError("--min-ttl and --timeout must be positive")
    edges = parse_edges(args.edges)
    jwt = read_token_file(args.jwt_file)
    vault = VaultHttp(
        args.vault_addr, args.ca_file, timeout=args.timeout, label="hub Vault", flag="--vault-addr", ca_flag="--ca-file"
    )
    token = vault.login_kubernetes(args.auth_path, args.role, jwt, action="Vault login")
    try:
        reports = watch(vault, token, edges, args.token_role_prefix, min_ttl)
    finally:
        vault.revoke_self(token)
    for report in reports:
        print(report.line(), flush=True)
    problems = [report.problem for report in reports if report.problem]
    if problems:
        raise WatchAlert(f"{len(problems)} of {len(reports)} edges need attention: {'; '.join(problems)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the program; returns the exit code (see the module docstring)."""
    return run_program(
        PROG, EXIT_CODES, lambda: run(build_parser().parse_args(sys.argv[1:] if argv is None else list(argv)))
    )
