"""The critical path of ``pulumi up``: the longest chain of resource operations that must happen one
after the other, computed from a recording of the program (``offline.engine``).

The model (docs/performance.md, "Dependency chains") follows what the Python SDK and the engine
wait for. Resource B must be *done* before A can be registered when

1. B is among A's recorded ``dependencies``: explicit ``depends_on`` (a component there is already
   expanded by the SDK into the custom resources below it) and every resource an input Output came
   from. The SDK awaits their URNs and values, which the engine only returns once B's create has
   finished;
2. B is A's ``parent``: the SDK awaits the parent's URN. A component's registration is done at once
   (the engine has nothing to create) but only after *its own* waits, so a component's
   ``depends_on`` holds back every resource below it; a custom parent is done when it is created;
3. B is A's explicit ``provider``: a provider reference needs the provider's URN and ID, so the
   provider (a custom resource configured from, e.g., the cluster's kubeconfig) is created first.

A custom resource is one step of the chain (its create), a component none, and neither is a
provider resource (``pulumi:providers:*``): it is waited for like any other, but the engine only
configures its plugin in-process; ``Chain.providers`` counts the ones on the chain. The longest chain is
the longest path in this graph, counted in steps; :func:`longest_chain` returns it with the
resources on it, first to last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from offline.engine import RecordedResource, Recording

__all__ = ["PROVIDER_TYPE_PREFIX", "Chain", "Node", "longest_chain", "nodes_of", "render_chain"]

#: Provider resources are waited for but are no step: the engine "creates" one by configuring its
#: plugin in-process (the Vault provider logs in once); nothing is created through any API.
PROVIDER_TYPE_PREFIX = "pulumi:providers:"


@dataclass(frozen=True)
class Node:
    """One resource in the wait graph: ``waits_for`` are the URNs that must be done before it,
    ``why`` says for each of them which rule applies (``input or dependsOn``, ``parent``, ``provider``)."""

    urn: str
    type: str
    name: str
    custom: bool
    waits_for: tuple[str, ...]
    why: tuple[tuple[str, str], ...] = ()

    def reason(self, upstream: str) -> str:
        return ", ".join(r for u, r in self.why if u == upstream)

    @property
    def steps(self) -> int:
        return 1 if self.custom and not self.type.startswith(PROVIDER_TYPE_PREFIX) else 0


@dataclass(frozen=True)
class Chain:
    """A longest chain: its length in steps and the resources on it (components included), first to last."""

    steps: int
    nodes: tuple[Node, ...]

    @property
    def providers(self) -> int:
        """Provider resources on the chain (waited for, no step)."""
        return sum(1 for n in self.nodes if n.type.startswith(PROVIDER_TYPE_PREFIX))


def _provider_urn(reference: str) -> str:
    """``<urn>::<id>`` (how a provider reference is sent) -> the provider's URN."""
    return reference.rsplit("::", 1)[0] if reference else ""


def nodes_of(resources: Iterable[RecordedResource]) -> dict[str, Node]:
    """The wait graph of recorded resources (waits on resources outside the recording are dropped:
    the stack resource, default providers)."""
    recorded = list(resources)
    known = {r.urn for r in recorded}
    nodes: dict[str, Node] = {}
    for r in recorded:
        why = [(d, "input or dependsOn") for d in r.dependencies]
        why += [(r.parent, "parent"), (_provider_urn(r.provider), "provider")]
        why = [(u, reason) for u, reason in why if u and u in known and u != r.urn]
        nodes[r.urn] = Node(
            r.urn, r.type, r.name, r.custom, tuple(sorted({u for u, _ in why})), tuple(sorted(set(why)))
        )
    return nodes


def longest_chain(nodes: Mapping[str, Node]) -> Chain:
    """The longest path through ``nodes`` in steps (ties: the one first in URN order).
    ``ValueError`` if the graph has a cycle (the engine would deadlock)."""
    best: dict[str, tuple[int, tuple[str, ...]]] = {}
    visiting: set[str] = set()

    def visit(urn: str) -> tuple[int, tuple[str, ...]]:
        if urn in best:
            return best[urn]
        if urn in visiting:
            raise ValueError(f"dependency cycle through {urn}")
        visiting.add(urn)
        node = nodes[urn]
        longest: tuple[int, tuple[str, ...]] = (0, ())
        for upstream in node.waits_for:
            candidate = visit(upstream)
            if candidate[0] > longest[0]:
                longest = candidate
        visiting.discard(urn)
        best[urn] = (longest[0] + node.steps, (*longest[1], urn))
        return best[urn]

    result: tuple[int, tuple[str, ...]] = (0, ())
    for urn in sorted(nodes):
        candidate = visit(urn)
        if candidate[0] > result[0]:
            result = candidate
    return Chain(result[0], tuple(nodes[u] for u in result[1]))


def recording_chain(recording: Recording) -> Chain:
    return longest_chain(nodes_of(recording.resources))


def render_chain(chain: Chain) -> list[str]:
    """One line per resource on the chain: its step number (custom resources), type, name and why it
    waits for the one before it."""
    lines = []
    step = 0
    previous: Node | None = None
    for node in chain.nodes:
        why = f"  <- {node.reason(previous.urn)}" if previous is not None else ""
        if node.custom and node.steps:
            step += 1
            lines.append(f"{step:2d}. {node.type} {node.name}{why}")
        elif node.custom:
            lines.append(f"    ({node.type} {node.name}: a provider, waited for, no step){why}")
        else:
            lines.append(f"    (component {node.type} {node.name}){why}")
        previous = node
    return lines
