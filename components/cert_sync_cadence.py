"""How often cert-sync syncs (pure, no Pulumi): the passes of one run of the hub's CronJob, and the
poll and hub credential lifetimes of an edge's follower (at the end of this module).

A CronJob runs at most once a minute. To carry a renewed certificate faster, each run makes several
sync passes (``programs.cert_sync --passes N --interval I``): pass k starts ``k * I`` seconds into
the run, so with ``I`` dividing 60 the passes of consecutive every-minute runs are ``I`` seconds
apart. The Job is stopped ``JOB_DEADLINE_SECONDS`` after it started, before the next scheduled run:
with ``concurrencyPolicy: Forbid`` a Job still running at the next schedule would make the
CronJob skip that run (a two-minute gap), not wait for it. The last pass starts ``60 - I`` seconds
into the run and keeps at least ``LAST_PASS_ROOM_SECONDS`` before that deadline for the container's
start latency and the pass itself (about a second, measured by ``make bench``). Hence an interval
must divide 60 and be at least ``MIN_INTERVAL_SECONDS``: 20 (three passes), 30 (two) or 60 (one).

``DistributionSettings`` validates ``fedobs:distribution.certSyncInterval`` as :data:`CertSyncInterval`,
``components.cert_sync`` renders the Job with :func:`passes_per_run` and the deadline, and
``offline.secret_flow`` reads the passes back from the rendered CronJob.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

#: Seconds after a run's Job started when Kubernetes stops it (``activeDeadlineSeconds``): it must
#: be over before the next run of an every-minute schedule.
JOB_DEADLINE_SECONDS = 55
#: The least time the last pass of a run keeps before the deadline (container start + one pass).
LAST_PASS_ROOM_SECONDS = 15
#: The shortest interval whose last pass (at ``60 - interval`` s) keeps that room.
MIN_INTERVAL_SECONDS = 60 - JOB_DEADLINE_SECONDS + LAST_PASS_ROOM_SECONDS
#: How long the hub's cert-sync holds back a certificate whose CA is new to the trust bundle its
#: peers verify it with (``--trust-lead``): the bundle reaches the gateway through the hub's VSO
#: (``refreshAfter`` 60 s, then a rollout restart) and each edge through its follower and VSO
#: (worst case 135 s with the shipped 75 s poll, then a rollout restart: docs/secret-flow.md); five
#: minutes leave room for the restarts, and cost nothing against the 8 h a renewed client
#: certificate still has left.
TRUST_LEAD_SECONDS = 300
#: The intervals that pass all rules, for messages and docs.
VALID_INTERVALS = tuple(i for i in range(MIN_INTERVAL_SECONDS, 61) if 60 % i == 0)


def interval_problem(interval: int) -> str | None:
    """Why ``interval`` (seconds between passes) cannot be used, or ``None`` if it can."""
    if interval < 1 or interval > 60:
        return f"{interval} is not between 1 and 60 seconds"
    if 60 % interval:
        return (
            f"{interval} does not divide 60, so the passes would not cover the minute evenly "
            f"(use one of {', '.join(map(str, VALID_INTERVALS))})"
        )
    if interval < MIN_INTERVAL_SECONDS:
        return (
            f"{interval} leaves the last pass (at {60 - interval} s) less than {LAST_PASS_ROOM_SECONDS} s "
            f"before the Job's {JOB_DEADLINE_SECONDS} s deadline "
            f"(use one of {', '.join(map(str, VALID_INTERVALS))})"
        )
    return None


def _valid_interval(interval: int) -> int:
    problem = interval_problem(interval)
    if problem:
        raise ValueError(problem)
    return interval


#: The config type of ``fedobs:distribution.certSyncInterval``: an interval that passes every rule above.
CertSyncInterval = Annotated[int, AfterValidator(_valid_interval)]


def passes_per_run(interval: int) -> int:
    """The passes of one run: every ``interval`` seconds through the minute (60: one pass)."""
    problem = interval_problem(interval)
    if problem:
        raise ValueError(f"cert-sync interval: {problem}")
    return 60 // interval


# ---------------------------------------------------------------------------------------------
# the edge's follower (programs/cert_sync/follow.py): its poll and its hub credential's lifetimes
# ---------------------------------------------------------------------------------------------
#: Seconds between two polls of the hub by an edge's cert-sync follower. Each poll is one hub request
#: (the KV metadata version) when nothing changed, so an edge costs the hub 60/75 = 0.8 requests a
#: minute plus one login and one revoke per token (``EDGE_TOKEN_TTL_SECONDS``): 0.9 a minute, under
#: the 1 a minute target (issue 21). A renewed certificate reaches the edge Vault at most one hub
#: gap (20 s) + one hub pass + one poll (75 s) + one poll's run after it changes: about 97 s, inside
#: the 2 minutes (measured end to end by ``make bench``, bench/certsync.py).
FOLLOW_POLL_SECONDS = 75
#: The edge AppRole's token TTL (and max TTL: never renewed, a new login replaces it, which costs the
#: same one request as a renewal and needs no ``renew-self`` grant). 20 minutes: long enough that a
#: login and a revoke per token add 2 x 60 / (1200 - 60) = 0.105 requests a minute to the 0.8 of
#: the polls (a 10-minute token would add 0.22: over the target); short enough that a token taken
#: from the pod is worth 20 minutes at most, with the use count below.
EDGE_TOKEN_TTL_SECONDS = 1200
EDGE_TOKEN_MAX_TTL_SECONDS = EDGE_TOKEN_TTL_SECONDS
#: Uses per token: the polls of one token's life ((1200 - 60) / 75 = 15 metadata reads, and up to 15
#: data reads when every poll saw a change), the secret_id work of one rotation (lookup, create,
#: list, destroy: up to 5) and the revoke; the follower logs in again before fewer than
#: ``programs.cert_sync.follow.USES_RESERVE`` (8) are left.
EDGE_TOKEN_NUM_USES = 40
#: The edge AppRole's secret_id TTL: 30 days. The follower replaces its secret_id at 2/3 of it (day
#: 20), so a secret_id taken from an edge is useless after 30 days, and a stopped edge has 10 days
#: after a missed rotation before it needs a new ``pulumi up`` (docs/secret-flow.md).
EDGE_SECRET_ID_TTL_SECONDS = 30 * 24 * 3600
