"""The batched engine against the reference engine (DESIGN.md section 3: "given the same Schedule,
[they] must agree to float tolerance").

* property-based: random hypotheses (random components, ports, features, position restrictions,
  claims feeding two ports or two parents, depth up to 3) on tiny random models of every supported
  configuration (a pairwise covering set of: attention-only / ReLU / GELU MLPs, standard /
  shortformer positions, causal / bidirectional attention, LN / LNPre / no normalisation,
  d_vocab_out equal to or different from d_vocab), every parameter perturbed by seeded noise;
* `run_many` equals one `run` per schedule; results do not depend on the chunk size;
* `scrub.evaluate` gives the same numbers with either engine, and defaults to "batched";
* the engine computes in the model's dtype and on its device;
* schedules from another dataset, and schedules with different reference-row counts, are refused.

Models are built once per configuration (module-level cache): construction is the slow part.
"""

from __future__ import annotations

from functools import lru_cache
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_model  # one definition of the tiny perturbed model
import scrub
from scrub import EXACT, MLP, Dataset, Embed, Feature, Head, Hypothesis, PosEmbed, ScheduleError
from scrub.components import stage
from scrub.engine import BatchedEngine, ReferenceEngine
from scrub.model import ModelView

pytestmark = pytest.mark.requires_hooked  # random HookedTransformers of every supported configuration

D_VOCAB = 8
N_CTX = 6
N_POS = 5
N_ROWS = 24
ATOL = 1e-4

# ---- models -----------------------------------------------------------------------------------

# A pairwise covering set of the supported settings: every pair of values of any two of
# (MLP, positions, attention direction, normalisation, d_vocab_out) occurs in some configuration.
CONFIGS: dict[str, dict] = {
    "attn-std-causal-LN": dict(attn_only=True, positional_embedding_type="standard",
                               attention_dir="causal", normalization_type="LN"),
    "attn-short-bidir-LNPre-out7": dict(attn_only=True, positional_embedding_type="shortformer",
                                        attention_dir="bidirectional", normalization_type="LNPre",
                                        d_vocab_out=7),
    "attn-std-bidir-None-out7": dict(attn_only=True, positional_embedding_type="standard",
                                     attention_dir="bidirectional", normalization_type=None,
                                     d_vocab_out=7, n_heads=2, d_model=16),
    "relu-short-causal-None": dict(act_fn="relu", positional_embedding_type="shortformer",
                                   attention_dir="causal", normalization_type=None),
    "relu-std-bidir-LN-out7": dict(act_fn="relu", positional_embedding_type="standard",
                                   attention_dir="bidirectional", normalization_type="LN",
                                   d_vocab_out=7),
    "relu-std-causal-LNPre": dict(act_fn="relu", positional_embedding_type="standard",
                                  attention_dir="causal", normalization_type="LNPre", n_heads=2,
                                  d_model=16),
    "gelu-short-bidir-LN": dict(act_fn="gelu", positional_embedding_type="shortformer",
                                attention_dir="bidirectional", normalization_type="LN"),
    "gelu-std-causal-LNPre-out7-3L": dict(act_fn="gelu", positional_embedding_type="standard",
                                          attention_dir="causal", normalization_type="LNPre",
                                          d_vocab_out=7, n_layers=3),
    "gelu-std-bidir-None": dict(act_fn="gelu", positional_embedding_type="standard",
                                attention_dir="bidirectional", normalization_type=None),
}


def build_model(seed: int = 0, **overrides):
    """The suite's tiny perturbed model (conftest.make_model) at this file's sizes."""
    sizes = dict(d_mlp=48, d_vocab=D_VOCAB, n_ctx=N_CTX, act_fn="relu")
    return make_model(seed, **{**sizes, **overrides})


@lru_cache(maxsize=None)
def model_for(name: str):
    seed = list(CONFIGS).index(name) + 10
    return build_model(seed=seed, **CONFIGS[name])


@lru_cache(maxsize=None)
def engines_for(name: str) -> tuple[BatchedEngine, ReferenceEngine]:
    model = model_for(name)
    return BatchedEngine(model, DATA), ReferenceEngine(model, DATA)


def make_dataset(n: int = N_ROWS, pos: int = N_POS, seed: int = 3, name: str = "random") -> Dataset:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, D_VOCAB, (n, pos), generator=g)
    targets = torch.full_like(tokens, -1)
    targets[:, :-1] = tokens[:, 1:] % 7  # fits a d_vocab_out of 7 too
    mask = torch.ones_like(tokens, dtype=torch.bool)
    mask[:, -1] = False
    return Dataset(tokens=tokens, targets=targets, loss_mask=mask, name=name)


DATA = make_dataset()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> bool:
    assert a.shape == b.shape, (a.shape, b.shape)
    return torch.allclose(a, b, atol=atol, rtol=0)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def property_settings(max_examples: int):
    """Hypothesis settings of the engine property tests: reproducible in CI (derandomized, no
    example database); change the config list or max_examples to explore more."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---- features and the hypothesis strategy -----------------------------------------------------

FIRST = Feature("first", lambda d: d.tokens[:, 0])  # per example
TOKEN = Feature.token()  # per position
PREV = Feature.prev_token()  # per position
ANY = Feature.any()  # per example, constant
FEATURES = [EXACT, FIRST, TOKEN, PREV, ANY]
# (min, max) children per claim at each depth below the output; the root-only baseline is
# covered by the deterministic tests, so the output always gets a child here
N_CHILDREN = {1: (1, 3), 2: (0, 2), 3: (0, 1)}


def writers(cfg) -> list:
    out = [Embed()]
    if cfg.positional_embedding_type != "shortformer":
        out.append(PosEmbed())
    for layer in range(cfg.n_layers):
        out += [Head(layer, h) for h in range(cfg.n_heads)]
        if not cfg.attn_only:
            out.append(MLP(layer))
    return out


@st.composite
def hypotheses(draw, cfg, n_pos: int = N_POS) -> Hypothesis:
    """A random valid hypothesis for a model with config ``cfg`` (depth <= 3 below the output)."""
    h = Hypothesis("random")
    out = h.output()
    components = writers(cfg)
    n_layers = cfg.n_layers
    used: set = set()  # (parent index, port, component): one claim per port of one parent

    def free(parent, port, component) -> bool:
        return (parent.index, port, component) not in used

    def grow(parent, depth: int) -> None:
        s_parent = stage(parent.component, n_layers)
        upstream = [c for c in components if stage(c, n_layers) < s_parent]
        for _ in range(draw(st.integers(*N_CHILDREN[depth]))):
            port = draw(st.sampled_from(parent.component.ports))
            choices = [c for c in upstream if free(parent, port, c)]
            if not choices:
                continue
            component = draw(st.sampled_from(choices))
            targets = [(parent, port)]
            extra = draw(st.sampled_from(["none", "none", "none", "second port", "output too"]))
            if extra == "second port" and isinstance(parent.component, Head):
                others = [p for p in parent.component.ports if p != port and free(parent, p, component)]
                if others:
                    targets.append((parent, draw(st.sampled_from(others))))
            elif extra == "output too" and parent is not out and free(out, "in", component):
                targets.append((out, "in"))
            feature = draw(st.sampled_from(FEATURES))
            positions = None
            if draw(st.integers(0, 3)) == 0:
                positions = sorted(draw(st.sets(st.integers(0, n_pos - 1), min_size=1, max_size=n_pos - 1)))
            claim = h.claim(component, feature, into=targets, positions=positions)
            used.update((p.index, port_, component) for p, port_ in targets)
            if depth < 3 and component.ports:
                grow(claim, depth + 1)

    grow(out, 1)
    return h


# ---- 1. property: batched == reference on random hypotheses, every configuration ---------------


@pytest.mark.parametrize("config", list(CONFIGS))
@property_settings(10)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_batched_equals_reference_random_hypotheses(config, data, seed):
    model = model_for(config)
    h = data.draw(hypotheses(model.cfg), label="hypothesis")
    schedule = scrub.plan(h, DATA, seed, model=model)
    batched, reference = engines_for(config)
    got = batched.run(schedule)
    want = reference.run(schedule)
    assert got.shape == (N_ROWS, N_POS, model.cfg.d_vocab_out)
    assert got.dtype == want.dtype
    assert close(got, want), f"max |batched - reference| = {max_diff(got, want):.3g}\n{h}\n{schedule}"


# ---- hand-written hypotheses used by the deterministic tests ----------------------------------


def root_only(name: str = "baseline") -> Hypothesis:
    h = Hypothesis(name)
    h.output()
    return h


def induction_like(cfg, name: str = "induction-like") -> Hypothesis:
    """Head 1.0 feeds the output; its q reads the token, k a per-position previous-token head, v."""
    h = Hypothesis(name)
    out = h.output()
    ind = h.claim(Head(1, 0), EXACT, into=out)
    h.claim(Embed(), TOKEN, into=(ind, "q"))
    prev = h.claim(Head(0, 1), PREV, into=(ind, "k"))
    h.claim(Embed(), TOKEN, into=(prev, "v"), positions=[0, 1, 2])
    h.claim(Embed(), FIRST, into=[(ind, "v"), out])
    return h


def with_mlp(cfg, name: str = "mlp") -> Hypothesis:
    h = Hypothesis(name)
    out = h.output()
    mlp = h.claim(MLP(1), FIRST, into=out)
    head = h.claim(Head(1, 1), TOKEN, into=[mlp, (out, "in")])
    h.claim(Head(0, 0), ANY, into=[(head, "q"), (head, "k")], positions=[1, 3])
    h.claim(MLP(0), EXACT, into=mlp)
    return h


MODEL_ATTN = "attn-std-causal-LN"
MODEL_MLP = "relu-std-bidir-LN-out7"


def fixed_hypotheses(config: str) -> list[Hypothesis]:
    cfg = model_for(config).cfg
    hs = [root_only(), induction_like(cfg)]
    if not cfg.attn_only:
        hs.append(with_mlp(cfg))
    return hs


@pytest.mark.parametrize("config", [MODEL_ATTN, MODEL_MLP])
def test_fixed_hypotheses_match_reference(config):
    model = model_for(config)
    batched, reference = engines_for(config)
    for h in fixed_hypotheses(config):
        for seed in (0, 1):
            s = scrub.plan(h, DATA, seed, model=model)
            got, want = batched.run(s), reference.run(s)
            assert close(got, want), f"{h.name} seed {seed}: {max_diff(got, want):.3g}"


def test_comparison_is_sensitive():
    """The engine comparison can fail: different seeds give different logits, and the scrubbed
    logits differ from the clean model's (so agreement above is not trivially implied)."""
    model = model_for(MODEL_MLP)
    batched, reference = engines_for(MODEL_MLP)
    h = with_mlp(model.cfg)
    s0, s1 = (scrub.plan(h, DATA, seed, model=model) for seed in (0, 1))
    a, b = batched.run(s0), reference.run(s1)
    assert max_diff(a, b) > 1e-2
    clean = reference.clean_logits(torch.arange(N_ROWS))
    assert max_diff(a, clean) > 1e-2
    assert close(batched.clean_logits(torch.arange(N_ROWS)), clean)


# ---- 2. run_many == run, one by one ------------------------------------------------------------


@pytest.mark.parametrize("config", [MODEL_ATTN, MODEL_MLP])
def test_run_many_equals_run_alone(config):
    model = model_for(config)
    batched, reference = engines_for(config)
    schedules = [
        scrub.plan(h, DATA, seed, model=model) for h in fixed_hypotheses(config) for seed in (0, 7)
    ]
    many = batched.run_many(schedules)
    assert len(many) == len(schedules)
    alone = [batched.run(s) for s in schedules]
    for i, (m, a) in enumerate(zip(many, alone)):
        assert close(m, a, atol=1e-5), f"schedule {i} ({schedules[i]!r}): {max_diff(m, a):.3g}"
        assert close(m, reference.run(schedules[i])), f"schedule {i} vs reference"
    # every schedule gives different logits, so a mix-up between them would be caught
    for i in range(len(many)):
        for j in range(i + 1, len(many)):
            assert max_diff(many[i], many[j]) > 1e-3, (i, j)
    assert batched.run_many([]) == []


@property_settings(10)
@given(data=st.data(), seeds=st.lists(st.integers(0, 2**16), min_size=2, max_size=4))
def test_run_many_random_hypotheses(data, seeds):
    """Random hypotheses (and the root-only baseline) in one call equal each run alone."""
    config = "gelu-std-causal-LNPre-out7-3L"
    model = model_for(config)
    batched, _ = engines_for(config)
    hs = [data.draw(hypotheses(model.cfg), label=f"hypothesis {i}") for i in range(len(seeds) - 1)]
    hs.append(root_only())
    schedules = [scrub.plan(h, DATA, seed, model=model) for h, seed in zip(hs, seeds)]
    schedules.append(schedules[0])  # the same schedule twice in one call
    many = batched.run_many(schedules)
    assert len(many) == len(schedules)
    for i, (s, m) in enumerate(zip(schedules, many)):
        alone = batched.run(s)
        assert close(m, alone, atol=1e-5), f"schedule {i}: {max_diff(m, alone):.3g}\n{s}"


# ---- 2b. per-position-heavy trees ----------------------------------------------------------------
#
# A claim with children and a per-position feature is treeified per output position: copy t is
# needed at t only, and the nodes below it at t (MLPs, q) or 0..t (k, v of a causal head). The
# engine evaluates the nodes of one head whose query counts fall in one power-of-two bucket in
# one attention call, queries padded: these tests check it against the reference engine and
# against one call per distinct query count (`group_by_query_count`).

PER_POSITION_CONFIGS = ["attn-std-causal-LN", "relu-std-bidir-LN-out7", "gelu-std-causal-LNPre-out7-3L"]


@st.composite
def per_position_hypotheses(draw, cfg) -> Hypothesis:
    """1-3 per-position claims (token or previous token) with children into the output; below
    them per-row or EXACT claims that have children of their own, and leaves of every kind."""
    h = Hypothesis("per-position heavy")
    out = h.output()
    n_layers = cfg.n_layers
    components = writers(cfg)
    with_ports = [c for c in components if c.ports and stage(c, n_layers) > 1]
    tops = draw(st.lists(st.sampled_from(with_ports), min_size=1, max_size=3, unique=True))
    for top in tops:
        positions = None if draw(st.booleans()) else sorted(draw(st.sets(st.integers(0, N_POS - 1), min_size=1, max_size=3)))
        claim = h.claim(top, draw(st.sampled_from([TOKEN, PREV])), into=out, positions=positions)
        below = [c for c in components if stage(c, n_layers) < stage(top, n_layers)]
        used = set()
        for _ in range(draw(st.integers(1, 3))):
            port = draw(st.sampled_from(top.ports))
            child = draw(st.sampled_from(below))
            if (port, child) in used:
                continue
            used.add((port, child))
            inner = h.claim(child, draw(st.sampled_from([EXACT, FIRST, ANY])), into=(claim, port))
            deeper = [c for c in components if stage(c, n_layers) < stage(child, n_layers)]
            if child.ports and deeper:  # a node with inputs under every copy
                for port2 in draw(st.sets(st.sampled_from(child.ports), min_size=1, max_size=2)):
                    leaf = draw(st.sampled_from(deeper))
                    h.claim(leaf, draw(st.sampled_from(FEATURES)), into=(inner, port2))
    return h


@pytest.mark.parametrize("config", PER_POSITION_CONFIGS)
@property_settings(6)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_per_position_heavy_trees_match_reference(config, data, seed):
    model = model_for(config)
    h = data.draw(per_position_hypotheses(model.cfg), label="hypothesis")
    schedule = scrub.plan(h, DATA, seed, model=model)
    assert any(node.copies for node in schedule.nodes())
    batched, reference = engines_for(config)
    want = reference.run(schedule)
    got = batched.run(schedule)
    assert close(got, want), f"max |batched - reference| = {max_diff(got, want):.3g}\n{h}"
    asked = sorted(data.draw(st.sets(st.integers(0, N_POS - 1), min_size=1, max_size=3), label="positions"))
    pruned = batched.run(schedule, positions=asked)
    assert close(pruned, want[:, asked]), f"at {asked}: {max_diff(pruned, want[:, asked]):.3g}"


def _copies_hypothesis() -> Hypothesis:
    """Head 1.0 per position (token) with a head below every copy, needed at 0..t (its values)."""
    h = Hypothesis("copies")
    out = h.output()
    top = h.claim(Head(1, 0), TOKEN, into=out)
    h.claim(Embed(), TOKEN, into=(top, "q"))
    mid = h.claim(Head(0, 1), FIRST, into=(top, "v"))
    h.claim(Embed(), PREV, into=(mid, "k"))
    h.claim(PosEmbed(), EXACT, into=(mid, "q"))
    top2 = h.claim(Head(1, 1), PREV, into=out, positions=[1, 2, 4])
    h.claim(Head(0, 1), EXACT, into=(top2, "k"))
    return h


def test_copies_share_attention_calls(monkeypatch):
    """Copies (and the nodes below them) of one head go through a few calls, not one per copy,
    with the same logits as one call per distinct query count."""
    config = "attn-std-causal-LN"
    model = model_for(config)
    schedules = [scrub.plan(_copies_hypothesis(), DATA, seed, model=model) for seed in (0, 1)]
    engine = BatchedEngine(model, DATA)
    calls: list[tuple[int, int, int]] = []
    original = type(engine.view).head_output

    def counted(view, layer, head, q, k, v, q_positions=None):
        calls.append((layer, head, q.shape[1]))
        return original(view, layer, head, q, k, v, q_positions=q_positions)

    monkeypatch.setattr(type(engine.view), "head_output", counted)
    bucketed = engine.run_many(schedules)
    bucketed_calls = list(calls)
    calls.clear()
    engine.group_by_query_count = True
    per_count = engine.run_many(schedules)
    per_count_calls = list(calls)
    for a, b in zip(bucketed, per_count):
        assert close(a, b, atol=1e-5)
    _, reference = engines_for(config)
    for s, a in zip(schedules, bucketed):
        assert close(a, reference.run(s))
    # head 0.1 below the copies of head 1.0 is needed at 1..5 queries (0..t): buckets 1, 2, 4, 8;
    # head 1.0 and 1.1 copies at one query each; head 0.1 as head 1.1's EXACT k child at 0..4
    heads = {(layer, head) for layer, head, _ in per_count_calls}
    assert len(bucketed_calls) < len(per_count_calls)
    assert len(bucketed_calls) <= len(heads) * (1 + (N_POS - 1).bit_length())
    assert {q for layer, head, q in bucketed_calls if (layer, head) == (0, 1)} <= {1, 2, 4, 5}


# ---- 3. chunking -------------------------------------------------------------------------------


def _budget_for_chunk(view: ModelView, schedules, target: int) -> float:
    """A memory budget (MB) that makes chunk_size(schedules) == target (searched, not derived)."""
    lo, hi = 1e-9, 1024.0
    for _ in range(200):
        mid = (lo * hi) ** 0.5
        size = BatchedEngine(view, DATA, memory_budget_mb=mid).chunk_size(schedules)
        if size == target:
            return mid
        lo, hi = (mid, hi) if size < target else (lo, mid)
    raise AssertionError(f"no budget gives chunk size {target}")


@pytest.mark.parametrize("config", [MODEL_ATTN, MODEL_MLP])
def test_results_do_not_depend_on_chunk_size(config):
    model = model_for(config)
    view = ModelView.from_hooked(model)
    schedules = [scrub.plan(h, DATA, 3, model=model) for h in fixed_hypotheses(config)]
    big = BatchedEngine(view, DATA, memory_budget_mb=4096)
    assert big.chunk_size(schedules) == N_ROWS
    tiny = BatchedEngine(view, DATA, memory_budget_mb=1e-9)
    assert tiny.chunk_size(schedules) == 1
    few = BatchedEngine(view, DATA, memory_budget_mb=_budget_for_chunk(view, schedules, 5))
    assert few.chunk_size(schedules) == 5  # 24 rows: chunks of 5, 5, 5, 5, 4
    want = big.run_many(schedules)
    for engine in (tiny, few):
        got = engine.run_many(schedules)
        for s, g, w in zip(schedules, got, want):
            assert close(g, w, atol=1e-5), f"{s!r} chunk {engine.chunk_size(schedules)}: {max_diff(g, w):.3g}"
        for s, w in zip(schedules, want):  # run() chunks too
            assert close(engine.run(s), w, atol=1e-5)
    assert close(tiny.clean_logits(torch.arange(N_ROWS)), big.clean_logits(torch.arange(N_ROWS)), atol=1e-5)


def test_chunking_with_a_reference_subset():
    """Reference rows that are a permuted subset of the dataset, executed in chunks of one row."""
    config = MODEL_MLP
    model = model_for(config)
    _, reference_engine = engines_for(config)
    view = ModelView.from_hooked(model)
    ref_rows = torch.randperm(N_ROWS, generator=torch.Generator().manual_seed(5))[:9]
    h = with_mlp(model.cfg)
    s = scrub.plan(h, DATA, 2, model=model, reference=ref_rows)
    tiny = BatchedEngine(view, DATA, memory_budget_mb=1e-9)
    assert tiny.chunk_size([s]) == 1
    got = tiny.run(s)
    assert got.shape == (9, N_POS, model.cfg.d_vocab_out)
    assert close(got, reference_engine.run(s))
    assert close(got, BatchedEngine(view, DATA).run(s), atol=1e-5)


# ---- 4. scrub.evaluate with either engine ------------------------------------------------------


@pytest.mark.parametrize("config", ["attn-std-causal-LN", "gelu-short-bidir-LN"])
def test_evaluate_engines_agree(config):
    model = model_for(config)
    h = induction_like(model.cfg)
    kwargs = dict(seeds=2, n_boot=50)
    rb = scrub.evaluate(h, model, DATA, engine="batched", **kwargs)
    rr = scrub.evaluate(h, model, DATA, engine="reference", **kwargs)
    assert rb.engine == "batched" and rr.engine == "reference"
    for field in ("loss_recovered", "m_scrub", "m_base", "m_model"):
        assert abs(getattr(rb, field) - getattr(rr, field)) < 1e-4, field
    assert rb.m_base != pytest.approx(rb.m_scrub, abs=1e-4)  # the hypothesis changes something
    # chunked through evaluate's batch_size as well
    rc = scrub.evaluate(h, model, DATA, engine="batched", batch_size=7, **kwargs)
    assert abs(rc.loss_recovered - rb.loss_recovered) < 1e-4
    # a metric that needs the clean logits (the engines' clean_logits)
    kb = scrub.evaluate(h, model, DATA, engine="batched", metric="kl", **kwargs)
    kr = scrub.evaluate(h, model, DATA, engine="reference", metric="kl", **kwargs)
    for field in ("loss_recovered", "m_scrub", "m_base", "m_model"):
        assert abs(getattr(kb, field) - getattr(kr, field)) < 1e-4, ("kl", field)


def test_evaluate_default_engine_is_batched():
    model = model_for(MODEL_ATTN)
    r = scrub.evaluate(induction_like(model.cfg), model, DATA, n_boot=20)
    assert r.engine == "batched"


# ---- 5. dtype and device -----------------------------------------------------------------------


@lru_cache(maxsize=None)
def float64_model():
    return build_model(seed=99, act_fn="gelu", dtype=torch.float64)


def test_float64_model_gives_float64_logits():
    model = float64_model()
    assert next(model.parameters()).dtype == torch.float64
    h = with_mlp(model.cfg)
    s = scrub.plan(h, DATA, 0, model=model)
    engine = BatchedEngine(model, DATA, device="cpu")
    got = engine.run(s)
    assert got.dtype == torch.float64 and got.device.type == "cpu"
    assert engine.run_many([s])[0].dtype == torch.float64
    assert engine.clean_logits(torch.arange(4)).dtype == torch.float64
    want = ReferenceEngine(model, DATA).run(s)
    assert want.dtype == torch.float64
    # in float64 the two engines agree far below float32 resolution: the engine did not downcast
    assert close(got, want, atol=1e-10), max_diff(got, want)
    # and a float64 run differs from the same weights in float32 by float32 rounding only
    got32 = BatchedEngine(ModelView.from_hooked(model).to(dtype=torch.float32), DATA).run(s)
    assert got32.dtype == torch.float32
    assert close(got32.double(), got, atol=1e-4)


def test_float32_model_on_cpu():
    model = model_for(MODEL_ATTN)
    s = scrub.plan(induction_like(model.cfg), DATA, 0, model=model)
    got = BatchedEngine(model, DATA, device="cpu").run(s)
    assert got.dtype == torch.float32 and got.device.type == "cpu"


# ---- 6. errors ---------------------------------------------------------------------------------


def test_schedule_from_another_dataset_is_refused():
    model = model_for(MODEL_ATTN)
    other = make_dataset(name="other")  # same contents, a different Dataset object
    h = induction_like(model.cfg)
    s = scrub.plan(h, other, 0, model=model)
    batched, _ = engines_for(MODEL_ATTN)
    with pytest.raises(ScheduleError, match="other"):
        batched.run(s)
    good = scrub.plan(h, DATA, 0, model=model)
    with pytest.raises(ScheduleError):
        batched.run_many([good, s])
    batched.run(good)  # the engine still works


def test_run_many_with_different_reference_counts_is_refused():
    model = model_for(MODEL_ATTN)
    batched, _ = engines_for(MODEL_ATTN)
    h = induction_like(model.cfg)
    full = scrub.plan(h, DATA, 0, model=model)
    part = scrub.plan(h, DATA, 0, model=model, reference=torch.arange(10))
    with pytest.raises(ScheduleError, match="reference rows"):
        batched.run_many([full, part])
    with pytest.raises(ScheduleError):
        batched.run_many([part, full])
    assert len(batched.run_many([part, scrub.plan(root_only(), DATA, 1, reference=torch.arange(5, 15))])) == 2


def test_cache_budget_regimes(monkeypatch):
    """The clean cache is built once when it fits 60% of the budget, still once (with smaller
    chunks) up to 80%, and once per chunk beyond; the results are the same in every regime."""
    from scrub.engine.cache import cache_bytes, distinct_rows

    model = model_for(MODEL_MLP)
    view = ModelView.from_hooked(model)
    schedules = [scrub.plan(h, DATA, 3, model=model) for h in fixed_hypotheses(MODEL_MLP)]
    probe = BatchedEngine(view, DATA)
    needs, rows = probe._cache_needs(schedules, probe._needed(schedules, tuple(range(N_POS))))
    need_mb = cache_bytes(view, needs, len(distinct_rows(rows, len(DATA)))) / 2**20
    passes = []
    original = ModelView.clean_pass
    monkeypatch.setattr(ModelView, "clean_pass", lambda self, tokens, **kw: passes.append(len(tokens)) or original(self, tokens, **kw))
    want = probe.run_many(schedules)
    for share, one_pass in ((0.5, True), (0.7, True), (0.95, False)):
        engine = BatchedEngine(view, DATA, memory_budget_mb=need_mb / share)
        passes.clear()
        got = engine.run_many(schedules)
        cached_rows = sum(passes)
        assert (cached_rows == len(distinct_rows(rows, len(DATA)))) == one_pass, (share, passes)
        for g, w in zip(got, want):
            assert close(g, w, atol=1e-5), share


def test_embeddings_are_read_through_the_view(monkeypatch):
    """Embed and PosEmbed leaves come from ModelView.embed / pos_embed (so a family that scales
    its embedding is read as the model reads it), not from the weight tables directly."""
    model = model_for(MODEL_ATTN)
    h = Hypothesis("embeddings")
    out = h.output()
    h.claim(Embed(), TOKEN, into=out)
    h.claim(PosEmbed(), FIRST, into=out)
    schedule = scrub.plan(h, DATA, 0, model=model)
    engine = BatchedEngine(model, DATA)
    plain = engine.run(schedule)
    cls = type(engine.view)
    calls = {"embed": 0, "pos_embed": 0}
    original = {name: getattr(cls, name) for name in calls}

    def spy(name, scale):
        def wrapped(view, *args):
            calls[name] += 1
            return scale * original[name](view, *args)

        return wrapped

    monkeypatch.setattr(cls, "embed", spy("embed", 1.0))
    monkeypatch.setattr(cls, "pos_embed", spy("pos_embed", 1.0))
    assert torch.equal(engine.run(schedule), plain)
    assert calls["embed"] > 0 and calls["pos_embed"] > 0
    monkeypatch.setattr(cls, "embed", spy("embed", 2.0))  # a scaled embedding changes the scrub
    assert max_diff(engine.run(schedule), plain) > 1e-3
