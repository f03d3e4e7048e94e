"""Fingerprints that address a cell of the result store.

A cell is one hypothesis scrubbed with one seed against one baseline, on one model, dataset,
metric, engine setting and set of reference rows, by one version of `scrub`. Each part gets a
stable content hash here; `cell_key` hashes them together. Hashes depend on contents only (never
on object identity, memory addresses or the order Python happens to keep things in), so two
processes, or two machines, that scrub the same thing compute the same key.
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from scrub.data import Dataset, Feature
from scrub.hypothesis import Hypothesis
from scrub.metrics import Metric

__all__ = [
    "scrub_version",
    "tensor_digest",
    "model_fingerprint",
    "dataset_fingerprint",
    "hypothesis_fingerprint",
    "metric_fingerprint",
    "cell_key",
]


def scrub_version() -> str:
    """The running scrub's version (``scrub.__version__``; read from the loaded package, which is
    always imported before this module, so no upward import is needed)."""
    return str(getattr(sys.modules.get("scrub"), "__version__", "unknown"))


def _sha(*parts: bytes) -> "hashlib._Hash":
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest


def tensor_digest(tensor: Tensor) -> str:
    """Hash of a tensor's dtype, shape and bytes."""
    t = tensor.detach().cpu().contiguous()
    head = f"{t.dtype}|{tuple(t.shape)}".encode()
    body = t.reshape(-1).view(torch.uint8).numpy().tobytes()  # every dtype, bfloat16 included
    return _sha(head, body).hexdigest()[:32]


def model_fingerprint(model) -> str:
    """A hash of the model's parameters and buffers, by name, with their dtypes (order-stable).

    Hashes every byte of the weights: for a large model this costs a pass over its memory (seconds
    per GB), which is small next to a scrub of it."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor_digest(tensor).encode())
    return digest.hexdigest()[:32]


def dataset_fingerprint(data: Dataset) -> str:
    """A hash of the dataset's tokens, targets, loss mask and extras (by name), with shapes and dtypes."""
    parts = [tensor_digest(data.tokens), tensor_digest(data.targets), tensor_digest(data.loss_mask)]
    parts += [f"{k}={tensor_digest(v)}" for k, v in sorted(data.extras.items())]
    return _sha(*(p.encode() for p in parts)).hexdigest()[:32]


def _code_digest(code: types.CodeType) -> str:
    """Bytecode, names and constants of a function's code (nested code objects recursively)."""
    consts = [(_code_digest(c) if isinstance(c, types.CodeType) else repr(c)) for c in code.co_consts]
    return _sha(code.co_code, repr(code.co_names).encode(), repr(consts).encode()).hexdigest()


def _value_digest(value: Any) -> str:
    if isinstance(value, Tensor):
        return tensor_digest(value)
    if isinstance(value, (types.FunctionType, types.MethodType)):
        return _function_digest(value)
    if isinstance(value, (int, float, str, bytes, bool, type(None))):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value_digest(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k!r}:{_value_digest(v)}" for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))) + "}"
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _function_digest(fn: Any) -> str:
    """A callable's definition: its code, and the values its closure and defaults hold."""
    fn = getattr(fn, "__func__", fn)
    code = getattr(fn, "__code__", None)
    if code is None:  # a callable object: its type stands for its definition
        return f"{type(fn).__module__}.{type(fn).__qualname__}"
    cells = [c.cell_contents for c in (fn.__closure__ or ()) if _has_contents(c)]
    defaults = list(fn.__defaults__ or ())
    return _sha(_code_digest(code).encode(), _value_digest(cells).encode(), _value_digest(defaults).encode()).hexdigest()[:32]


def _has_contents(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def _feature_part(feature: Optional[Feature], values: Optional[Mapping[int, Tensor]]) -> list:
    if feature is None:
        return [None]
    if feature.exact:
        return [feature.name, "exact"]
    if values is not None and id(feature) in values:
        return [feature.name, "values", tensor_digest(values[id(feature)])]
    return [feature.name, "code", _function_digest(feature.fn)]


def hypothesis_fingerprint(h: Hypothesis, feature_values: Optional[Mapping[int, Tensor]] = None) -> str:
    """A content hash of the claim graph: every claim (component, feature, whether its inputs are
    scrubbed) in creation order, and every edge (child, parent, port, positions) in insertion
    order, which fixes the sampling order, and the recorded model shape if any (it decides which
    claims treeify as leaves, so it changes the draws). Names of the hypothesis and its claims are
    labels and do not count.

    A feature counts by its name and its definition: with ``feature_values`` (``id(feature) ->
    class ids`` on the dataset the cell is scrubbed on) by the classes it makes there, which is
    exactly what sampling reads; otherwise by its function's code and captured values.
    """
    index = {c: i for i, c in enumerate(h.claims)}
    claims = [[type(c.component).__name__, str(c.component), bool(c.scrub_inputs), *_feature_part(c.feature, feature_values)]
              for c in h.claims]
    edges = sorted(h.edges, key=lambda e: e.seq)
    links = [[index[e.child], index[e.parent], e.port, None if e.positions is None else list(e.positions)] for e in edges]
    parts = {"claims": claims, "edges": links}
    if h.shape is not None:  # a recorded shape collapses complete claims: another random stream
        parts["shape"] = repr(h.shape)
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def metric_fingerprint(metric: Metric) -> str:
    """A hash of a metric's settings and its function's definition."""
    fields = [metric.name, metric.lower_is_better, metric.needs_clean, metric.reads, metric.targets,
              metric.weighting, metric.output_index, list(metric.extras), _function_digest(metric.fn)]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:32]


def cell_key(parts: Mapping[str, Any]) -> str:
    """The address of a cell: the hash of all its parts (a JSON-ready mapping)."""
    return hashlib.sha256(json.dumps(dict(parts), sort_keys=True).encode()).hexdigest()[:40]
