"""The worst-case delay from a certificate renewal on the hub to the edge collector's restart,
computed from the configured schedules (docs/secret-flow.md states it; a test recomputes it).

Each stage waits at most for its next scheduled run after the previous stage finished:

1. cert-manager renews the client certificate (its Secret changes at once);
2. the hub's cert-sync CronJob copies it into the hub Vault: at most one schedule gap later;
3. the edge's cert-sync CronJob pulls it into the edge Vault: at most one schedule gap later;
4. VSO notices the new version at its next refresh (``refreshAfter``) and restarts the collector.

Job run times (seconds, measured by ``make bench``) come on top of the schedule gaps.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


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
class RotationDelay:
    hub_sync_gap: int
    edge_sync_gap: int
    vso_refresh: int

    @property
    def total(self) -> int:
        return self.hub_sync_gap + self.edge_sync_gap + self.vso_refresh


def worst_case_rotation_delay(hub_schedule: str, edge_schedule: str, refresh_after: str) -> RotationDelay:
    return RotationDelay(cron_max_gap_seconds(hub_schedule), cron_max_gap_seconds(edge_schedule),
                         _duration_seconds(refresh_after))
