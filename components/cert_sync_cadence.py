"""How often cert-sync runs inside the minute: the passes of one CronJob run (pure, no Pulumi).

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
#: (``refreshAfter`` 60 s, then a rollout restart) and each edge through its cert-sync and VSO
#: (worst case 80 s with the shipped cadence, then a rollout restart: docs/secret-flow.md); five
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
