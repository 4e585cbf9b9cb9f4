"""The offline plan: run the real program for a stack with no credentials and no network.

    python -m offline.plan --stack hub            # or: make plan STACK=hub
    python -m offline.plan --stack edge --out build/plan

Prints the resource tree (type, name, key inputs; secrets redacted) and writes every Kubernetes
object the stack would create as YAML under ``<out>/<stack>/``. An edge stack's reference to
its hub is fed with the outputs of the hub's own offline plan (``Pulumi.hub.yaml``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from offline.engine import ROOT, Recording, load_stack_file, run_program, walk_tree

REDACTED = "[secret]"
#: Inputs shown in the tree, per resource type prefix (the rest is in the YAML files).
KEY_INPUTS: dict[str, tuple[str, ...]] = {
    "linode:index/lkeCluster": ("label", "region", "k8sVersion", "controlPlane", "pools", "tags"),
    "kubernetes:helm.sh/v3:Release": ("chart", "version", "namespace", "repositoryOpts"),
    "kubernetes:": ("metadata.namespace", "metadata.name"),
    "pulumi:pulumi:StackReference": ("name",),
    "pulumi:providers:": ("context",),
    "vault:": ("path", "name", "type", "backend", "role_name", "roleName"),
}


def _redact(value: Any, path: str, secret_paths: set[str]) -> Any:
    if path in secret_paths:
        return REDACTED
    if isinstance(value, dict):
        return {k: _redact(v, f"{path}.{k}" if path else k, secret_paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, f"{path}.{i}" if path else str(i), secret_paths) for i, v in enumerate(value)]
    return value


def _key_inputs(resource_type: str, inputs: dict[str, Any], secret_paths: set[str]) -> dict[str, Any]:
    for prefix, keys in KEY_INPUTS.items():
        if resource_type.startswith(prefix):
            shown = {}
            for key in keys:
                node: Any = inputs
                for part in key.split("."):
                    node = node.get(part) if isinstance(node, dict) else None
                if node not in (None, "", [], {}):
                    shown[key] = _redact(node, key, secret_paths)
            return shown
    return {}


def hub_outputs_for_edges(out: Path | None = None) -> dict[str, Any]:
    """The hub's stack outputs, as the offline plan of the shipped hub config produces them."""
    recording = plan_stack("hub", out=out)
    if recording.error is not None:
        raise SystemExit(f"the hub plan failed, so edges cannot be planned: {recording.error}")
    return recording.outputs


def plan_stack(stack: str, out: Path | None = None, config_dir: Path = ROOT) -> Recording:
    config, secret_keys = load_stack_file(stack, config_dir)
    references: dict[str, dict[str, Any]] = {}
    hub_stack = config.get("fedobs:hubStack")
    if isinstance(hub_stack, str):
        references[hub_stack] = hub_outputs_for_edges()
    recording = run_program(stack, config, secret_keys, references)
    if out is not None and recording.error is None:
        write_objects(recording, out / stack)
    return recording


def write_objects(recording: Recording, folder: Path) -> list[Path]:
    """Every Kubernetes object (and Helm values block) as YAML, secrets redacted."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    written = []
    for resource in recording.resources:
        if not resource.type.startswith("kubernetes:") or not resource.custom:
            continue
        document = _redact(resource.inputs, "", resource.secret_inputs)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{resource.type.split(':')[-1]}-{resource.name}")
        path = folder / f"{safe}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        written.append(path)
    return written


def render_tree(recording: Recording) -> str:
    lines = [f"stack {recording.stack}: {len(recording.resources)} resources"]
    for depth, resource in walk_tree(recording):
        flags = " [protected]" if resource.protect else ""
        lines.append(f"{'  ' * (depth + 1)}{resource.type}  {resource.name}{flags}")
        for key, value in _key_inputs(resource.type, resource.inputs, resource.secret_inputs).items():
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            lines.append(f"{'  ' * (depth + 3)}{key}: {text}")
    lines.append("outputs:")
    for key, value in sorted(recording.outputs.items()):
        shown = REDACTED if key in recording.secret_outputs else value
        text = shown if isinstance(shown, str) else json.dumps(shown, sort_keys=True)
        if len(text) > 100:
            text = text[:97] + "..."
        lines.append(f"  {key}: {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", required=True, help="stack name: Pulumi.<stack>.yaml must exist")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "plan", help="folder for the YAML objects")
    parser.add_argument("--config-dir", type=Path, default=ROOT, help="where Pulumi.<stack>.yaml is")
    args = parser.parse_args(argv)
    if not (args.config_dir / f"Pulumi.{args.stack}.yaml").exists():
        print(f"plan: no Pulumi.{args.stack}.yaml in {args.config_dir}", file=sys.stderr)
        return 2
    recording = plan_stack(args.stack, out=args.out, config_dir=args.config_dir)
    if recording.error is not None:
        print(f"plan: the program failed for stack '{args.stack}':\n{recording.error}", file=sys.stderr)
        return 1
    print(render_tree(recording))
    print(f"\nKubernetes objects written to {args.out / args.stack}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
