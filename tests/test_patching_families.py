"""Patching on every HuggingFace family against an oracle of plain PyTorch module hooks.

`scrub.patching.activation_patch` runs on the model view (two stored passes, then every cell
continued from its patched point). The oracle here never touches the view: per cell it runs the
HuggingFace model itself (float32, eager attention) with one forward (pre-)hook writing the
source run's value into the base run, and reads the logit difference at the last position:

* a head's output: its slice of the input of the attention's output projection (``c_proj``,
  ``dense``, ``out_proj``, ``o_proj``), which is linear, so replacing the slice replaces exactly
  ``z_h @ W_O[h]``; in Gemma-2 the post-attention norm then re-normalises the patched sum;
* a head's q, k or v: its slice of the projection's output (the fused ``c_attn`` /
  ``query_key_value`` laid out as the family lays it out). Where several query heads share one
  key/value head (grouped- and multi-query attention) the projection's slice is shared, so the
  oracle takes two forwards: one with the shared slice patched, reading head ``h``'s values at the
  output projection, one writing those values into head ``h``'s slice only;
* an MLP's output: the MLP module's output (before Gemma-2's post-feed-forward norm: a
  per-position map, so patching before or after it is the same at any set of positions);
* the residual stream a layer reads: the decoder layer's input.

Path patching's oracle takes three hooked forwards per sender (`Oracle.path`); attribution
patching's takes autograd through the HuggingFace model at zero-valued taps added by hooks
(`Oracle.first_order`). Module paths are written out below for each family, independently of
`scrub.model.hf_modules`. Gemma-2 (post-norms) and the parallel blocks of GPT-NeoX and GPT-J are
where a sweep that adds a head's change straight to the stream, or resumes a layer as a
sequential one, goes wrong.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from scrub import MLP, Head
from scrub.data import Dataset
from scrub.patching import activation_patch, attribution_patch, path_patch
from scrub.patching.sites import KINDS, Site

from families import FAMILIES, make_hf_model

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

N_ROWS, N_POS = 4, 7
TOL = dict(rtol=1e-4, atol=1e-4)


# ---- the oracle: module paths per family, and hooks ---------------------------------------------


def _paths(model: nn.Module) -> dict[str, Any]:
    """The decoder layers and, per layer, how to reach the attention's projections and the MLP."""
    t = model.config.model_type
    if t == "gpt2":
        return dict(layers=model.transformer.h, attn="attn", q=("c_attn", "blocks"), k=("c_attn", "blocks"),
                    v=("c_attn", "blocks"), out="c_proj", mlp="mlp")
    if t == "gpt_neox":
        fused = ("query_key_value", "per_head")
        return dict(layers=model.gpt_neox.layers, attn="attention", q=fused, k=fused, v=fused, out="dense", mlp="mlp")
    if t == "gptj":
        return dict(layers=model.transformer.h, attn="attn", q=("q_proj", None), k=("k_proj", None),
                    v=("v_proj", None), out="out_proj", mlp="mlp")
    if t in ("llama", "mistral", "qwen2", "gemma", "gemma2"):
        return dict(layers=model.model.layers, attn="self_attn", q=("q_proj", None), k=("k_proj", None),
                    v=("v_proj", None), out="o_proj", mlp="mlp")
    raise AssertionError(f"no oracle paths for {t}")


class Oracle:
    """One hooked HuggingFace forward per patched cell, never the model view."""

    def __init__(self, model: nn.Module) -> None:
        c = model.config
        self.model = model
        self.p = _paths(model)
        self.n_heads = c.num_attention_heads
        self.n_kv = getattr(c, "num_key_value_heads", None) or self.n_heads
        self.d_head = getattr(c, "head_dim", None) or c.hidden_size // self.n_heads
        self.mlp_written = False
        self._frozen: dict = {}  # capture_all per base run

    def _attn(self, layer: int) -> nn.Module:
        return getattr(self.p["layers"][layer], self.p["attn"])

    def _port(self, kind: str, layer: int) -> tuple[nn.Module, Callable[[int], slice]]:
        """The module whose output holds ``kind`` (q, k, v) and the feature slice of a (kv-)head."""
        name, layout = self.p[kind]
        e, n = self.d_head, self.n_heads
        index = "qkv".index(kind)
        if layout == "blocks":  # [q | k | v], each n_heads * e wide
            where = lambda h: slice(index * n * e + h * e, index * n * e + (h + 1) * e)  # noqa: E731
        elif layout == "per_head":  # per head [q_h | k_h | v_h]
            where = lambda h: slice(h * 3 * e + index * e, h * 3 * e + (index + 1) * e)  # noqa: E731
        else:
            where = lambda h: slice(h * e, (h + 1) * e)  # noqa: E731
        return getattr(self._attn(layer), name), where

    def _out_proj(self, layer: int) -> nn.Module:
        return getattr(self._attn(layer), self.p["out"])

    def _site_module(self, site: Site) -> tuple[nn.Module, bool, Callable[[int], slice] | None]:
        """(module, pre-hook?, feature slice per head) where ``site`` lives. An MLP's output is
        taken after Gemma-2's post-feed-forward norm when ``self.mlp_written`` (what the MLP adds
        to the residual stream: first-order estimates differ before and after a norm)."""
        if site.kind == "head":
            return self._out_proj(site.layer), True, lambda h: slice(h * self.d_head, (h + 1) * self.d_head)
        if site.kind in ("q", "k", "v"):
            module, where = self._port(site.kind, site.layer)
            return module, False, where
        if site.kind == "mlp":
            layer = self.p["layers"][site.layer]
            post = getattr(layer, "post_feedforward_layernorm", None)
            return (post if self.mlp_written and post is not None else getattr(layer, self.p["mlp"])), False, None
        return self.p["layers"][site.layer], True, None

    @torch.no_grad()
    def _run(self, tokens: Tensor, hooks: list[tuple[nn.Module, bool, Callable]]) -> Tensor:
        handles = []
        for module, pre, fn in hooks:
            if pre:
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(fn))
        try:
            return self.model(input_ids=tokens).logits.float()  # [n, p, v]
        finally:
            for handle in handles:
                handle.remove()

    @staticmethod
    def _pre_writer(write: Callable[[Tensor], Tensor]) -> Callable:
        """A pre-hook replacing the module's first input (positional or ``hidden_states=``)."""

        def hook(module, args, kwargs):
            if args:
                return (write(args[0]), *args[1:]), kwargs
            key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
            return args, {**kwargs, key: write(kwargs[key])}

        return hook

    @staticmethod
    def _pre_reader(store: dict, key: Any) -> Callable:
        def hook(module, args, kwargs):
            store[key] = (args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values())))).clone()

        return hook

    def capture(self, tokens: Tensor, sites: list[Site]) -> dict:
        """The value at each site's module in an unpatched run of ``tokens`` (plus each head
        site's output-projection input, for the two-step key/value patch)."""
        store: dict = {}
        hooks = []
        for site in {s.at(None) for s in sites}:
            module, pre, _ = self._site_module(site)
            key = (site.kind, site.layer)
            if pre:
                hooks.append((module, True, self._pre_reader(store, key)))
            else:
                hooks.append((module, False, lambda m, a, out, key=key: store.__setitem__(key, out.clone())))
        self._run(tokens, hooks)
        return store

    def _patch_hook(self, site: Site, source: Tensor, feature: Optional[slice]) -> tuple[nn.Module, bool, Callable]:
        module, pre, _ = self._site_module(site)
        pos = slice(None) if site.position is None else site.position

        def write(value: Tensor) -> Tensor:
            value = value.clone()
            if feature is None:
                value[:, pos] = source[:, pos]
            else:
                value[:, pos, feature] = source[:, pos, feature]
            return value

        if pre:
            return module, True, self._pre_writer(write)
        return module, False, lambda m, a, out: write(out)

    def patched_logits(self, base: Tensor, source: dict, site: Site) -> Tensor:
        """The base run's logits with ``site`` taking its value from the source run."""
        _, _, where = self._site_module(site)
        key = (site.kind, site.layer)
        if site.kind in ("q", "k", "v") and self.n_kv != self.n_heads and site.kind != "q":
            # a shared key/value head: patch it for the whole group, read head h's values at the
            # output projection, then write only those into the base run
            group = site.head // (self.n_heads // self.n_kv)
            read: dict = {}
            first = [self._patch_hook(site, source[key], where(group)),
                     (self._out_proj(site.layer), True, self._pre_reader(read, "z"))]
            self._run(base, first)
            h = slice(site.head * self.d_head, (site.head + 1) * self.d_head)
            head = Site("head", site.layer, site.head, None)
            return self._run(base, [self._patch_hook(head, read["z"], h)])
        feature = None if site.head is None else where(site.head)
        return self._run(base, [self._patch_hook(site, source[key], feature)])


    def first_order(self, base: Tensor, data: Dataset, sites: list[Site], source: dict) -> Tensor:
        """Per cell, the base run's metric plus ``(a_source - a_base) . d metric / d a`` (the
        gradient by autograd through the HuggingFace model, taken at zero-valued taps added by
        hooks at each site's module), averaged over rows: attribution patching's estimate."""
        base_values = self.capture(base, sites)
        taps: dict = {}

        def tapped(key):
            def add(x: Tensor) -> Tensor:
                taps[key] = torch.zeros_like(x, requires_grad=True)
                return x + taps[key]
            return add

        hooks = []
        for site in {s.at(None) for s in sites}:
            module, pre, _ = self._site_module(site)
            add = tapped((site.kind, site.layer))
            hooks.append((module, True, self._pre_writer(add)) if pre else (module, False, lambda m, a, out, add=add: add(out)))
        handles = [m.register_forward_pre_hook(fn, with_kwargs=True) if pre else m.register_forward_hook(fn) for m, pre, fn in hooks]
        try:
            with torch.enable_grad():
                logits = self.model(input_ids=base).logits.float()  # [n, p, v]
                metric = logit_diff_last(logits, data)  # [n]
                grads = dict(zip(taps, torch.autograd.grad(metric.sum(), list(taps.values()))))
        finally:
            for handle in handles:
                handle.remove()
        out = []
        for site in sites:
            key = (site.kind, site.layer)
            product = (source[key] - base_values[key]) * grads[key]  # [n, p, features]
            if site.position is not None:
                product = product[:, site.position : site.position + 1]
            if site.head is not None:
                product = product[..., self._site_module(site)[2](site.head)]
            out.append(float((metric.detach() + product.double().sum((1, 2))).mean()))
        return torch.tensor(out, dtype=torch.float64)


    def _final_norm(self) -> nn.Module:
        m, t = self.model, self.model.config.model_type
        if t in ("gpt2", "gptj"):
            return m.transformer.ln_f
        if t == "gpt_neox":
            return m.gpt_neox.final_layer_norm
        return m.model.norm

    def capture_all(self, tokens: Tensor) -> dict:
        """Every layer's heads' values (the output projection's input), MLP output, and the
        final norm's input, in an unpatched run of ``tokens``."""
        n_layers = len(self.p["layers"])
        store = self.capture(tokens, [Site(k, layer) for layer in range(n_layers) for k in ("head", "mlp")])
        self._run(tokens, [(self._final_norm(), True, self._pre_reader(store, "final"))])
        return store

    def path(self, base: Tensor, source: dict, sender: Site, receivers: list) -> Tensor:
        """The base run's logits with ``sender`` acting only through ``receivers`` (``(Head, port)``,
        ``(MLP, "in")``, ``"logits"``), in three hooked forwards:

        A. the base run with the sender patched and every other head's values (the output
           projections' inputs) and every MLP's output frozen at the base run's: each receiver's
           port input is then the base one plus the sender's direct change; record the receivers'
           q/k/v projections, MLP outputs (frozen after reading) and the final norm's input;
        B. the base run with every output frozen again, the receivers' named projections set to
           A's: record each receiver head's values (its other ports read the base run);
        C. the base run with the receivers' values / outputs set, and the sender's change to the
           final stream added where ``"logits"`` receives it; everything else recomputed.
        """
        key = (base.data_ptr(), tuple(base.shape))
        if key not in self._frozen:
            self._frozen[key] = self.capture_all(base)
        frozen = self._frozen[key]
        n_layers = len(self.p["layers"])
        receivers = [("logits", "") if r == "logits" else r for r in receivers]
        heads = [(c, port) for c, port in receivers if isinstance(c, Head)]
        mlps = [c.layer for c, _ in receivers if c != "logits" and not isinstance(c, Head)]
        rec: dict = {}

        def freeze_out(layer: int, keep=None) -> Callable:
            def hook(module, args, kwargs):
                value = frozen[("head", layer)].clone()
                if keep is not None:
                    value[..., keep] = source[("head", layer)][..., keep]
                return self._pre_writer(lambda x: value)(module, args, kwargs)
            return hook

        def mlp_hook(layer: int, record: bool, value=None) -> Callable:
            def hook(module, args, out):
                if record:
                    rec[("mlp", layer)] = out.clone()
                return frozen[("mlp", layer)] if value is None else value
            return hook

        def out_reader(layer: int) -> Callable:
            def hook(module, args, kwargs):
                rec[("z", layer)] = (args[0] if args else kwargs["hidden_states"]).clone()
                return freeze_out(layer)(module, args, kwargs)
            return hook

        def port_reader(kind: str, layer: int) -> Callable:
            return lambda m, a, out: rec.__setitem__((kind, layer), out.clone())

        # A
        run = []
        for layer in range(n_layers):
            keep = None
            if sender.kind == "head" and sender.layer == layer:
                keep = self._site_module(sender)[2](sender.head)
            run.append((self._out_proj(layer), True, freeze_out(layer, keep)))
            module = self._site_module(Site("mlp", layer))[0]
            if sender.kind == "mlp" and sender.layer == layer:  # a receiver MLP does not receive itself
                run.append((module, False, mlp_hook(layer, False, source[("mlp", layer)])))
                if layer in mlps:
                    rec[("mlp", layer)] = frozen[("mlp", layer)]
            else:
                run.append((module, False, mlp_hook(layer, layer in mlps)))
        for c, port in heads:
            run.append((self._port(port, c.layer)[0], False, port_reader(port, c.layer)))
        run.append((self._final_norm(), True, self._pre_reader(rec, "final")))
        self._run(base, run)
        # B, once per receiver head (grouped-query heads share their k/v projection slices)
        values = {}
        for head in dict.fromkeys(c for c, _ in heads):
            run = [(self._site_module(Site("mlp", layer))[0], False, mlp_hook(layer, False)) for layer in range(n_layers)]
            run += [(self._out_proj(layer), True, out_reader(layer)) for layer in range(n_layers)]
            for port in [p for c, p in heads if c == head]:
                where = self._port(port, head.layer)[1]
                feature = where(head.head // (self.n_heads // self.n_kv) if port != "q" else head.head)
                run.append(self._patch_hook(Site(port, head.layer, head.head), rec[(port, head.layer)], feature))
            self._run(base, run)
            values[head] = rec[("z", head.layer)]
        # C
        run = []
        for head, z in values.items():
            z_slice = self._site_module(Site("head", head.layer, head.head))[2](head.head)
            run.append(self._patch_hook(Site("head", head.layer, head.head), z, z_slice))
        for layer in mlps:
            run.append((self._site_module(Site("mlp", layer))[0], False, lambda m, a, out, v=rec[("mlp", layer)]: v))
        if "logits" in [c for c, _ in receivers]:
            delta = rec["final"] - frozen["final"]
            run.append((self._final_norm(), True, self._pre_writer(lambda x: x + delta)))
        return self._run(base, run)


def logit_diff_last(logits: Tensor, data: Dataset) -> Tensor:
    """``logit[target] - logit[wrong]`` at the last position, per row (float64)."""
    last = logits[:, -1].double()  # [n, v]
    right = last.gather(-1, data.targets[:, -1, None])[:, 0]
    wrong = last.gather(-1, data.extras["wrong_target"][:, None])[:, 0]
    return right - wrong


def oracle_sweep(model: nn.Module, data: Dataset, corrupt: Tensor, sites: list[Site], direction: str):
    """Per cell the oracle's mean metric; and the clean and corrupted runs' means."""
    oracle = Oracle(model)
    base, source = (corrupt, data.tokens) if direction == "denoise" else (data.tokens, corrupt)
    captured = oracle.capture(source, sites)
    clean = float(logit_diff_last(oracle._run(data.tokens, []), data).mean())
    corr = float(logit_diff_last(oracle._run(corrupt, []), data).mean())
    patched = [float(logit_diff_last(oracle.patched_logits(base, captured, s), data).mean()) for s in sites]
    return torch.tensor(patched, dtype=torch.float64), clean, corr


def make_data(vocab: int, n: int = N_ROWS, n_pos: int = N_POS, seed: int = 0) -> tuple[Dataset, Tensor]:
    """Random clean rows (one answer and one wrong answer at the last position) and corrupted rows."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n, n_pos), generator=g)
    corrupt = torch.randint(0, vocab, (n, n_pos), generator=g)
    targets = torch.full_like(tokens, -1)
    targets[:, -1] = torch.randint(0, vocab, (n,), generator=g)
    wrong = (targets[:, -1] + 1 + torch.randint(0, vocab - 1, (n,), generator=g)) % vocab
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, -1] = True
    data = Dataset(tokens=tokens, targets=targets, loss_mask=mask, name="families", extras={"wrong_target": wrong})
    return data, corrupt


def check(model, data, corrupt, components, direction, positions):
    result = activation_patch(model, data, components, direction=direction, corrupt=corrupt,
                              metric="logit_diff", positions=positions)
    want, clean, corr = oracle_sweep(model, data, corrupt, list(result.sites), direction)
    assert result.clean == pytest.approx(clean, rel=1e-4, abs=1e-4)
    assert result.corrupt == pytest.approx(corr, rel=1e-4, abs=1e-4)
    bad = [(str(s), float(a), float(b)) for s, a, b in zip(result.sites, result.patched, want)
           if not torch.isclose(a, b, **TOL)]
    assert not bad, f"{len(bad)} of {len(want)} cells differ (site, sweep, oracle): {bad[:6]}"
    # the sweep is not trivially the base run: some cell moves the metric
    assert float((want - (corr if direction == "denoise" else clean)).abs().max()) > 1e-3
    return result


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    model = make_hf_model(request.param, seed=11)
    data, corrupt = make_data(model.config.vocab_size, seed=5)
    return request.param, model, data, corrupt


def _some_heads(model) -> list:
    """Two heads per layer (the first and the last: different key/value groups)."""
    n_heads = model.config.num_attention_heads
    return [Head(layer, h) for layer in range(model.config.num_hidden_layers) for h in (0, n_heads - 1)]


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_heads_by_position_match_the_hook_oracle(family, direction):
    _, model, data, corrupt = family
    check(model, data, corrupt, "heads", direction, positions=[0, 3, N_POS - 1])


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_mlps_and_residual_stream_match_the_hook_oracle(family, direction):
    _, model, data, corrupt = family
    check(model, data, corrupt, ["mlp", "resid"], direction, positions="all")
    check(model, data, corrupt, ["mlp", "resid"], direction, positions=[2, N_POS - 1])


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_head_ports_match_the_hook_oracle(family, direction):
    _, model, data, corrupt = family
    heads = _some_heads(model)
    ports = [(h, port) for h in heads for port in "qkv"]
    check(model, data, corrupt, ports, direction, positions=[1, N_POS - 1])
    check(model, data, corrupt, ports, direction, positions="all")


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_attribution_matches_gradients_through_the_hf_model(family, direction):
    """`attribution_patch`'s first-order estimates equal ``(a_source - a_base) . grad`` with the
    gradient taken by autograd through the HuggingFace model at hooked taps. Grouped-query k/v
    ports are left out: the model has one key/value vector per group, not per query head."""
    _, model, data, corrupt = family
    oracle = Oracle(model)
    oracle.mlp_written = True
    ports = "qkv" if oracle.n_kv == oracle.n_heads else "q"
    components = ["heads", "mlp", "resid"] + [(h, p) for h in _some_heads(model) for p in ports]
    for positions in ("all", [2, N_POS - 1]):
        result = attribution_patch(model, data, components, direction=direction, corrupt=corrupt,
                                   metric="logit_diff", positions=positions)
        base, source = (corrupt, data.tokens) if direction == "denoise" else (data.tokens, corrupt)
        sites = list(result.sites)
        want = oracle.first_order(base, data, sites, oracle.capture(source, sites))
        bad = [(str(s), float(a), float(b)) for s, a, b in zip(sites, result.patched, want) if not torch.isclose(a, b, **TOL)]
        assert not bad, f"{len(bad)} of {len(want)} cells differ (site, attribution, oracle): {bad[:6]}"


def _receivers(model) -> list:
    """Receiver sets for path patching: the logits; heads' q, k, v in the last layer (two heads
    of one key/value group for k and v); an MLP; a head's port with two MLPs and the logits."""
    last = model.config.num_hidden_layers - 1
    h = model.config.num_attention_heads - 1
    return [["logits"], [(Head(last, h), "q")], [(Head(last, 0), "k"), (Head(last, 1), "v")],
            [(MLP(last), "in")], [(Head(last, h), "v"), (MLP(last - 1), "in"), (MLP(last), "in"), "logits"]]


def check_path(model, data, corrupt, receivers, direction):
    oracle = Oracle(model)
    base, source = (corrupt, data.tokens) if direction == "denoise" else (data.tokens, corrupt)
    result = path_patch(model, data, ["heads", "mlp"], receivers, direction=direction, corrupt=corrupt, metric="logit_diff")
    sites = list(result.sites)
    captured = oracle.capture(source, sites)
    want = torch.tensor([float(logit_diff_last(oracle.path(base, captured, s, receivers), data).mean()) for s in sites],
                        dtype=torch.float64)
    bad = [(str(s), float(a), float(b)) for s, a, b in zip(sites, result.patched, want) if not torch.isclose(a, b, **TOL)]
    assert not bad, f"{receivers}: {len(bad)} of {len(want)} senders differ (sender, path, oracle): {bad[:6]}"


@pytest.mark.parametrize("direction, which", [("denoise", -1), ("noise", 2)], ids=["denoise-combined", "noise-kv"])
def test_path_patching_matches_the_hook_oracle(family, direction, which):
    """Heads' k and v (two heads of one key/value group) in one direction; a head's port, two
    MLPs and the logits together in the other. Every receiver set both ways: the slow variant."""
    _, model, data, corrupt = family
    check_path(model, data, corrupt, _receivers(model)[which], direction)


# ---- random sites and rows (hypothesis) ----------------------------------------------------------

_MODELS: dict = {}


def _cached(name: str):
    if name not in _MODELS:
        model = make_hf_model(name, seed=11)
        _MODELS[name] = (model, *make_data(model.config.vocab_size, n=8, seed=6))
    return _MODELS[name]


@st.composite
def patches(draw):
    """A family, one site (kind, layer, head, position or every position), a direction and rows
    (a non-empty list of the 8 rows, repeats allowed)."""
    name = draw(st.sampled_from(FAMILIES))
    c = _cached(name)[0].config
    kind = draw(st.sampled_from(KINDS))
    layer = draw(st.integers(0, c.num_hidden_layers - 1))
    head = draw(st.integers(0, c.num_attention_heads - 1)) if kind in ("head", "q", "k", "v") else None
    position = draw(st.none() | st.integers(0, N_POS - 1))
    rows = draw(st.lists(st.integers(0, 7), min_size=1, max_size=5))
    return name, Site(kind, layer, head, position), draw(st.sampled_from(["denoise", "noise"])), rows


@settings(max_examples=12, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=patches())
def test_random_sites_and_rows_match_the_hook_oracle(case):
    name, site, direction, rows = case
    model, data, corrupt = _cached(name)
    index = torch.tensor(rows)
    data, corrupt = data.rows(index), corrupt[index]
    if site.kind in ("mlp", "resid"):
        component = MLP(site.layer) if site.kind == "mlp" else "resid"
    else:
        component = Head(site.layer, site.head) if site.kind == "head" else (Head(site.layer, site.head), site.kind)
    positions = "all" if site.position is None else [site.position]
    result = activation_patch(model, data, component, direction=direction, corrupt=corrupt, metric="logit_diff",
                              positions=positions)
    got = result.patched[list(result.sites).index(site)]
    want, _, _ = oracle_sweep(model, data, corrupt, [site], direction)
    torch.testing.assert_close(got, want[0], **TOL)


# ---- exhaustive (slow): every head, port, position and receiver set ------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_every_site_and_position_matches_the_hook_oracle(family, direction):
    _, model, data, corrupt = family
    check(model, data, corrupt, ["heads", "q", "k", "v", "mlp", "resid"], direction, positions="each")
    check(model, data, corrupt, ["heads", "q", "k", "v", "mlp", "resid"], direction, positions="all")
    for receivers in _receivers(model):
        check_path(model, data, corrupt, receivers, direction)
