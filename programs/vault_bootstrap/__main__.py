"""Command line of the vault bootstrap Job: ``python -m programs.vault_bootstrap [flags]``.

Every flag can also come from the environment variable named in its help (``VAULT_BOOTSTRAP_*``);
a flag wins over the variable. List values in variables are comma-separated. Secrets are never
taken from flags or variables: the admin passwords (and a recovery root token) are read from files.
Exit codes are listed in :mod:`programs.vault_bootstrap.bootstrap`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from programs.cli import env
from programs.errors import PodProgramError, UsageError, exit_code_of
from programs.vault_bootstrap.bootstrap import (
    EXIT_CODES,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    Config,
    JobGrant,
    Peer,
    SealKind,
    parse_duration,
    run,
    store_from_spec,
)

ENV = "VAULT_BOOTSTRAP_"


def _env_list(name: str) -> list[str]:
    raw = os.environ.get(ENV + name, "")
    return [part.strip() for part in raw.split(",") if part.strip()]


def _env(name: str, default: str | None = None) -> str | None:
    return env(ENV + name, default)


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors are one stderr line too (exit 2); ``--help`` stays the full text."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"vault-bootstrap: error: {' '.join(message.split())} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="vault-bootstrap",
        description="Initialise (once), unseal and hand a Vault HA Raft cluster over to an admin login.",
    )
    p.add_argument(
        "--peer",
        action="append",
        default=None,
        metavar="URL",
        help="peer API URL, repeat per peer, peer 0 is initialised [PEERS]",
    )
    p.add_argument(
        "--tls-server-name",
        action="append",
        default=None,
        metavar="NAME",
        help="TLS server name to verify: once (all peers) or once per peer [TLS_SERVER_NAMES]",
    )
    p.add_argument("--ca-file", default=None, help="CA bundle for the peers' certificates [CA_FILE]")
    p.add_argument(
        "--seal",
        choices=("shamir", "auto"),
        default=None,
        help="shamir (unseal keys) or auto (transit/awskms: recovery keys) [SEAL], default shamir",
    )
    p.add_argument("--key-shares", type=int, default=None, help="unseal/recovery key shares [KEY_SHARES], default 5")
    p.add_argument("--key-threshold", type=int, default=None, help="key threshold [KEY_THRESHOLD], default 3")
    p.add_argument(
        "--pgp-key",
        action="append",
        default=None,
        metavar="BASE64",
        help="operator PGP public key (base64), one per share; keys are then stored encrypted [PGP_KEYS]",
    )
    p.add_argument(
        "--insecure-plaintext-unseal-keys-for-development",
        choices=("true", "false"),
        default=None,
        help="development only: true allows a Shamir seal without --pgp-key, the unseal keys stored in plain "
        "text [INSECURE_PLAINTEXT_UNSEAL_KEYS_FOR_DEVELOPMENT], default false",
    )
    p.add_argument(
        "--root-token-pgp-key",
        default=None,
        metavar="BASE64",
        help="PGP key for the root token (bootstrap then stops for the operator) [ROOT_TOKEN_PGP_KEY]",
    )
    p.add_argument(
        "--userpass-path",
        "--admin-mount",
        dest="userpass_path",
        default=None,
        help="admin userpass mount [USERPASS_PATH], default userpass-pulumi",
    )
    p.add_argument(
        "--username",
        "--admin-username",
        dest="username",
        default=None,
        help="admin user [USERNAME], default pulumi",
    )
    p.add_argument(
        "--password-file",
        "--admin-password-file",
        dest="password_file",
        default=None,
        help="file holding the admin password [PASSWORD_FILE], required",
    )
    p.add_argument(
        "--previous-password-file",
        "--admin-previous-password-file",
        dest="previous_password_file",
        default=None,
        help="file holding the previous generation's admin password, which a rotation logs in with "
        "[PREVIOUS_PASSWORD_FILE]",
    )
    p.add_argument(
        "--admin-policy-name",
        default=None,
        help="admin policy name [ADMIN_POLICY_NAME], default pulumi-admin",
    )
    p.add_argument("--admin-policy-file", default=None, help="admin policy HCL file [ADMIN_POLICY_FILE], required")
    p.add_argument("--admin-token-ttl", default=None, help="admin token TTL [ADMIN_TOKEN_TTL], default 20m")
    p.add_argument("--admin-token-max-ttl", default=None, help="admin token max TTL [ADMIN_TOKEN_MAX_TTL], default 1h")
    p.add_argument(
        "--root-token-file",
        default=None,
        help="recovery only: root token from generate-root; admin path is re-created, token revoked [ROOT_TOKEN_FILE]",
    )
    p.add_argument(
        "--rotate-admin-password",
        choices=("true", "false"),
        default=None,
        help="when the admin login fails, log in with the previous password and set the password file's "
        "one [ROTATE_ADMIN_PASSWORD], default false",
    )
    p.add_argument(
        "--state",
        default=None,
        help="init result store: file:PATH or kubernetes-secret:NAMESPACE/NAME [STATE]; or one of the two flags below",
    )
    p.add_argument("--state-file", default=None, metavar="PATH", help="same as --state file:PATH")
    p.add_argument(
        "--state-kubernetes-secret",
        default=None,
        metavar="NAMESPACE/NAME",
        help="same as --state kubernetes-secret:NAMESPACE/NAME",
    )
    grant = p.add_argument_group(
        "the run's own grant (kubernetes-secret store): the RoleBinding is made a dependent of the Job, so "
        "the garbage collector deletes it with the Job; all three or none"
    )
    grant.add_argument("--role-binding", default=None, metavar="NAME", help="[ROLE_BINDING]")
    grant.add_argument("--job-name", default=None, metavar="NAME", help="[JOB_NAME]")
    grant.add_argument("--job-uid", default=None, metavar="UID", help="[JOB_UID]")
    p.add_argument(
        "--timeout", type=float, default=None, help="deadline in seconds for each wait [TIMEOUT], default 600"
    )
    p.add_argument("--request-timeout", type=float, default=None, help="per HTTP request, seconds, default 10")
    p.add_argument("--poll-interval", type=float, default=None, help="seconds between polls, default 0.5")
    ap = p.add_argument_group("autopilot (sys/storage/raft/autopilot/configuration; written only if different)")
    ap.add_argument(
        "--autopilot-server-stabilization-time",
        default=None,
        metavar="DURATION",
        help="e.g. 10s [AUTOPILOT_SERVER_STABILIZATION_TIME]",
    )
    ap.add_argument(
        "--autopilot-last-contact-threshold",
        default=None,
        metavar="DURATION",
        help="[AUTOPILOT_LAST_CONTACT_THRESHOLD]",
    )
    ap.add_argument(
        "--autopilot-dead-server-last-contact-threshold",
        default=None,
        metavar="DURATION",
        help=">= 1m [AUTOPILOT_DEAD_SERVER_LAST_CONTACT_THRESHOLD]",
    )
    ap.add_argument(
        "--autopilot-cleanup-dead-servers",
        choices=("true", "false"),
        default=None,
        help="needs min quorum >= 3 [AUTOPILOT_CLEANUP_DEAD_SERVERS]",
    )
    ap.add_argument("--autopilot-min-quorum", type=int, default=None, help="[AUTOPILOT_MIN_QUORUM]")
    ap.add_argument("--autopilot-max-trailing-logs", type=int, default=None, help="[AUTOPILOT_MAX_TRAILING_LOGS]")
    return p


def config_from_args(args: argparse.Namespace) -> tuple[Config, str]:
    """Merge flags and ``VAULT_BOOTSTRAP_*`` variables into a ``Config`` and the state store spec."""
    urls: list[str] = args.peer or _env_list("PEERS")
    names: list[str] = args.tls_server_name or _env_list("TLS_SERVER_NAMES")
    if names and len(names) not in (1, len(urls)):
        raise UsageError(f"{len(names)} TLS server names for {len(urls)} peers: give one, or one per peer")
    if len(names) == 1:
        names = names * len(urls)
    peers = tuple(Peer(u, names[i] if names else None) for i, u in enumerate(urls))

    def need(value: str | None, flag: str) -> str:
        if not value:
            raise UsageError(f"{flag} is required")
        return value

    def number(value: str | None, flag: str) -> int | None:
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"{flag} must be an integer, got {value!r}") from None

    autopilot: dict[str, str | int | bool] = {}
    for key in ("server_stabilization_time", "last_contact_threshold", "dead_server_last_contact_threshold"):
        value = getattr(args, f"autopilot_{key}") or _env(f"AUTOPILOT_{key.upper()}")
        if value:
            parse_duration(value)  # validate
            autopilot[key] = value
    cleanup = args.autopilot_cleanup_dead_servers or _env("AUTOPILOT_CLEANUP_DEAD_SERVERS")
    if cleanup:
        if cleanup not in ("true", "false"):
            raise UsageError("--autopilot-cleanup-dead-servers must be true or false")
        autopilot["cleanup_dead_servers"] = cleanup == "true"
    for key in ("min_quorum", "max_trailing_logs"):
        flag_value = getattr(args, f"autopilot_{key}")
        env_value = number(_env(f"AUTOPILOT_{key.upper()}"), f"{ENV}AUTOPILOT_{key.upper()}")
        value = flag_value if flag_value is not None else env_value
        if value is not None:
            autopilot[key] = value

    rotate = args.rotate_admin_password or _env("ROTATE_ADMIN_PASSWORD", "false")
    if rotate not in ("true", "false"):
        raise UsageError(f"--rotate-admin-password must be true or false, got {rotate!r}")

    plaintext = args.insecure_plaintext_unseal_keys_for_development or _env(
        "INSECURE_PLAINTEXT_UNSEAL_KEYS_FOR_DEVELOPMENT", "false"
    )
    if plaintext not in ("true", "false"):
        raise UsageError(
            f"{ENV}INSECURE_PLAINTEXT_UNSEAL_KEYS_FOR_DEVELOPMENT must be true or false, got {plaintext!r}"
        )

    seal = args.seal or _env("SEAL", "shamir")
    if seal not in ("shamir", "auto"):
        raise UsageError(f"seal must be shamir or auto, got {seal!r}")
    seal_kind: SealKind = "shamir" if seal == "shamir" else "auto"

    def pick_int(flag_value: int | None, env_name: str, default: int) -> int:
        if flag_value is not None:
            return flag_value
        from_env = number(_env(env_name), ENV + env_name)
        return default if from_env is None else from_env

    def pick_float(flag_value: float | None, env_name: str, default: float) -> float:
        if flag_value is not None:
            return flag_value
        raw = _env(env_name)
        try:
            return float(raw) if raw else default
        except ValueError:
            raise UsageError(f"{ENV}{env_name} must be a number, got {raw!r}") from None

    grant_parts = [getattr(args, name) or _env(name.upper()) for name in ("role_binding", "job_name", "job_uid")]
    if any(grant_parts) and not all(grant_parts):
        raise UsageError("--role-binding, --job-name and --job-uid go together")
    job_grant = JobGrant(*[str(part) for part in grant_parts]) if all(grant_parts) else None

    cfg = Config(
        peers=peers,
        ca_file=args.ca_file or _env("CA_FILE"),
        seal=seal_kind,
        key_shares=pick_int(args.key_shares, "KEY_SHARES", 5),
        key_threshold=pick_int(args.key_threshold, "KEY_THRESHOLD", 3),
        pgp_keys=tuple(args.pgp_key or _env_list("PGP_KEYS")),
        root_token_pgp_key=args.root_token_pgp_key or _env("ROOT_TOKEN_PGP_KEY"),
        userpass_path=args.userpass_path or _env("USERPASS_PATH", "userpass-pulumi") or "userpass-pulumi",
        username=args.username or _env("USERNAME", "pulumi") or "pulumi",
        password_file=need(args.password_file or _env("PASSWORD_FILE"), "--password-file"),
        admin_policy_name=args.admin_policy_name or _env("ADMIN_POLICY_NAME", "pulumi-admin") or "pulumi-admin",
        admin_policy_file=need(args.admin_policy_file or _env("ADMIN_POLICY_FILE"), "--admin-policy-file"),
        admin_token_ttl=args.admin_token_ttl or _env("ADMIN_TOKEN_TTL", "20m") or "20m",
        admin_token_max_ttl=args.admin_token_max_ttl or _env("ADMIN_TOKEN_MAX_TTL", "1h") or "1h",
        root_token_file=args.root_token_file or _env("ROOT_TOKEN_FILE"),
        rotate_admin_password=rotate == "true",
        previous_password_file=args.previous_password_file or _env("PREVIOUS_PASSWORD_FILE"),
        job_grant=job_grant,
        plaintext_unseal_keys=plaintext == "true",
        autopilot=autopilot,
        timeout=pick_float(args.timeout, "TIMEOUT", 600.0),
        request_timeout=pick_float(args.request_timeout, "REQUEST_TIMEOUT", 10.0),
        poll_interval=pick_float(args.poll_interval, "POLL_INTERVAL", 0.5),
    )
    cfg.validate()
    given = [
        spec
        for spec in (
            args.state,
            f"file:{args.state_file}" if args.state_file else None,
            f"kubernetes-secret:{args.state_kubernetes_secret}" if args.state_kubernetes_secret else None,
        )
        if spec
    ]
    if len(given) > 1:
        raise UsageError("give only one of --state, --state-file, --state-kubernetes-secret")
    return cfg, need(given[0] if given else _env("STATE"), "--state")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the bootstrap, map failures to one stderr line and an exit code."""
    args = build_parser().parse_args(argv)
    try:
        cfg, state = config_from_args(args)
        run(cfg, store_from_spec(state))
    except PodProgramError as exc:
        print(f"vault-bootstrap: error: {exc}", file=sys.stderr, flush=True)
        return exit_code_of(exc, EXIT_CODES)
    except KeyboardInterrupt:
        print("vault-bootstrap: error: interrupted", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    except Exception as exc:  # one line, never a traceback with request bodies in it
        print(
            f"vault-bootstrap: error: unexpected {type(exc).__name__}: {' '.join(str(exc).split())}",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["EXIT_USAGE", "build_parser", "config_from_args", "main"]
