"""Stack config: the shipped files parse; every bad config reports every problem by its key."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from config import ConfigError, EdgeConfig, HubConfig, LkeClusterSettings, parse_stack_config
from offline.engine import load_stack_file, run_program

CORPUS = yaml.safe_load((Path(__file__).parent / "config_corpus.yaml").read_text())
NS = "fedobs:"


def shipped(stack: str) -> tuple[dict[str, Any], set[str]]:
    config, secret_keys = load_stack_file(stack)
    raw = {k[len(NS) :]: copy.deepcopy(v) for k, v in config.items() if k.startswith(NS)}
    return raw, {k[len(NS) :] for k in secret_keys if k.startswith(NS)}


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    parts = [int(p) if p.isdigit() else p for p in re.split(r"\.|\[(\d+)\]", path) if p]
    node: Any = tree
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def test_shipped_stacks_parse() -> None:
    hub_raw, hub_secret = shipped("hub")
    hub = parse_stack_config("hub", hub_raw, hub_secret)
    assert isinstance(hub, HubConfig)
    assert [e.name for e in hub.edges] == ["edge-eu", "edge-ap"]
    assert isinstance(hub.cluster, LkeClusterSettings) and hub.cluster.ha_control_plane
    assert hub.cluster.control_plane_acl and hub.cluster.pools[0].autoscaler is not None
    edge_raw, edge_secret = shipped("edge")
    edge = parse_stack_config("edge", edge_raw, edge_secret)
    assert isinstance(edge, EdgeConfig)
    assert edge.hub_stack == "organization/fedobs/hub" and edge.vault.seal.type == "transit"


@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
def test_bad_config_reports_every_problem_by_key(case: dict[str, Any]) -> None:
    raw, secret = shipped(case["base"])
    for path, value in (case.get("set") or {}).items():
        _set(raw, path, value)
    for key in case.get("unset", []):
        raw.pop(key)
    secret -= set(case.get("plain", []))
    secret |= set(case.get("secret", []))
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(case["base"], raw, secret)
    got = [(p.key, p.message) for p in caught.value.problems]
    expected = case["expect"]
    assert len(got) == len(expected), f"expected {expected}, got {got}"
    for (key, fragment), (got_key, got_message) in zip(sorted(expected), sorted(got), strict=True):
        assert got_key == key, got
        assert fragment in got_message, (fragment, got_message)
    message = str(caught.value)
    assert message.startswith(f"invalid config for stack '{case['base']}' ({len(expected)} problem")
    for key, _ in expected:
        assert f"  - {key}: " in message


def test_invalid_config_registers_no_resource() -> None:
    config, secret_keys = load_stack_file("hub")
    config = {**config, "fedobs:vault": {**config["fedobs:vault"], "replicas": 2}, "fedobs:clustr": "x"}
    recording = run_program("hub", config, secret_keys)
    assert recording.error is not None
    assert "fedobs:vault.replicas: replicas must be odd" in str(recording.error)
    assert "fedobs:clustr: unknown key" in str(recording.error)
    assert recording.resources == []
