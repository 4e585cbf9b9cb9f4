"""Evaluates a Kyverno ``ValidatingPolicy`` (policies.kyverno.io) for one admission request, the way
Kyverno 1.19 does, with a real CEL engine (``cel-expr-python``, Google's cel-cpp).

What is followed, and where from (Kyverno v1.19.0 = commit ee97ce09538b09b6f1b03853cc41a62654d6a58f):

* **Compilation** (pkg/cel/policies/vpol/compiler/compiler.go, pkg/cel/compiler/compiler.go): every
  expression is compiled and type-checked up front, a broken policy is an error
  (:class:`PolicyCompileError`); match conditions and validations must be ``bool``, a
  ``messageExpression`` ``string``. ``object``, ``oldObject``, ``request``, ``namespaceObject`` are
  dynamically typed as in Kyverno. A variable may only use variables defined before it.
* **Matching**: ``matchConstraints`` (resourceRules and excludeResourceRules: operations, apiGroups,
  apiVersions, resources with subresources as the API server matches them (``pods`` is not
  ``pods/ephemeralcontainers``), resourceNames, scope; namespaceSelector and objectSelector with
  matchLabels/matchExpressions), then ``matchConditions`` (pkg/cel/policies/vpol/compiler/policy.go,
  ``match``): any false skips the policy; errors with none false skip it under ``failurePolicy:
  Ignore`` and are an error under ``Fail``. ``spec.evaluation.admission.enabled: false`` skips it.
* **Variables** are lazy (``lazy.NewMapValue`` in policy.go): a variable is evaluated, once, only
  when an expression refers to it as ``variables.<name>``. cel-expr-python cannot call back into
  Python while resolving a field, so the referenced names are read from the expression text and
  evaluated before it; a variable whose evaluation fails is left out of the ``variables`` map, so an
  expression that reaches it fails (as in Kyverno) and one that short-circuits past it does not.
* **Validations** (policy.go, ``evaluateWithData``): in order, the first error or ``false`` ends the
  evaluation. The message of a failure is the ``messageExpression``'s value when there is one
  (``"failed to evaluate message expression: ..."`` when it fails), else ``message``, and
  ``"CEL expression validation failed at index <i>"`` when that is empty.
* **The request**: ``request`` is the AdmissionRequest as JSON (pkg/cel/policies/vpol/compiler/eval.go,
  ``prepareK8sData``): ``operation``, ``userInfo.username`` (who asks; :data:`DEFAULT_USER` unless a
  test names another), ``subResource`` only when the request is for one (``omitempty``); for
  ``pods/ephemeralcontainers`` ``object`` and ``oldObject`` are whole Pods.
* **Actions** (pkg/webhooks/resource/vpol/handler.go, ``admissionResponse``): with ``Deny`` in
  ``validationActions`` a failure or an error refuses the request; ``Warn`` returns it as a
  warning; ``Audit`` records it in a report (:attr:`Evaluation.denied`, ``warned``, ``audited``).

**Kyverno's resource library** (https://kyverno.io/docs/policy-types/cel-libraries/, "Resource
library"; implementation github.com/kyverno/sdk extensions/cel/libs/resource, impl.go and lib.go)
is stood in for over an in-memory :class:`Cluster`:

* ``resource.List(apiVersion, resource, namespace)`` and ``resource.List(apiVersion, resource,
  namespace, {labels})`` return the list object the API server would, as a map: ``apiVersion``,
  ``kind: <Kind>List``, ``metadata``, ``items`` (each item with its ``apiVersion`` and ``kind``, as
  an ``UnstructuredList`` holds them). An empty ``namespace`` lists every namespace; the labels map
  is an equality selector (``labels.SelectorFromSet``). Listing a resource the cluster does not
  serve (a missing CRD) is an error, ``"failed to list resource: ..."``, never an empty list.
* ``resource.Get(apiVersion, resource, namespace, name)`` returns the object, ``null`` when it does
  not exist (``apierrors.IsNotFound`` -> ``types.NullValue`` in impl.go), an error for a resource
  the cluster does not serve.
* The camelCase aliases ``resource.list``/``resource.get`` (Kyverno 1.18+) behave the same.

In Kyverno ``resource`` is a variable of an opaque type and ``List``/``Get`` are member functions
on it; cel-expr-python cannot bind a value of an opaque type, so the stand-ins are declared as the
namespaced global functions ``resource.List``/``resource.Get``, which CEL resolves for exactly the
same expression text. ``List`` is declared with Kyverno's result type ``map(string, dyn)``;
``Get`` is declared ``dyn`` because cel-expr-python refuses a ``null`` from a function declared to
return a map (cel-go returns it): so ``resource.Get(...) == null`` type-checks here but not in
Kyverno, where ``type(resource.Get(...)) == type(null)`` is the working form.

**Known differences** from Kyverno's CEL environment (pkg/cel/compiler/env.go): cel-expr-python has
no ``ext.Lists`` (``flatten``, ``sort``...; only ``distinct()`` is stood in for, as cel-go's
ListsVersion 2+ defines it), ``ext.Sets``, two-variable comprehensions
or the Kubernetes libraries (quantity, IP, CIDR, URL, regex, lists ``indexOf``...): a policy using
them fails to compile here, so rules tested with this module avoid them. It does not enforce
Kyverno's ``HomogeneousAggregateLiterals`` (keep list and map literals single-typed) nor rewrite
``orValue`` on a non-optional value (``__orValueCompat__``): such a call is an error here. Types of
``variables.<name>`` are dynamic here but inferred in Kyverno, so a ``dyn``-typed expression that
uses ``variables`` is accepted where a ``bool``/``string`` is required.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext import ext_bindings, ext_encoders, ext_math, ext_optional, ext_strings

__all__ = [
    "DEFAULT_USER",
    "Cluster",
    "CompiledPolicy",
    "Evaluation",
    "LookupFailed",
    "PolicyCompileError",
    "compile_policy",
    "evaluate",
    "evaluate_all",
    "vso_secret",
]

T = cel.Type

#: The resources the stand-in knows: (apiVersion, kind) -> (plural, namespaced).
RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Secret"): ("secrets", True),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "Pod"): ("pods", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("apps/v1", "DaemonSet"): ("daemonsets", True),
    ("apps/v1", "StatefulSet"): ("statefulsets", True),
    ("apps/v1", "ReplicaSet"): ("replicasets", True),
    ("v1", "ReplicationController"): ("replicationcontrollers", True),
    ("batch/v1", "Job"): ("jobs", True),
    ("batch/v1", "CronJob"): ("cronjobs", True),
    ("secrets.hashicorp.com/v1beta1", "VaultStaticSecret"): ("vaultstaticsecrets", True),
}

_VARIABLE_REF = re.compile(r"\bvariables\.([A-Za-z_][A-Za-z0-9_]*)")


class PolicyCompileError(ValueError):
    """The policy would not compile in Kyverno (its status would not be ready)."""


class LookupFailed(RuntimeError):
    """A resource-library call the API server would answer with an error."""


@dataclass
class Cluster:
    """The objects the resource library sees, and the resources the API server serves."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    #: (apiVersion, plural) served; by default every resource in :data:`RESOURCES`.
    served: frozenset[tuple[str, str]] = field(
        default_factory=lambda: frozenset((api, plural) for (api, _), (plural, _) in RESOURCES.items())
    )
    #: Every call made through the resource library, in order: (function, arguments).
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def _kind_of(self, api_version: str, plural: str) -> str:
        for (api, kind), (name, _) in RESOURCES.items():
            if api == api_version and name == plural:
                return kind
        raise LookupFailed(f"the server could not find the requested resource ({api_version}, {plural})")

    def _check_served(self, api_version: str, plural: str) -> str:
        if (api_version, plural) not in self.served:
            raise LookupFailed(f"the server could not find the requested resource ({api_version}, {plural})")
        return self._kind_of(api_version, plural)

    def _select(self, api_version: str, kind: str, namespace: str) -> list[dict[str, Any]]:
        return [
            o
            for o in self.objects
            if o.get("apiVersion") == api_version
            and o.get("kind") == kind
            and (namespace == "" or o.get("metadata", {}).get("namespace") == namespace)
        ]

    def list(
        self, api_version: str, plural: str, namespace: str, labels: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        self.calls.append(("List", (api_version, plural, namespace, dict(labels or {}))))
        try:
            kind = self._check_served(api_version, plural)
        except LookupFailed as exc:
            raise LookupFailed(f"failed to list resource: {exc}") from None
        items = [
            copy.deepcopy(o)
            for o in self._select(api_version, kind, namespace)
            if all(o.get("metadata", {}).get("labels", {}).get(k) == v for k, v in (labels or {}).items())
        ]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return {"apiVersion": api_version, "kind": f"{kind}List", "metadata": {"resourceVersion": "1"}, "items": items}

    def get(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("Get", (api_version, plural, namespace, name)))
        try:
            kind = self._check_served(api_version, plural)
        except LookupFailed as exc:
            raise LookupFailed(f"failed to get resource: {exc}") from None
        found = [o for o in self._select(api_version, kind, namespace) if o["metadata"]["name"] == name]
        return copy.deepcopy(found[0]) if found else None

    def namespace_object(self, name: str) -> dict[str, Any]:
        """The Namespace (its ``kubernetes.io/metadata.name`` label set, as the API server does)."""
        found = [o for o in self.objects if o.get("kind") == "Namespace" and o["metadata"]["name"] == name]
        obj: dict[str, Any] = (
            copy.deepcopy(found[0]) if found else {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        return obj


# --- the CEL environment --------------------------------------------------------------------------


def _distinct(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def _functions(cluster: Cluster) -> list[Any]:
    def list3(api_version: str, plural: str, namespace: str) -> dict[str, Any]:
        return cluster.list(api_version, plural, namespace)

    def list4(api_version: str, plural: str, namespace: str, labels: Mapping[str, str]) -> dict[str, Any]:
        return cluster.list(api_version, plural, namespace, labels)

    def get4(api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return cluster.get(api_version, plural, namespace, name)

    result_map = T.Map(T.STRING, T.DYN)
    decls = [
        # ext.Lists (ListsVersion 3 in Kyverno's env.go): ``<list>.distinct()``, the first occurrence of
        # each element in order (cel-go ext/lists.go; CEL equality, which for the strings it is used
        # on here is Python's).
        cel.FunctionDecl(
            "distinct",
            [cel.Overload("list_distinct", T.List(T.DYN), [T.List(T.DYN)], is_member=True, impl=_distinct)],
        )
    ]
    for name in ("List", "list"):
        decls.append(
            cel.FunctionDecl(
                f"resource.{name}",
                [
                    cel.Overload(
                        f"resource_{name}_string_string_string", result_map, [T.STRING, T.STRING, T.STRING], impl=list3
                    ),
                    cel.Overload(
                        f"resource_{name}_string_string_string_map",
                        result_map,
                        [T.STRING, T.STRING, T.STRING, T.Map(T.STRING, T.STRING)],
                        impl=list4,
                    ),
                ],
            )
        )
    for name in ("Get", "get"):
        decls.append(
            cel.FunctionDecl(
                f"resource.{name}",
                [
                    cel.Overload(
                        f"resource_{name}_string_string_string_string",
                        T.DYN,
                        [T.STRING, T.STRING, T.STRING, T.STRING],
                        impl=get4,
                    )
                ],
            )
        )
    return decls


def _env(cluster: Cluster) -> Any:
    return cel.NewEnv(
        variables={name: T.DYN for name in ("object", "oldObject", "request", "namespaceObject", "variables")},
        extensions=[
            ext_optional.ExtOptional(),
            ext_strings.ExtStrings(),
            ext_bindings.ExtBindings(),
            ext_math.ExtMath(),
            ext_encoders.ExtEncoders(),
        ],
        functions=_functions(cluster),
    )


def _is_error(value: Any) -> bool:
    return bool(value.type() == T.ERROR)


@dataclass(frozen=True)
class _Expr:
    path: str
    source: str
    program: Any
    variables: tuple[str, ...]


@dataclass(frozen=True)
class CompiledPolicy:
    policy: Mapping[str, Any]
    cluster: Cluster
    match_conditions: tuple[tuple[str, _Expr], ...]
    variables: dict[str, _Expr]
    validations: tuple[tuple[_Expr, str, _Expr | None], ...]

    @property
    def spec(self) -> Mapping[str, Any]:
        spec: Mapping[str, Any] = self.policy["spec"]
        return spec


def compile_policy(policy: Mapping[str, Any], cluster: Cluster | None = None) -> CompiledPolicy:
    """Compiles every expression of ``policy`` (raises :class:`PolicyCompileError` as Kyverno would
    refuse it) against ``cluster`` (the resource library's view; empty by default)."""
    if policy.get("apiVersion", "").split("/")[0] != "policies.kyverno.io" or policy.get("kind") != "ValidatingPolicy":
        raise PolicyCompileError(f"not a ValidatingPolicy: {policy.get('apiVersion')} {policy.get('kind')}")
    spec = policy.get("spec", {})
    mode = spec.get("evaluation", {}).get("mode", "Kubernetes")
    if mode != "Kubernetes":
        raise NotImplementedError(f"evaluation mode {mode!r} (only Kubernetes is stood in for)")
    cluster = cluster if cluster is not None else Cluster()
    env = _env(cluster)
    defined: list[str] = []

    def compile_one(path: str, source: str, want: Any | None, may_use_variables: bool = True) -> _Expr:
        refs = tuple(dict.fromkeys(_VARIABLE_REF.findall(source)))
        if refs and not may_use_variables:
            raise PolicyCompileError(f"{path}: variables are not available in match conditions")
        unknown = [r for r in refs if r not in defined]
        if unknown:
            raise PolicyCompileError(
                f"{path}: undefined field(s) {', '.join(unknown)} of variables "
                "(a variable may only use those defined before it)"
            )
        try:
            program = env.compile(source)
        except Exception as exc:
            raise PolicyCompileError(f"{path}: {exc}") from None
        if want is not None:
            out = program.return_type()
            if not (out == want or (out == T.DYN and refs)):
                raise PolicyCompileError(f"{path}: output is expected to be of type {want.name()}, not {out.name()}")
        return _Expr(path, source, program, refs)

    conditions = tuple(
        (c["name"], compile_one(f"spec.matchConditions[{i}].expression", c["expression"], T.BOOL, False))
        for i, c in enumerate(spec.get("matchConditions", []))
    )
    variables: dict[str, _Expr] = {}
    for i, variable in enumerate(spec.get("variables", [])):
        if variable["name"] in variables:
            raise PolicyCompileError(f"spec.variables[{i}]: duplicate variable {variable['name']!r}")
        variables[variable["name"]] = compile_one(f"spec.variables[{i}].expression", variable["expression"], None)
        defined.append(variable["name"])
    validations = []
    for i, rule in enumerate(spec.get("validations", [])):
        expression = compile_one(f"spec.validations[{i}].expression", rule["expression"], T.BOOL)
        message_expression = None
        if rule.get("messageExpression"):
            message_expression = compile_one(
                f"spec.validations[{i}].messageExpression", rule["messageExpression"], T.STRING
            )
        validations.append((expression, rule.get("message", ""), message_expression))
    return CompiledPolicy(policy, cluster, conditions, variables, tuple(validations))


# --- matching ---------------------------------------------------------------------------------------


def _selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for requirement in selector.get("matchExpressions", []):
        key, operator, values = requirement["key"], requirement["operator"], requirement.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def _resource_matches(resources: Iterable[str], plural: str, subresource: str) -> bool:
    """``resources`` of a rule against the request's resource and subresource, as the API server
    matches them (k8s.io/apiserver .../predicates/rules/rules.go, ``Matcher.resource``): ``pods``
    matches the Pod itself and no subresource of it, ``pods/ephemeralcontainers`` only that
    subresource, ``*`` every resource but no subresource, ``*/*`` everything."""
    for entry in resources:
        resource, _, sub = entry.partition("/")
        if (resource in ("*", plural)) and (sub in ("*", subresource)):
            return True
    return False


def _rule_matches(
    rule: Mapping[str, Any],
    operation: str,
    api_version: str,
    plural: str,
    namespaced: bool,
    name: str,
    subresource: str = "",
) -> bool:
    group, _, version = api_version.rpartition("/")

    def has(key: str, value: str) -> bool:
        values = rule.get(key, [])
        return "*" in values or value in values

    scope = rule.get("scope", "*")
    return (
        has("operations", operation)
        and has("apiGroups", group)
        and has("apiVersions", version)
        and _resource_matches(rule.get("resources", []), plural, subresource)
        and (not rule.get("resourceNames") or name in rule["resourceNames"])
        and (scope == "*" or (scope == "Namespaced") == namespaced)
    )


def _constraints_match(
    constraints: Mapping[str, Any],
    operation: str,
    obj: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    namespace_labels: Mapping[str, str],
    subresource: str = "",
) -> bool:
    api_version, kind = obj["apiVersion"], obj["kind"]
    if (api_version, kind) not in RESOURCES:
        raise KeyError(f"the stand-in does not know the resource of {api_version} {kind}")
    plural, namespaced = RESOURCES[(api_version, kind)]
    name = obj["metadata"].get("name", "")
    args = (operation, api_version, plural, namespaced, name, subresource)
    if not any(_rule_matches(r, *args) for r in constraints.get("resourceRules", [])):
        return False
    if any(_rule_matches(r, *args) for r in constraints.get("excludeResourceRules", [])):
        return False
    ns_labels = obj["metadata"].get("labels", {}) if kind == "Namespace" else namespace_labels
    if (namespaced or kind == "Namespace") and not _selector_matches(constraints.get("namespaceSelector"), ns_labels):
        return False
    selector = constraints.get("objectSelector")
    candidates = [o for o in (obj, old) if o is not None]
    return any(_selector_matches(selector, o["metadata"].get("labels", {})) for o in candidates)


# --- evaluation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """The outcome for one request: ``status`` is ``skip`` (not matched), ``pass``, ``fail`` or ``error``."""

    status: str
    message: str
    actions: frozenset[str]
    failed_validation: int | None = None

    @property
    def matched(self) -> bool:
        return self.status != "skip"

    @property
    def passed(self) -> bool:
        return self.status in ("skip", "pass")

    @property
    def denied(self) -> bool:
        return self.status in ("fail", "error") and "Deny" in self.actions

    @property
    def warned(self) -> bool:
        return self.status in ("fail", "error") and "Warn" in self.actions

    @property
    def audited(self) -> bool:
        return self.status in ("fail", "error") and "Audit" in self.actions


#: Who makes a request unless a test says otherwise: an identity that is neither VSO nor a controller.
DEFAULT_USER = "system:serviceaccount:test:pulumi"


def _request(
    operation: str, obj: Mapping[str, Any], namespace: str, subresource: str = "", user: str = DEFAULT_USER
) -> dict[str, Any]:
    """The AdmissionRequest as Kyverno hands it to CEL: the Go struct as JSON (eval.go,
    ``prepareK8sData``), so ``subResource`` is absent unless the request is for one (``omitempty``)."""
    api_version = obj["apiVersion"]
    group, _, version = api_version.rpartition("/")
    plural, _ = RESOURCES[(api_version, obj["kind"])]
    gvk = {"group": group, "version": version, "kind": obj["kind"]}
    gvr = {"group": group, "version": version, "resource": plural}
    subresources = {"subResource": subresource, "requestSubResource": subresource} if subresource else {}
    return {
        "uid": "00000000-0000-0000-0000-000000000000",
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": obj["metadata"].get("name", ""),
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": user},
        "dryRun": False,
        **subresources,
    }


class _Run:
    """One request's evaluation: lazily computed variables, each at most once."""

    def __init__(self, compiled: CompiledPolicy, data: dict[str, Any]) -> None:
        self.compiled = compiled
        self.data = data
        self.values: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    def variable(self, name: str) -> None:
        if name not in self.values and name not in self.errors:
            ok, value = self.eval(self.compiled.variables[name])
            if ok:
                self.values[name] = value
            else:
                self.errors[name] = value

    def eval(self, expr: _Expr) -> tuple[bool, Any]:
        """``(True, value)`` or ``(False, error message)``; an error met through a variable is that
        variable's own error, as Kyverno reports it."""
        for name in expr.variables:
            self.variable(name)
        bound = {n: self.values[n] for n in expr.variables if n in self.values}
        value = expr.program.eval(data={**self.data, "variables": bound})
        if not _is_error(value):
            return True, value.plain_value()
        message = str(value.plain_value())
        for name in expr.variables:
            if name in self.errors and message.endswith(f'Key not found in map : "{name}"'):
                return False, self.errors[name]
        return False, message


def evaluate(
    policy: Mapping[str, Any] | CompiledPolicy,
    obj: Mapping[str, Any],
    cluster: Cluster | None = None,
    operation: str = "CREATE",
    old_object: Mapping[str, Any] | None = None,
    *,
    subresource: str = "",
    user: str = DEFAULT_USER,
) -> Evaluation:
    """What Kyverno decides for ``operation`` on ``obj`` (namespace from ``obj.metadata.namespace``),
    made by ``user`` (``request.userInfo.username``); ``subresource`` for a request on one, e.g. a
    Pod's ``ephemeralcontainers``, whose ``object`` is the whole Pod."""
    compiled = policy if isinstance(policy, CompiledPolicy) else compile_policy(policy, cluster)
    if cluster is not None and compiled.cluster is not cluster:
        compiled = compile_policy(compiled.policy, cluster)
    spec = compiled.spec
    actions = frozenset(spec.get("validationActions", []))
    skip = Evaluation("skip", "", actions)
    if spec.get("evaluation", {}).get("admission", {}).get("enabled", True) is False:
        return skip
    namespace = obj["metadata"].get("namespace", "")
    namespace_object = compiled.cluster.namespace_object(namespace) if namespace else None
    ns_labels = namespace_object["metadata"]["labels"] if namespace_object else {}
    if not _constraints_match(spec.get("matchConstraints", {}), operation, obj, old_object, ns_labels, subresource):
        return skip
    data = {
        "object": copy.deepcopy(dict(obj)),
        "oldObject": copy.deepcopy(dict(old_object)) if old_object else None,
        "request": _request(operation, obj, namespace, subresource, user),
        "namespaceObject": namespace_object,
    }
    run = _Run(compiled, data)
    errors = []
    for name, condition in compiled.match_conditions:
        ok, value = run.eval(condition)
        if not ok:
            errors.append(f"{name}: {value}")
        elif value is False:
            return skip
    if errors:
        if spec.get("failurePolicy", "Fail") == "Ignore":
            return skip
        return Evaluation("error", "; ".join(errors), actions)
    for index, (expression, message, message_expression) in enumerate(compiled.validations):
        ok, value = run.eval(expression)
        if not ok:
            return Evaluation("error", value, actions, index)
        if value is False:
            if message_expression is not None:
                ok, rendered = run.eval(message_expression)
                message = str(rendered) if ok else f"failed to evaluate message expression: {rendered}"
            return Evaluation("fail", message or f"CEL expression validation failed at index {index}", actions, index)
    return Evaluation("pass", "", actions)


def evaluate_all(
    policy: Mapping[str, Any],
    objects: Iterable[Mapping[str, Any]],
    cluster: Cluster,
    operation: str = "CREATE",
    *,
    user: str = DEFAULT_USER,
) -> list[tuple[Mapping[str, Any], Evaluation]]:
    """``evaluate`` for each object, compiling the policy once."""
    compiled = compile_policy(policy, cluster)
    return [(obj, evaluate(compiled, obj, operation=operation, user=user)) for obj in objects]


def vso_secret(static_secret: Mapping[str, Any], uid: str = "vss-uid") -> dict[str, Any]:
    """The Secret VSO 1.4.1 creates for a VaultStaticSecret with ``destination.create: true``: its
    ``destination`` name, type, labels and annotations, plus VSO's owner labels (helpers/secrets.go,
    ``OwnerLabels`` and ``OwnerLabelsForObj``) and an owner reference to the VaultStaticSecret."""
    destination = static_secret["spec"]["destination"]
    labels = {
        **destination.get("labels", {}),
        "app.kubernetes.io/managed-by": "hashicorp-vso",
        "app.kubernetes.io/name": "vault-secrets-operator",
        "app.kubernetes.io/component": "secret-sync",
        "secrets.hashicorp.com/vso-ownerRefUID": uid,
    }
    metadata = {
        "name": destination["name"],
        "namespace": static_secret["metadata"]["namespace"],
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": static_secret["apiVersion"],
                "kind": static_secret["kind"],
                "name": static_secret["metadata"]["name"],
                "uid": uid,
            }
        ],
    }
    if destination.get("annotations"):
        metadata["annotations"] = dict(destination["annotations"])
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": destination.get("type", "Opaque"),
        "data": {},
    }
