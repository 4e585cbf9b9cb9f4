"""The worst-case delay from a certificate renewal on the hub to the edge collector's restart,
computed from what the stacks render (docs/secret-flow.md states it; a test recomputes it, and
``make bench`` adds the measured sync run times).

The stages, each waiting for the one before it:

1. cert-manager renews the client certificate (its Secret changes at once);
2. the hub's cert-sync CronJob copies it into the hub Vault;
3. the edge's cert-sync follower (a Deployment) sees the new KV version at its next poll and pulls
   it into the edge Vault;
4. VSO notices the new version at its next refresh (``refreshAfter``) and restarts the collector.

When the renewed certificate comes from a CA new to the trust bundle (a CA rotation), stage 2 holds
it back for the trust lead first (:func:`ca_change_delay`).

The hub's stage is a CronJob whose every run makes ``passes`` sync passes, ``interval`` seconds
apart (``programs.cert_sync --passes --interval``; one pass when the flags are absent). Its pass
starts are ``interval`` apart inside a run, and ``cron gap - (passes - 1) * interval`` apart across
two runs, so the longest wait between two pass starts (:attr:`Cadence.max_gap`) is the larger of
the two: with passes that cover the minute of an every-minute schedule it is the interval itself.
A change that lands just after a pass read its source is missed by that pass; the next pass starts
at most ``max_gap`` later and has written the change ``run`` seconds after its start, so a stage
adds at most ``max_gap + run`` (``run``: one pass's run time, measured by ``make bench``). The edge's
stage is a follower polling every ``--poll`` seconds (:class:`Poll`): a change that lands just after
a poll read the version waits one poll, so it adds at most ``poll + run`` (``run``: one poll that
applies a change). The figure up to the edge Vault is :attr:`RotationDelay.to_edge_vault` (the
two-minute target); VSO adds at most ``refreshAfter``; the rollout restart is triggered in the
same reconcile.
Not modelled: the jitter of the CronJob controller and of container start-up between two runs
(a run that starts late shortens the gap before it by as much as it lengthens the one after it).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def _field_values(field: str, low: int, high: int) -> list[int]:
    values: set[int] = set()
    for part in field.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            start, end = (int(x) for x in part.split("-", 1))
        else:
            start = end = int(part)
        if not low <= start <= end <= high or step < 1:
            raise ValueError(f"cron field {field!r} is out of range {low}-{high}")
        values.update(range(start, end + 1, step))
    return sorted(values)


def cron_max_gap_seconds(expression: str) -> int:
    """The longest wait between two runs of a cron schedule (minute and hour fields; the day
    fields must be ``*``, which is what fedobs schedules use)."""
    minute, hour, day, month, weekday = expression.split()
    if (day, month, weekday) != ("*", "*", "*"):
        raise ValueError(f"schedule {expression!r}: only minute and hour fields may be restricted")
    times = [h * 60 + m for h in _field_values(hour, 0, 23) for m in _field_values(minute, 0, 59)]
    gaps = [b - a for a, b in itertools.pairwise(times)] + [times[0] + 24 * 60 - times[-1]]
    return max(gaps) * 60


def _duration_seconds(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return int(float(text[:-1]) * units[text[-1]])


@dataclass(frozen=True)
class Cadence:
    """When one cert-sync stage syncs: its CronJob schedule and the passes of each run."""

    schedule: str
    passes: int = 1
    interval: int = 0

    def __post_init__(self) -> None:
        if self.passes < 1 or (self.passes > 1 and self.interval <= 0):
            raise ValueError(f"{self.passes} passes every {self.interval} s is not a cadence")

    @property
    def max_gap(self) -> int:
        """The longest wait between the starts of two consecutive passes, in seconds."""
        across_runs = cron_max_gap_seconds(self.schedule) - (self.passes - 1) * self.interval
        return max(self.interval, across_runs) if self.passes > 1 else across_runs


@dataclass(frozen=True)
class Poll:
    """When a follower syncs: every ``seconds`` (``programs.cert_sync follow --poll``)."""

    seconds: int

    @property
    def max_gap(self) -> int:
        return self.seconds


def workload_cadence(obj: Mapping[str, Any]) -> Cadence | Poll:
    """The cadence of a rendered cert-sync workload: a CronJob's (:func:`cronjob_cadence`) or a
    follower Deployment's ``--poll``."""
    if obj["kind"] == "CronJob":
        return cronjob_cadence(obj["spec"])
    command = list(obj["spec"]["template"]["spec"]["containers"][0]["command"])
    return Poll(int(float(command[command.index("--poll") + 1])))


def cronjob_cadence(spec: Mapping[str, Any]) -> Cadence:
    """The cadence of a rendered cert-sync CronJob ``spec``: its schedule and the ``--passes`` and
    ``--interval`` of its container's command (one pass when absent)."""
    command = list(spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"])

    def flag(name: str, default: str) -> str:
        return command[command.index(name) + 1] if name in command else default

    return Cadence(str(spec["schedule"]), int(flag("--passes", "1")), int(float(flag("--interval", "0"))))


@dataclass(frozen=True)
class RotationDelay:
    """The worst case, by stage (seconds); the run times are 0 unless measured ones are given."""

    hub_sync_gap: int
    edge_sync_gap: int
    vso_refresh: int
    hub_sync_run: float = 0.0
    edge_sync_run: float = 0.0

    @property
    def schedule_total(self) -> int:
        """What the schedules alone give: the two stage gaps and the VSO refresh."""
        return self.hub_sync_gap + self.edge_sync_gap + self.vso_refresh

    @property
    def total(self) -> float:
        """The schedules plus the two measured pass run times."""
        return self.schedule_total + self.hub_sync_run + self.edge_sync_run

    @property
    def to_edge_vault(self) -> float:
        """Until the edge Vault holds the renewed certificate: the two cert-sync stages, VSO excluded."""
        return self.total - self.vso_refresh


def worst_case_rotation_delay(
    hub: Cadence | Poll | str,
    edge: Cadence | Poll | str,
    refresh_after: str,
    hub_sync_run: float = 0.0,
    edge_sync_run: float = 0.0,
) -> RotationDelay:
    """The worst case for these cadences (a bare schedule: one pass per run) and VSO refresh."""
    hub_cadence = Cadence(hub) if isinstance(hub, str) else hub
    edge_cadence = Cadence(edge) if isinstance(edge, str) else edge
    return RotationDelay(
        hub_cadence.max_gap, edge_cadence.max_gap, _duration_seconds(refresh_after), hub_sync_run, edge_sync_run
    )


def ca_change_delay(delay: RotationDelay, trust_lead: int) -> float:
    """The worst case when the renewed certificate comes from a CA new to the trust bundle its peer
    verifies it with (``programs.cert_sync.trust``): the first hub pass after the renewal writes the
    bundle and holds the certificate back; the first hub pass at least ``trust_lead`` seconds later
    publishes it (at most one hub gap after the lead), and the edge stages follow as for any renewal."""
    return delay.total + trust_lead + delay.hub_sync_gap + delay.hub_sync_run
