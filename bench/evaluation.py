"""Program evaluation: the offline engine running the real program for a hub with N edges, beside
the bare import time of the SDKs the program uses.

Both are measured the way ``offline.engine`` runs a program: a child forked from a parent that has
imported the engine (and so ``pulumi`` itself) but none of the provider SDKs, started by
``offline.engine.in_child``. The SDK baseline imports, in such a child, exactly the SDK modules a
run of the 1-edge hub loads (``pulumi*`` packages; their own dependencies come with them). The
harness runs this module in a fresh interpreter (``python -m bench.evaluation --json``) so that
nothing the harness itself imported leaks into the children.

Each repetition measures the baseline and every N side by side; the ratios are taken per
repetition and their median reported.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from offline.engine import in_child, load_stack_file, run_program

#: The modules this interpreter had before any child started (a child reports what it added).
_BEFORE = frozenset(sys.modules)
SHIPPED_EDGES = ("edge-eu", "edge-ap")


def edge_names(count: int) -> list[str]:
    """``count`` edge names: the shipped hub's own first, then ``edge-003``, ``edge-004``, ..."""
    generated = [f"edge-{i:03d}" for i in range(len(SHIPPED_EDGES) + 1, count + 1)]
    return [*SHIPPED_EDGES, *generated][:count]


def hub_config(edges: int) -> tuple[dict[str, Any], list[str]]:
    """``Pulumi.hub.yaml`` as the engine hands it to the program, with ``edges`` edges."""
    config, secret_keys = load_stack_file("hub")
    config = copy.deepcopy(config)
    config["fedobs:edges"] = [{"name": name} for name in edge_names(edges)]
    return config, secret_keys


def _run_and_list_sdk_modules(config: dict[str, Any], secret_keys: list[str]) -> list[str]:
    from offline.engine import _run_in_process

    recording = _run_in_process("hub", config, secret_keys)
    if recording.error is not None:
        raise RuntimeError(f"the hub program failed: {recording.error}")
    return [name for name in sys.modules if name not in _BEFORE and name.split(".")[0].startswith("pulumi")]


def sdk_modules() -> list[str]:
    """The SDK modules one run of the 1-edge hub loads, in the order it loads them."""
    modules: list[str] = in_child(_run_and_list_sdk_modules, *hub_config(1), what="the 1-edge hub")
    return modules


def _import_all(modules: Sequence[str]) -> int:
    for name in modules:
        importlib.import_module(name)
    return len(modules)


def time_sdk_import(modules: Sequence[str]) -> float:
    """Seconds for a child to import ``modules`` (fork to result, as ``time_program``)."""
    started = time.perf_counter()
    in_child(_import_all, list(modules), what="the SDK import")
    return time.perf_counter() - started


def time_program(edges: int) -> tuple[float, int]:
    """Seconds for ``run_program`` on the hub with ``edges`` edges, and the resources it recorded."""
    config, secret_keys = hub_config(edges)
    started = time.perf_counter()
    recording = run_program("hub", config, secret_keys)
    elapsed = time.perf_counter() - started
    if recording.error is not None:
        raise RuntimeError(f"the hub program with {edges} edges failed: {recording.error}")
    return elapsed, len(recording.resources)


def measure(edges: Sequence[int] = (1, 10, 50, 100), reps: int = 5) -> dict[str, Any]:
    """Every repetition: the SDK import, then each N; medians and per-repetition ratios."""
    if 1 not in edges:
        raise ValueError("the 1-edge hub is the reference of both ratios")
    modules = sdk_modules()
    runs: list[dict[str, Any]] = []
    resources: dict[int, int] = {}
    for _ in range(reps):
        run: dict[str, Any] = {"sdk_import": time_sdk_import(modules), "program": {}}
        for n in edges:
            run["program"][n], resources[n] = time_program(n)
        runs.append(run)
    largest = max(edges)
    return {
        "edges": list(edges),
        "reps": reps,
        "sdk_modules": len(modules),
        "sdk_packages": sorted({m.split(".")[0] for m in modules}),
        "resources": resources,
        "sdk_import": statistics.median(r["sdk_import"] for r in runs),
        "program": {n: statistics.median(r["program"][n] for r in runs) for n in edges},
        "largest": largest,
        "ratio_largest_to_1": statistics.median(r["program"][largest] / r["program"][1] for r in runs),
        "ratio_1_to_import": statistics.median(r["program"][1] / r["sdk_import"] for r in runs),
        "runs": runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", default="1,10,50,100", help="hub sizes, comma-separated (must include 1)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document")
    args = parser.parse_args(argv)
    result = measure([int(n) for n in args.edges.split(",")], args.reps)
    if args.json:
        print(json.dumps(result))
    else:
        for n in result["edges"]:
            print(f"{n:4d} edges: {result['resources'][n]:5d} resources, {result['program'][n]:.3f} s")
        print(f"SDK import ({result['sdk_modules']} modules): {result['sdk_import']:.3f} s")
        print(
            f"{result['largest']} edges / 1 edge: {result['ratio_largest_to_1']:.2f}; "
            f"1 edge / SDK import: {result['ratio_1_to_import']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
