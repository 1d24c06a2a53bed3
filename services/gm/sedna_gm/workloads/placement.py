"""Which node runs a worker: ``nodeName``, ``nodeSelector`` and node affinity.

A worker's pod template places it the way a Pod is placed on Kubernetes:

- ``nodeName``: on that node, no questions asked (upstream Sedna's only way);
- ``nodeSelector``: every ``key: value`` must be a label of the node;
- ``affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms``:
  the terms are ORed, the requirements inside a term (``matchExpressions`` and
  ``matchFields``) are ANDed, an empty term matches no node. Operators ``In``, ``NotIn``,
  ``Exists``, ``DoesNotExist``, ``Gt`` and ``Lt``; ``NotIn`` and ``DoesNotExist`` match a
  node without the label, ``Gt``/``Lt`` compare integers and never match a missing or
  non-integer label. ``matchFields`` supports ``metadata.name`` with ``In``/``NotIn``;
- ``preferredDuringSchedulingIgnoredDuringExecution``: a node scores the summed ``weight``
  (1-100) of the preference terms it matches.

The nodeSelector and the required affinity must both hold. On Kubernetes the scheduler
applies them (the template reaches the API server unchanged, tolerations included) and
:func:`pod_nodes` reads back where a worker's pods were bound; the local runtime applies them
itself with :func:`choose_node` (its nodes have no taints, so tolerations do not matter;
pod affinity is not evaluated). Feature controllers find the nodes their workers run on,
e.g. to send a worker's Dataset there, with :func:`worker_nodes`.

:meth:`NodePlacement.from_pod_spec` validates the fields like the API server does and raises
:class:`PlacementError` naming the field path (``template.spec.nodeSelector.gpu: ...``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sedna.resources.worker import WorkerPhaseName
from sedna_gm.workloads.port import WorkerStatus, WorkloadError

__all__ = [
    "HOSTNAME_LABEL",
    "NODE_NAME_FIELD",
    "NodeCandidate",
    "NodePlacement",
    "NodeSelectorTerm",
    "Operator",
    "PlacementError",
    "PreferredTerm",
    "Requirement",
    "choose_node",
    "label_key_problem",
    "label_value_problem",
    "pod_nodes",
    "unschedulable_message",
    "worker_nodes",
]

HOSTNAME_LABEL = "kubernetes.io/hostname"
"""The well-known label every node carries, set to the node's name."""

NODE_NAME_FIELD = "metadata.name"
"""The only ``matchFields`` key Kubernetes supports."""

_MAX_NODES_IN_MESSAGE = 10
_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
_PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"


class PlacementError(WorkloadError):
    """A ``nodeSelector`` or node affinity is malformed; the message names the field path."""


class Operator(StrEnum):
    """Node selector requirement operators (Kubernetes ``NodeSelectorOperator``)."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"
    GT = "Gt"
    LT = "Lt"


# --------------------------------------------------------------------------- validation


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label key (``[prefix/]name``), or None when it is."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)):
        return "the prefix before '/' must be a DNS subdomain (lowercase, e.g. example.com)"
    if not name or len(name) > 63 or not _NAME_RE.match(name):
        return (
            "the name must be 1-63 characters: letters, digits, '-', '_' or '.', starting and "
            "ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a valid label value, or None when it is (empty is valid)."""
    if value and (len(value) > 63 or not _NAME_RE.match(value)):
        return (
            "a label value must be at most 63 characters: letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


def _yaml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _string(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        text = _yaml_text(value)
        raise PlacementError(f'{where}: {text} is not a string (quote it: "{text}")')
    raise PlacementError(f"{where}: must be a string")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PlacementError(f"{where}: must be a mapping")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PlacementError(f"{where}: must be a list")
    return value


def _label_key(raw: Any, where: str) -> str:
    key = _string(raw, where)
    problem = label_key_problem(key)
    if problem:
        raise PlacementError(f"{where}: {key!r} is not a valid label key: {problem}")
    return key


# --------------------------------------------------------------------------- requirements


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` (or ``matchFields``) entry.

    Attributes
    ----------
    key
        The label key (``metadata.name`` for a field requirement).
    operator
        How the label's value is compared with ``values``.
    values
        The operand: one or more for In/NotIn, none for Exists/DoesNotExist, one integer for
        Gt/Lt.
    """

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a node with ``labels`` satisfies the requirement."""
        value = labels.get(self.key)
        op = self.operator
        if op is Operator.IN:
            return value is not None and value in self.values
        if op is Operator.NOT_IN:
            return value is None or value not in self.values
        if op is Operator.EXISTS:
            return value is not None
        if op is Operator.DOES_NOT_EXIST:
            return value is None
        number = _integer(value)
        if number is None:
            return False
        bound = int(self.values[0])
        return number > bound if op is Operator.GT else number < bound

    def mismatch(self, labels: Mapping[str, str]) -> str:
        """Why a node with ``labels`` fails the requirement, in a few words."""
        value = labels.get(self.key)
        if value is None:
            return f"no {self.key} label"
        if self.operator in (Operator.GT, Operator.LT) and _integer(value) is None:
            return f"{self.key}={value}, not an integer"
        return f"{self.key}={value}"

    def __str__(self) -> str:
        if self.operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
            return f"{self.key} {self.operator}"
        if self.operator in (Operator.GT, Operator.LT):
            return f"{self.key} {self.operator} {self.values[0]}"
        return f"{self.key} {self.operator} ({', '.join(self.values)})"

    @classmethod
    def parse(cls, raw: Any, where: str, *, field_requirement: bool = False) -> Requirement:
        """Validate one requirement (``where`` is its field path).

        Raises
        ------
        PlacementError
            A missing or bad key, operator or values.
        """
        body = _mapping(raw, where)
        if "key" not in body:
            raise PlacementError(f"{where}.key: Required value")
        if field_requirement:
            key = _string(body["key"], f"{where}.key")
            if key != NODE_NAME_FIELD:
                raise PlacementError(
                    f"{where}.key: {key!r} is not supported; matchFields supports "
                    f"{NODE_NAME_FIELD!r} only"
                )
        else:
            key = _label_key(body["key"], f"{where}.key")
        raw_op = _string(body.get("operator", ""), f"{where}.operator")
        allowed = (Operator.IN, Operator.NOT_IN) if field_requirement else tuple(Operator)
        try:
            op = Operator(raw_op)
        except ValueError:
            op = None
        if op is None or op not in allowed:
            names = ", ".join(o.value for o in allowed)
            shown = repr(raw_op) if raw_op else "an empty operator"
            raise PlacementError(f"{where}.operator: {shown} is not one of {names}")
        items = _list(body.get("values"), f"{where}.values")
        values = tuple(_string(v, f"{where}.values[{i}]") for i, v in enumerate(items))
        if op in (Operator.IN, Operator.NOT_IN):
            if not values:
                raise PlacementError(f"{where}.values: must be non-empty for operator {op}")
            if field_requirement and len(values) != 1:
                raise PlacementError(f"{where}.values: matchFields takes exactly one value")
        elif op in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
            if values:
                raise PlacementError(f"{where}.values: must be empty for operator {op}")
        else:
            if len(values) != 1:
                raise PlacementError(f"{where}.values: operator {op} takes exactly one value")
            if _integer(values[0]) is None:
                raise PlacementError(
                    f"{where}.values[0]: {values[0]!r} is not an integer (operator {op})"
                )
        return cls(key, op, values)


def _integer(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


@dataclass(frozen=True)
class NodeSelectorTerm:
    """One ``nodeSelectorTerms`` entry: its requirements are ANDed; an empty one matches none.

    Attributes
    ----------
    expressions
        ``matchExpressions`` on node labels.
    fields
        ``matchFields`` on the node's ``metadata.name``.
    """

    expressions: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the term has no requirement (it matches no node)."""
        return not self.expressions and not self.fields

    def matches(self, node: str, labels: Mapping[str, str]) -> bool:
        """Whether node ``node`` with ``labels`` satisfies every requirement."""
        if self.empty:
            return False
        name = {NODE_NAME_FIELD: node}
        return all(r.matches(labels) for r in self.expressions) and all(
            r.matches(name) for r in self.fields
        )

    def mismatches(self, node: str, labels: Mapping[str, str]) -> list[str]:
        """Why the node fails the term (one entry per failed requirement)."""
        if self.empty:
            return ["empty term"]
        name = {NODE_NAME_FIELD: node}
        return [r.mismatch(labels) for r in self.expressions if not r.matches(labels)] + [
            f"name {node}" for r in self.fields if not r.matches(name)
        ]

    def __str__(self) -> str:
        parts = [str(r) for r in self.expressions]
        parts += [f"name {r.operator} ({', '.join(r.values)})" for r in self.fields]
        return " and ".join(parts) if parts else "<empty term>"

    @classmethod
    def parse(cls, raw: Any, where: str) -> NodeSelectorTerm:
        """Validate one term (``where`` is its field path).

        Raises
        ------
        PlacementError
            A malformed term or requirement.
        """
        body = _mapping(raw, where)
        expressions = _list(body.get("matchExpressions"), f"{where}.matchExpressions")
        fields = _list(body.get("matchFields"), f"{where}.matchFields")
        return cls(
            tuple(
                Requirement.parse(r, f"{where}.matchExpressions[{i}]")
                for i, r in enumerate(expressions)
            ),
            tuple(
                Requirement.parse(r, f"{where}.matchFields[{i}]", field_requirement=True)
                for i, r in enumerate(fields)
            ),
        )


@dataclass(frozen=True)
class PreferredTerm:
    """One ``preferredDuringSchedulingIgnoredDuringExecution`` entry."""

    weight: int
    term: NodeSelectorTerm


@dataclass(frozen=True)
class NodePlacement:
    """Where a pod template asks its worker to run (see the module docstring).

    Attributes
    ----------
    node_name
        ``spec.nodeName``: that node, constraints unchecked ("" when unset).
    node_selector
        ``spec.nodeSelector``.
    required
        The required node affinity terms (ORed); None when the template has none.
    preferred
        The preferred node affinity terms.
    """

    node_name: str = ""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    required: tuple[NodeSelectorTerm, ...] | None = None
    preferred: tuple[PreferredTerm, ...] = ()

    @property
    def constrained(self) -> bool:
        """True when a nodeSelector or required affinity limits the nodes."""
        return bool(self.node_selector) or self.required is not None

    def matches(self, node: str, labels: Mapping[str, str]) -> bool:
        """Whether node ``node`` with ``labels`` may run the worker (nodeName not considered)."""
        if any(labels.get(k) != v for k, v in self.node_selector.items()):
            return False
        return self.required is None or any(t.matches(node, labels) for t in self.required)

    def score(self, node: str, labels: Mapping[str, str]) -> int:
        """Summed weight of the preferred terms the node matches."""
        return sum(p.weight for p in self.preferred if p.term.matches(node, labels))

    def why_not(self, node: str, labels: Mapping[str, str]) -> str:
        """Why the node does not match, in a few words ("" when it matches)."""
        wrong = [
            f"no {k} label" if labels.get(k) is None else f"{k}={labels[k]}"
            for k, v in self.node_selector.items()
            if labels.get(k) != v
        ]
        if wrong:
            return ", ".join(wrong)
        if self.required is None or any(t.matches(node, labels) for t in self.required):
            return ""
        if len(self.required) == 1:
            return ", ".join(self.required[0].mismatches(node, labels))
        return "; ".join(
            f"term {i + 1}: {', '.join(t.mismatches(node, labels))}"
            for i, t in enumerate(self.required)
        )

    def describe(self) -> str:
        """The constraints in words (``nodeSelector {gpu: true}``, ``required node affinity``)."""
        parts = []
        if self.node_selector:
            pairs = ", ".join(f"{k}: {v}" for k, v in self.node_selector.items())
            parts.append(f"nodeSelector {{{pairs}}}")
        if self.required is not None:
            terms = " or ".join(f"[{t}]" for t in self.required)
            parts.append(f"required node affinity {terms}")
        return " and ".join(parts) or "no constraint"

    @classmethod
    def from_pod_spec(cls, pod_spec: Mapping[str, Any], path: str = "spec") -> NodePlacement:
        """Read and validate the placement fields of a pod spec.

        Parameters
        ----------
        pod_spec
            The pod spec (``template.spec``).
        path
            Its field path, for error messages (e.g. ``spec.edgeWorker.template.spec``).

        Raises
        ------
        PlacementError
            A field is malformed; the message names it.
        """
        node_name = pod_spec.get("nodeName") or ""
        if not isinstance(node_name, str):
            raise PlacementError(f"{path}.nodeName: must be a string")
        selector: dict[str, str] = {}
        for key, value in _mapping(pod_spec.get("nodeSelector"), f"{path}.nodeSelector").items():
            where = f"{path}.nodeSelector.{key}"
            _label_key(key, f"{path}.nodeSelector")
            text = _string(value, where)
            problem = label_value_problem(text)
            if problem:
                raise PlacementError(f"{where}: {text!r} is not a valid label value: {problem}")
            selector[key] = text
        affinity_path = f"{path}.affinity.nodeAffinity"
        affinity = _mapping(pod_spec.get("affinity"), f"{path}.affinity")
        node_affinity = _mapping(affinity.get("nodeAffinity"), affinity_path)
        required: tuple[NodeSelectorTerm, ...] | None = None
        if node_affinity.get(_REQUIRED) is not None:
            req_path = f"{affinity_path}.{_REQUIRED}"
            body = _mapping(node_affinity[_REQUIRED], req_path)
            terms = _list(body.get("nodeSelectorTerms"), f"{req_path}.nodeSelectorTerms")
            if not terms:
                raise PlacementError(
                    f"{req_path}.nodeSelectorTerms: Required value: must have at least one "
                    "node selector term"
                )
            required = tuple(
                NodeSelectorTerm.parse(t, f"{req_path}.nodeSelectorTerms[{i}]")
                for i, t in enumerate(terms)
            )
        preferred: list[PreferredTerm] = []
        pref_path = f"{affinity_path}.{_PREFERRED}"
        for i, item in enumerate(_list(node_affinity.get(_PREFERRED), pref_path)):
            where = f"{pref_path}[{i}]"
            body = _mapping(item, where)
            weight = body.get("weight")
            if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 100:
                raise PlacementError(f"{where}.weight: must be an integer in 1-100")
            if body.get("preference") is None:
                raise PlacementError(f"{where}.preference: Required value")
            term = NodeSelectorTerm.parse(body["preference"], f"{where}.preference")
            preferred.append(PreferredTerm(weight, term))
        return cls(node_name, selector, required, tuple(preferred))


# --------------------------------------------------------------------------- choosing


@dataclass(frozen=True)
class NodeCandidate:
    """A node the local runtime may place a worker on.

    Attributes
    ----------
    name
        The node name.
    labels
        Its labels (include :data:`HOSTNAME_LABEL`).
    connected
        Whether its LocalController is connected now.
    workers
        How many unfinished workers it already runs.
    """

    name: str
    labels: Mapping[str, str]
    connected: bool = True
    workers: int = 0


def choose_node(
    placement: NodePlacement, candidates: Iterable[NodeCandidate], *, current: str = ""
) -> str | None:
    """The best matching node, or None when none matches.

    Ranked by: connected first, then the highest preferred-affinity score, then ``current``
    (the node the worker ran on before a spec change: no needless move), then the fewest
    workers, then the name, so the choice is deterministic.
    """
    fits = [c for c in candidates if placement.matches(c.name, c.labels)]
    if not fits:
        return None

    def rank(c: NodeCandidate) -> tuple[bool, int, bool, int, str]:
        score = placement.score(c.name, c.labels)
        return (not c.connected, -score, c.name != current, c.workers, c.name)

    return min(fits, key=rank).name


def unschedulable_message(placement: NodePlacement, candidates: Sequence[NodeCandidate]) -> str:
    """Why no node fits, e.g. ``no node matches nodeSelector {gpu: true}: nodes cloud
    (gpu=false), edge-1 (no gpu label)``."""
    head = f"no node matches {placement.describe()}"
    if not candidates:
        return f"{head}: no node has connected to the GlobalManager yet"
    ordered = sorted(candidates, key=lambda c: c.name)
    shown = [
        f"{c.name} ({placement.why_not(c.name, c.labels)})" for c in ordered[:_MAX_NODES_IN_MESSAGE]
    ]
    more = len(ordered) - _MAX_NODES_IN_MESSAGE
    tail = f" and {more} more" if more > 0 else ""
    noun = "node" if len(ordered) == 1 else "nodes"
    return f"{head}: {noun} {', '.join(shown)}{tail}"


# --------------------------------------------------------------------------- resolving


def _selected(labels: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_nodes(pods: Iterable[Mapping[str, Any]], selector: Mapping[str, str]) -> tuple[str, ...]:
    """The nodes the live pods matching ``selector`` are bound to (sorted, unique).

    A pod counts once the scheduler bound it (``spec.nodeName``) and while it is neither
    finished (``Succeeded``/``Failed``) nor being deleted. ``selector`` is a Deployment's
    ``spec.selector.matchLabels``; an empty selector selects nothing.
    """
    if not selector:
        return ()
    finished = {WorkerPhaseName.SUCCEEDED.value, WorkerPhaseName.FAILED.value}
    nodes = set()
    for pod in pods:
        meta = pod.get("metadata") or {}
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or meta.get("deletionTimestamp") is not None:
            continue
        if (pod.get("status") or {}).get("phase") in finished:
            continue
        if _selected(meta.get("labels") or {}, selector):
            nodes.add(str(node))
    return tuple(sorted(nodes))


def worker_nodes(
    workers: Iterable[WorkerStatus],
    *,
    worker_type: str | None = None,
    include: Callable[[WorkerStatus], bool] | None = None,
) -> tuple[str, ...]:
    """The nodes that run ``workers`` (sorted, unique): where node-local objects must go.

    Feature controllers call it on :meth:`WorkloadRuntime.list_workers` results to send the
    objects a worker needs on its node (e.g. the Dataset of a training worker): a Pod's
    node once the scheduler bound it, every replica's node of a Deployment, the node the
    local runtime chose. Unscheduled and deleting workers are skipped.

    Parameters
    ----------
    workers
        Worker statuses.
    worker_type
        Only workers of this type (case-insensitive), e.g. ``train``.
    include
        Extra filter.
    """
    nodes: set[str] = set()
    for status in workers:
        if status.deleting:
            continue
        if worker_type is not None and status.worker_type != worker_type.lower():
            continue
        if include is not None and not include(status):
            continue
        nodes.update(status.nodes)
    return tuple(sorted(nodes))
