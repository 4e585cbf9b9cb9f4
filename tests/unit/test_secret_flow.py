"""docs/secret-flow.md states the worst-case rotation delay the shipped schedules give."""

from __future__ import annotations

import re

import pytest

from components.vso import REFRESH_AFTER
from offline.engine import ROOT, Recording
from offline.secret_flow import cron_max_gap_seconds, worst_case_rotation_delay


def schedule(recording: Recording) -> str:
    cronjob = next(o for o in recording.kubernetes_objects()
                   if o["kind"] == "CronJob" and o["metadata"]["name"] == "cert-sync")
    return str(cronjob["spec"]["schedule"])


def test_doc_states_the_delay_of_the_shipped_config(hub: Recording, edge: Recording) -> None:
    static = next(o for o in edge.kubernetes_objects() if o["kind"] == "VaultStaticSecret")
    assert static["spec"]["refreshAfter"] == REFRESH_AFTER
    delay = worst_case_rotation_delay(schedule(hub), schedule(edge), static["spec"]["refreshAfter"])
    text = (ROOT / "docs" / "secret-flow.md").read_text()
    match = re.search(r"<!-- rotation-delay -->\s*\*\*worst case (\d+) s\*\* \(hub cert-sync (\d+) s \+ edge "
                      r"cert-sync (\d+) s \+ VSO refresh (\d+) s\)", text)
    assert match, "docs/secret-flow.md lost its rotation-delay statement"
    assert [int(g) for g in match.groups()] == [delay.total, delay.hub_sync_gap, delay.edge_sync_gap,
                                                delay.vso_refresh]


@pytest.mark.parametrize(("expression", "gap"), [
    ("* * * * *", 60), ("*/5 * * * *", 300), ("0 * * * *", 3600), ("0,10 * * * *", 3000),
    ("30 2 * * *", 86400), ("*/15 8-17 * * *", 51300),
])
def test_cron_gaps(expression: str, gap: int) -> None:
    assert cron_max_gap_seconds(expression) == gap


def test_day_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="only minute and hour"):
        cron_max_gap_seconds("0 0 1 * *")
