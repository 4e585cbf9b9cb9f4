"""Shared fixtures: the shipped hub and edge stacks run once per session under mocks."""

from __future__ import annotations

import pytest

from offline.engine import Recording, run_stack_file


@pytest.fixture(scope="session")
def hub() -> Recording:
    recording = run_stack_file("hub")
    assert recording.error is None, recording.error
    return recording


@pytest.fixture(scope="session")
def edge(hub: Recording) -> Recording:
    recording = run_stack_file("edge", {"organization/fedobs/hub": hub.outputs})
    assert recording.error is None, recording.error
    return recording
