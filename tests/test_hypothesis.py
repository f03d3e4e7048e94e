"""Hypotheses: building, printing, treeification, variants, and every documented bad input.

DESIGN.md section 5: bad input gets a clear error before any forward pass, from one exception tree
(`ScrubError` and subclasses), with a message naming the rule, the offending item and the fix.
"""

from __future__ import annotations

import re
import types

import pytest
import torch

import scrub
from scrub import (
    EXACT,
    MLP,
    ComponentError,
    Dataset,
    DatasetError,
    Embed,
    Feature,
    FeatureError,
    Head,
    Hypothesis,
    HypothesisError,
    MetricError,
    Output,
    PosEmbed,
    ScheduleError,
    ScrubError,
    plan,
)
from scrub.hypothesis import ModelShape, TreeSpec

from conftest import D_VOCAB, N_CTX, N_POS, random_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = ModelShape(n_layers=2, n_heads=3, n_ctx=N_CTX, attn_only=False)
ATTN_ONLY = ModelShape(n_layers=2, n_heads=3, n_ctx=N_CTX, attn_only=True)


def induction() -> tuple[Hypothesis, dict]:
    """The DESIGN.md example, on a 2-layer model."""
    h = Hypothesis("induction")
    out = h.output()
    ind = h.claim(Head(1, 2), EXACT, into=out)
    q = h.claim(Embed(), Feature.token(), into=(ind, "q"))
    k = h.claim(Head(0, 1), Feature.prev_token(), into=(ind, "k"))
    v = h.claim(Embed(), Feature.token(), into=(ind, "v"))
    return h, dict(out=out, ind=ind, q=q, k=k, v=v)


# ---- building and reading ---------------------------------------------------------------------


def test_build_records_claims_edges_and_order():
    h, c = induction()
    assert h.claims == (c["out"], c["ind"], c["q"], c["k"], c["v"])
    assert [cl.index for cl in h.claims] == [0, 1, 2, 3, 4]
    assert h.root is c["out"] and c["out"].is_output and not c["ind"].is_output
    assert h.output() is c["out"], "output() must return the same root claim"
    # default names: the component, made unique
    assert [cl.name for cl in h.claims] == ["output", "Head(1.2)", "Embed", "Head(0.1)", "Embed#2"]
    edges = h.edges
    assert [(e.child.name, e.parent.name, e.port) for e in edges] == [
        ("Head(1.2)", "output", "in"),
        ("Embed", "Head(1.2)", "q"),
        ("Head(0.1)", "Head(1.2)", "k"),
        ("Embed#2", "Head(1.2)", "v"),
    ]
    assert [e.child for e in h.children(c["ind"])] == [c["q"], c["k"], c["v"]]
    assert [e.parent for e in h.parents(c["q"])] == [c["ind"]]
    assert h.find("Head(0.1)") is c["k"]
    assert h.find(Head(1, 2)) is c["ind"]
    with pytest.raises(HypothesisError, match=r"matched 2 claims"):
        h.find(Embed())
    with pytest.raises(HypothesisError, match=r"matched 0 claims"):
        h.find("nope")
    g = h.graph
    assert g.number_of_nodes() == 5 and g.number_of_edges() == 4
    with pytest.raises(Exception):  # frozen copy
        g.add_node("x")
    h.validate(SHAPE)  # a valid hypothesis passes


def test_printing_shows_structure_features_ports_and_positions():
    h, c = induction()
    h.claim(PosEmbed(), Feature.position(), into=c["out"], positions=[3, 1], name="pos")
    text = str(h)
    assert text.splitlines()[0] == "Hypothesis 'induction'"
    for piece in ("Head(1.2) [EXACT] (3 children)", "<-q- Embed [token] (leaf)", "<-k- Head(0.1) [prev_token]",
                  "<-v- Embed#2 [token]", "<-in @pos[1, 3]- pos [position] (leaf)"):
        assert piece in text, (piece, text)
    # children are indented below their parent
    lines = text.splitlines()
    head_line = next(i for i, l in enumerate(lines) if "Head(1.2)" in l)
    q_line = next(i for i, l in enumerate(lines) if "Embed [token]" in l)
    assert len(lines[q_line]) - len(lines[q_line].lstrip()) > len(lines[head_line]) - len(lines[head_line].lstrip())
    assert repr(h) == "Hypothesis('induction', claims=6, edges=5)"
    assert "(empty)" in str(Hypothesis("nothing"))
    e = h.parents(h.find("pos"))[0]
    assert str(e) == "pos -> output.in @pos[1, 3]"


def test_explicit_names_and_duplicate_names():
    h = Hypothesis("names")
    out = h.output()
    h.claim(Head(1, 0), EXACT, into=out, name="mover")
    with pytest.raises(HypothesisError, match=r"a claim named 'mover' already exists"):
        h.claim(Head(1, 1), EXACT, into=out, name="mover")
    assert len(h.claims) == 2
    with pytest.raises(HypothesisError, match="non-empty name"):
        Hypothesis("")


def test_positions_are_normalised():
    h = Hypothesis("pos")
    out = h.output()
    a = h.claim(Head(0, 0), EXACT, into=out, positions=[5, 2, 5])
    b = h.claim(Head(0, 1), EXACT, into=out, positions=4)
    assert h.parents(a)[0].positions == (2, 5)
    assert h.parents(b)[0].positions == (4,)
    assert h.parents(h.claim(Embed(), EXACT, into=out))[0].positions is None


# ---- treeification ----------------------------------------------------------------------------


def _tree_paths(spec: TreeSpec) -> list[tuple[str, tuple[str, ...]]]:
    return [(node.claim.name, node.path) for node in spec.walk()]


def test_tree_copies_a_claim_per_port():
    h = Hypothesis("two ports")
    out = h.output()
    ind = h.claim(Head(1, 0), EXACT, into=out)
    emb = h.claim(Embed(), Feature.token(), into=[(ind, "q"), (ind, "k")])
    tree = h.tree()
    assert isinstance(tree, TreeSpec) and tree.claim is out and tree.edge is None and tree.path == ("output",)
    (head_node,) = tree.children
    copies = [n for n in tree.walk() if n.claim is emb]
    assert len(copies) == 2, "a claim feeding two ports appears once per path"
    assert copies[0] is not copies[1]
    assert {n.edge.port for n in copies} == {"q", "k"}
    assert copies[0].path != copies[1].path
    assert all(n.path[:-1] == head_node.path for n in copies)
    assert all(n.is_leaf for n in copies) and not head_node.is_leaf and not tree.is_leaf
    # the DAG itself still has one claim with two edges
    assert len(h.claims) == 3 and len(h.parents(emb)) == 2


def test_tree_copies_a_claim_and_its_subtree_per_parent():
    h = Hypothesis("two parents")
    out = h.output()
    a = h.claim(Head(1, 0), EXACT, into=out)
    b = h.claim(Head(1, 1), EXACT, into=out)
    shared = h.claim(Head(0, 2), Feature.prev_token(), into=(a, "v"))
    h.connect(shared, into=(b, "q"))
    leaf = h.claim(Embed(), Feature.token(), into=(shared, "k"))
    tree = h.tree()
    names = [name for name, _ in _tree_paths(tree)]
    assert names == ["output", "Head(1.0)", "Head(0.2)", "Embed", "Head(1.1)", "Head(0.2)", "Embed"]
    shared_nodes = [n for n in tree.walk() if n.claim is shared]
    leaf_nodes = [n for n in tree.walk() if n.claim is leaf]
    assert len(shared_nodes) == 2 and len(leaf_nodes) == 2
    assert shared_nodes[0].path != shared_nodes[1].path
    assert leaf_nodes[0].path != leaf_nodes[1].path
    # each copy of the leaf hangs below its own copy of the shared claim
    for s, l in zip(shared_nodes, leaf_nodes):
        assert s.children == (l,) and l.path[: len(s.path)] == s.path
    # every path in the tree is distinct
    paths = [p for _, p in _tree_paths(tree)]
    assert len(set(paths)) == len(paths)


def test_tree_children_follow_claim_order():
    h = Hypothesis("order")
    out = h.output()
    late = h.claim(Head(1, 1), EXACT, into=out)
    early = h.claim(Head(1, 0), EXACT, into=out)
    h.claim(Embed(), EXACT, into=(early, "v"))
    h.claim(PosEmbed(), EXACT, into=(early, "q"))
    kids = h.tree().children
    assert [k.claim for k in kids] == [late, early]
    assert [k.edge.port for k in kids[1].children] == ["v", "q"]


# ---- without() --------------------------------------------------------------------------------


def test_without_removes_a_claim_and_what_only_it_fed():
    h, c = induction()
    extra = h.claim(MLP(0), EXACT, into=c["out"])
    h2 = h.without(c["ind"])
    assert h2 is not h and h2.name == "induction - Head(1.2)"
    # the induction head and its three children are gone; the MLP stays
    assert [cl.name for cl in h2.claims] == ["output", "MLP(0)"]
    assert [(e.child.name, e.parent.name, e.port) for e in h2.edges] == [("MLP(0)", "output", "in")]
    # the original is unchanged
    assert len(h.claims) == 6 and len(h.edges) == 5
    h3 = h.without(c["k"], name="no prev")
    assert h3.name == "no prev"
    assert [cl.name for cl in h3.claims] == ["output", "Head(1.2)", "Embed", "Embed#2", "MLP(0)"]
    assert {(e.child.name, e.port) for e in h3.edges} == {("Head(1.2)", "in"), ("Embed", "q"), ("Embed#2", "v"),
                                                         ("MLP(0)", "in")}
    # features and positions survive the copy
    assert h3.find("Embed").feature is c["q"].feature
    h3.validate(SHAPE)
    assert [cl.name for cl in h.without(extra).claims] == ["output", "Head(1.2)", "Embed", "Head(0.1)", "Embed#2"]


def test_without_keeps_a_claim_still_reachable_another_way():
    h = Hypothesis("shared")
    out = h.output()
    a = h.claim(Head(1, 0), EXACT, into=out)
    b = h.claim(Head(1, 1), EXACT, into=out)
    h.claim(Head(0, 0), EXACT, into=[(a, "q"), (b, "k")], positions=[2])
    h2 = h.without(a)
    assert [cl.name for cl in h2.claims] == ["output", "Head(1.1)", "Head(0.0)"]
    (edge,) = h2.parents(h2.find("Head(0.0)"))
    assert (edge.parent.name, edge.port, edge.positions) == ("Head(1.1)", "k", (2,))


def test_without_refuses_the_output_and_foreign_claims():
    h, c = induction()
    with pytest.raises(HypothesisError, match="output claim cannot be removed"):
        h.without(c["out"])
    with pytest.raises(HypothesisError, match="not a claim of this hypothesis"):
        h.without(Hypothesis("x").output())
    with pytest.raises(HypothesisError, match="not a claim of this hypothesis"):
        h.without("Head(1.2)")


# ---- bad input at build time ------------------------------------------------------------------


def test_claiming_a_non_writer_is_refused():
    h = Hypothesis("h")
    out = h.output()
    with pytest.raises(HypothesisError, match=r"only Head, MLP, Embed and PosEmbed .* h.output\(\)"):
        h.claim(Output(), EXACT, into=out)
    with pytest.raises(HypothesisError, match="can be claimed"):
        h.claim("Head(0, 0)", EXACT, into=out)
    assert len(h.claims) == 1


def test_a_non_feature_is_refused():
    h = Hypothesis("h")
    out = h.output()
    with pytest.raises(HypothesisError, match=r"must be a scrub.Feature"):
        h.claim(Head(0, 0), lambda d: d.tokens, into=out)
    with pytest.raises(HypothesisError, match=r"must be a scrub.Feature"):
        h.claim(Head(0, 0), "token", into=out)
    with pytest.raises(FeatureError, match="needs a callable"):
        Feature("broken", fn=3)


def test_into_a_claim_of_another_hypothesis_is_refused():
    h1, c1 = induction()
    h2 = Hypothesis("other")
    h2.output()
    with pytest.raises(HypothesisError, match=r"other: .*not a claim of this hypothesis"):
        h2.claim(Embed(), EXACT, into=(c1["ind"], "q"))
    # even one that looks the same (same name, index and component)
    h3 = Hypothesis("induction")
    h3.output()
    with pytest.raises(HypothesisError, match="not a claim of this hypothesis"):
        h3.claim(Embed(), EXACT, into=c1["out"])
    with pytest.raises(HypothesisError, match="not a claim of this hypothesis"):
        h2.connect(c1["q"], into=h2.root)


def test_bad_into_values_are_refused():
    h = Hypothesis("h")
    out = h.output()
    with pytest.raises(HypothesisError, match="into must be a claim"):
        h.claim(Embed(), EXACT, into="output")
    with pytest.raises(HypothesisError, match="must feed something"):
        h.claim(Embed(), EXACT, into=[])
    emb = h.claim(Embed(), EXACT, into=out)
    with pytest.raises(HypothesisError, match=r"Embed \(Embed\) has no ports"):
        h.claim(PosEmbed(), EXACT, into=emb)


def test_a_port_the_parent_lacks_is_a_component_error():
    h = Hypothesis("h")
    out = h.output()
    head = h.claim(Head(1, 0), EXACT, into=out)
    with pytest.raises(ComponentError, match=r"Head\(1.0\) has no port 'x'; its ports are \['q', 'k', 'v'\]"):
        h.claim(Embed(), EXACT, into=(head, "x"))
    with pytest.raises(ComponentError, match=r"Output has no port 'q'; its ports are \['in'\]"):
        h.claim(Embed(), EXACT, into=(out, "q"))
    mlp = h.claim(MLP(0), EXACT, into=out)
    with pytest.raises(ComponentError, match=r"MLP\(0\) has no port 'k'"):
        h.claim(Embed(), EXACT, into=(mlp, "k"))
    assert len(h.claims) == 3


def test_a_missing_port_on_a_head_parent_is_refused():
    h = Hypothesis("h")
    out = h.output()
    head = h.claim(Head(1, 0), EXACT, into=out)
    with pytest.raises(HypothesisError, match=r"Head\(1.0\) reads through ports \['q', 'k', 'v'\]; say which"):
        h.claim(Embed(), EXACT, into=head)
    assert len(h.claims) == 2
    # single-port parents need no port
    mlp = h.claim(MLP(0), EXACT, into=out)
    e = h.claim(Embed(), EXACT, into=mlp)
    assert h.parents(e)[0].port == "in"


def test_the_same_component_twice_into_one_port_is_refused():
    h = Hypothesis("h")
    out = h.output()
    head = h.claim(Head(1, 0), EXACT, into=out)
    h.claim(Embed(), Feature.token(), into=(head, "q"))
    with pytest.raises(HypothesisError, match=r"Embed is already claimed into Head\(1.0\).q .*merge the two claims"):
        h.claim(Embed(), Feature.prev_token(), into=(head, "q"))
    # into another port it is fine (treeified separately)
    h.claim(Embed(), Feature.prev_token(), into=(head, "k"))
    with pytest.raises(HypothesisError, match="already claimed into output.in"):
        h.claim(Head(1, 0), Feature.token(), into=out)
    # connect() is checked the same way
    emb = h.find("Embed")
    with pytest.raises(HypothesisError, match="already claimed"):
        h.connect(emb, into=(head, "q"))


def test_a_failed_multi_target_claim_leaves_no_trace():
    h = Hypothesis("h")
    out = h.output()
    head = h.claim(Head(1, 0), EXACT, into=out)
    h.claim(Embed(), EXACT, into=(head, "k"))
    before = (len(h.claims), len(h.edges), str(h))
    with pytest.raises(HypothesisError, match="already claimed"):
        h.claim(Embed(), Feature.token(), into=[(head, "q"), (head, "k")])
    assert (len(h.claims), len(h.edges), str(h)) == before
    # the default name is free again
    assert h.claim(Embed(), Feature.token(), into=(head, "v")).name == "Embed#2"
    h.validate(SHAPE)


@pytest.mark.parametrize("positions", [[-1], [0, -2], [], ()])
def test_bad_positions_are_refused(positions):
    h = Hypothesis("h")
    out = h.output()
    with pytest.raises(HypothesisError, match="non-empty set of non-negative ints"):
        h.claim(Head(0, 0), EXACT, into=out, positions=positions)
    assert len(h.claims) == 1
    a = h.claim(Head(0, 0), EXACT, into=out)
    b = h.claim(Head(1, 0), EXACT, into=out)
    with pytest.raises(HypothesisError, match="non-empty set of non-negative ints"):
        h.connect(a, into=(b, "q"), positions=positions)


@pytest.mark.parametrize("args", [(-1, 0), (0, -1), (1.0, 0), (True, 0), ("1", 2)])
def test_bad_component_addresses_are_refused(args):
    with pytest.raises(ComponentError, match="must be a non-negative int"):
        Head(*args)


def test_self_loop_is_refused():
    h = Hypothesis("h")
    head = h.claim(Head(1, 0), EXACT, into=h.output())
    with pytest.raises(HypothesisError, match="cannot feed itself"):
        h.connect(head, into=(head, "q"))


# ---- bad input at validate(model) -------------------------------------------------------------


def _single(component, feature=EXACT) -> Hypothesis:
    h = Hypothesis("single")
    h.claim(component, feature, into=h.output())
    return h


@pytest.mark.parametrize(
    "component, pattern",
    [
        (Head(2, 0), r"Head\(2.0\): the model has 2 layers of 3 heads \(Head\(0..1, 0..2\)\)"),
        (Head(0, 3), r"Head\(0.3\): the model has 2 layers of 3 heads"),
        (MLP(2), r"MLP\(2\): the model has 2 layers \(MLP\(0..1\)\)"),
    ],
)
def test_components_the_model_lacks(component, pattern):
    with pytest.raises(ComponentError, match=pattern):
        _single(component).validate(SHAPE)


def test_mlp_in_an_attention_only_model(attn_model):
    with pytest.raises(ComponentError, match=r"MLP\(0\): the model is attention-only and has no MLPs"):
        _single(MLP(0)).validate(attn_model)
    with pytest.raises(ComponentError, match="attention-only"):
        _single(MLP(0)).validate(ATTN_ONLY)
    _single(MLP(0)).validate(SHAPE)


def test_validate_reads_real_models(attn_model, mlp_model):
    assert ModelShape.of(attn_model) == ModelShape(2, 3, N_CTX, attn_only=True, shortformer=False)
    assert ModelShape.of(mlp_model) == ModelShape(2, 3, N_CTX, attn_only=False, shortformer=False)
    with pytest.raises(ComponentError, match=r"Head\(0.3\)"):
        _single(Head(0, 3)).validate(mlp_model)
    with pytest.raises(HypothesisError, match="cannot read the shape of object"):
        _single(Head(0, 0)).validate(object())


@pytest.mark.parametrize(
    "parent, child",
    [
        (Head(0, 0), Head(1, 0)),  # later layer feeding an earlier one
        (Head(1, 0), Head(1, 2)),  # head -> head of the same layer
        (Head(1, 0), MLP(1)),  # an MLP runs after the heads of its layer
        (MLP(0), MLP(1)),
        (MLP(0), Head(1, 1)),
    ],
)
def test_a_child_that_is_not_upstream_is_refused(parent, child):
    h = Hypothesis("order")
    p = h.claim(parent, EXACT, into=h.output())
    port = "q" if isinstance(parent, Head) else "in"
    h.claim(child, EXACT, into=(p, port))
    with pytest.raises(HypothesisError, match=re.escape(f"{child} is not upstream of {parent}")):
        h.validate(SHAPE)


def test_upstream_children_are_accepted():
    h = Hypothesis("ok")
    out = h.output()
    m1 = h.claim(MLP(1), EXACT, into=out)
    h10 = h.claim(Head(1, 0), EXACT, into=(m1, "in"))  # head feeds the MLP of its own layer
    m0 = h.claim(MLP(0), EXACT, into=(h10, "k"))  # MLP 0 feeds layer-1 heads
    h.claim(Head(0, 1), EXACT, into=m0)
    h.claim(Embed(), EXACT, into=(h10, "v"))
    h.claim(PosEmbed(), EXACT, into=(h10, "q"))
    h.validate(SHAPE)


PARALLEL = ModelShape(n_layers=2, n_heads=3, n_ctx=N_CTX, attn_only=False, parallel_blocks=True)


@pytest.mark.parametrize("layer", [0, 1])
def test_parallel_blocks_a_head_does_not_feed_the_mlp_of_its_layer(layer):
    """GPT-J / GPT-NeoX: attention and MLP of one layer read the same residual stream."""
    h = Hypothesis("parallel")
    m = h.claim(MLP(layer), EXACT, into=h.output())
    h.claim(Head(layer, 1), EXACT, into=m)
    h.validate(SHAPE)  # sequential blocks: the head runs before the MLP of its layer
    with pytest.raises(HypothesisError) as err:
        h.validate(PARALLEL)
    message = str(err.value)
    assert f"Head({layer}.1) -> MLP({layer}).in: Head({layer}.1) is not upstream of MLP({layer})" in message
    assert "run in parallel on the same residual stream" in message  # the rule
    assert "claim the head into an MLP of a later layer" in message  # the fix
    # the MLP of a layer does not feed that layer's heads either, in both kinds of model
    g = Hypothesis("mlp into head")
    hd = g.claim(Head(layer, 0), EXACT, into=g.output())
    g.claim(MLP(layer), EXACT, into=(hd, "q"))
    for shape in (SHAPE, PARALLEL):
        with pytest.raises(HypothesisError, match=re.escape(f"MLP({layer}) is not upstream of Head({layer}.0)")):
            g.validate(shape)


def test_parallel_blocks_keep_every_cross_layer_edge():
    h = Hypothesis("parallel ok")
    out = h.output()
    m1 = h.claim(MLP(1), EXACT, into=out)
    h11 = h.claim(Head(1, 1), EXACT, into=out)
    m0 = h.claim(MLP(0), EXACT, into=[(m1, "in"), (h11, "k")])
    h.claim(Head(0, 2), EXACT, into=[m1, (h11, "q")])
    h.claim(Embed(), EXACT, into=[m0, (h11, "v")])
    h.validate(PARALLEL)
    h.validate(SHAPE)


def test_parallel_blocks_read_from_a_model_config():
    base = dict(n_layers=2, n_heads=3, n_ctx=N_CTX, attn_only=False)
    tl = types.SimpleNamespace(cfg=types.SimpleNamespace(**base, parallel_attn_mlp=True))
    view = types.SimpleNamespace(config=types.SimpleNamespace(**base, parallel_blocks=True))
    plain = types.SimpleNamespace(cfg=types.SimpleNamespace(**base, parallel_attn_mlp=False))
    assert ModelShape.of(tl).parallel_blocks and ModelShape.of(view).parallel_blocks
    assert not ModelShape.of(plain).parallel_blocks
    h = Hypothesis("parallel")
    h.claim(Head(0, 0), EXACT, into=h.claim(MLP(0), EXACT, into=h.output()))
    for model in (tl, view):
        with pytest.raises(HypothesisError, match=r"Head\(0.0\) is not upstream of MLP\(0\)"):
            h.validate(model)
    h.validate(plain)


@pytest.mark.requires_hooked
def test_parallel_blocks_read_from_a_hooked_transformer():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=1, d_model=8, n_ctx=4, d_head=4, n_heads=2, d_vocab=5, d_mlp=16,
        act_fn="relu", parallel_attn_mlp=True,
    )
    assert ModelShape.of(HookedTransformer(cfg)).parallel_blocks


def test_positions_out_of_range():
    h = Hypothesis("pos")
    h.claim(Head(0, 0), EXACT, into=h.output(), positions=[0, N_CTX])
    with pytest.raises(HypothesisError, match=rf"position {N_CTX} is out of range; sequences have {N_CTX} positions"):
        h.validate(SHAPE)
    h2 = Hypothesis("pos2")
    h2.claim(Head(0, 0), EXACT, into=h2.output(), positions=[N_POS])
    h2.validate(SHAPE)  # inside the model's context
    with pytest.raises(HypothesisError, match=rf"position {N_POS} is out of range; sequences have {N_POS} positions"):
        h2.validate(SHAPE, n_pos=N_POS)  # but beyond the dataset's sequences


def test_a_cycle_is_refused():
    h = Hypothesis("cyclic")
    out = h.output()
    a = h.claim(Head(1, 0), EXACT, into=out)
    b = h.claim(Head(0, 0), EXACT, into=(a, "q"))
    h.connect(a, into=(b, "k"))
    with pytest.raises(HypothesisError, match=r"form a cycle .*Head\(1.0\).*must be acyclic"):
        h.validate_structure()
    with pytest.raises(HypothesisError, match="cycle"):
        h.validate(SHAPE)
    with pytest.raises(HypothesisError, match="cycle"):
        plan(h, random_dataset(n=4), seed=0)


def test_tree_of_a_cycle_is_a_clear_error():
    h = Hypothesis("cyclic")
    a = h.claim(Head(1, 0), EXACT, into=h.output())
    b = h.claim(Head(0, 0), EXACT, into=(a, "q"))
    h.connect(a, into=(b, "k"))
    with pytest.raises(HypothesisError, match="cycle"):
        h.tree()
    assert "cannot draw the tree" in str(h)


def test_every_claim_reaches_the_output():
    # A claim must feed something at creation, and every parent already reaches the output, so
    # the public API cannot build a claim that feeds nothing; check what it guards instead.
    h = Hypothesis("h")
    with pytest.raises(HypothesisError, match=r"no output yet; call h.output\(\) first"):
        h.validate_structure()
    with pytest.raises(HypothesisError, match="no output yet"):
        h.root
    out = h.output()
    a = h.claim(Head(1, 0), EXACT, into=out)
    h.claim(Embed(), EXACT, into=(a, "q"))
    h.validate_structure()
    # drop the only path (a -> out) from the graph behind the API's back: validation must notice
    h._graph.remove_edge(a, out)
    with pytest.raises(HypothesisError, match=r"claim Head\(1.0\) feeds nothing"):
        h.validate_structure()


def test_posembed_on_a_shortformer_model():
    shortformer = ModelShape(n_layers=2, n_heads=3, n_ctx=N_CTX, attn_only=True, shortformer=True)
    with pytest.raises(ComponentError, match="PosEmbed: this model uses shortformer positions.*drop the PosEmbed"):
        _single(PosEmbed()).validate(shortformer)
    _single(Embed()).validate(shortformer)
    _single(PosEmbed()).validate(ATTN_ONLY)
    # read from a model's config
    fake = types.SimpleNamespace(cfg=types.SimpleNamespace(
        n_layers=2, n_heads=3, n_ctx=N_CTX, attn_only=True, positional_embedding_type="shortformer"))
    assert ModelShape.of(fake).shortformer
    with pytest.raises(ComponentError, match="shortformer"):
        _single(PosEmbed()).validate(fake)


def test_errors_are_one_tree():
    for err in (HypothesisError, ComponentError, FeatureError, DatasetError, MetricError, ScheduleError):
        assert issubclass(err, ScrubError)
    assert issubclass(ComponentError, HypothesisError)


# ---- features ---------------------------------------------------------------------------------


def _with_feature(feature: Feature) -> Hypothesis:
    h = Hypothesis("feat")
    head = h.claim(Head(1, 0), EXACT, into=h.output())
    h.claim(Embed(), feature, into=(head, "q"))
    return h


@pytest.mark.parametrize(
    "fn, pattern",
    [
        (lambda d: d.tokens[:, :2], r"returned shape \(48, 2\) .*expected \[n\]=\(48,\) or \[n, pos\]=\(48, 7\)"),
        (lambda d: d.tokens[:10, 0], r"returned shape \(10,\)"),
        (lambda d: d.tokens[:, :, None], r"returned shape \(48, 7, 1\)"),
        (lambda d: torch.tensor(3), r"returned shape \(\)"),
    ],
)
def test_a_feature_of_the_wrong_shape_fails_at_plan_time(data, fn, pattern):
    h = _with_feature(Feature("bad", fn))
    with pytest.raises(FeatureError, match=r"Feature 'bad' " + pattern):
        plan(h, data, seed=0)


def test_a_non_deterministic_feature_is_refused(data):
    calls = {"n": 0}

    def flaky(d):
        calls["n"] += 1
        return d.tokens[:, 0] + calls["n"]

    with pytest.raises(FeatureError, match=r"Feature 'flaky' is not deterministic.*torch.Generator"):
        plan(_with_feature(Feature("flaky", flaky)), data, seed=0)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(FeatureError, match="not deterministic"):
        plan(_with_feature(Feature("noise", lambda d: torch.rand(len(d), generator=g))), data, seed=0)


def test_a_feature_returning_a_non_tensor_is_refused(data):
    with pytest.raises(FeatureError, match=r"Feature 'listy' returned list; it must return a torch tensor"):
        plan(_with_feature(Feature("listy", lambda d: d.tokens[:, 0].tolist())), data, seed=0)
    with pytest.raises(FeatureError, match="returned NaN"):
        plan(_with_feature(Feature("nan", lambda d: torch.full((len(d),), float("nan")))), data, seed=0)


def test_feature_errors_come_before_any_forward_pass(attn_model, data):
    calls = []
    handle = attn_model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(FeatureError, match="returned shape"):
            scrub.evaluate(_with_feature(Feature("bad", lambda d: d.tokens[:, :2])), attn_model, data,
                           engine="reference")
        with pytest.raises(ComponentError):
            scrub.evaluate(_single(Head(0, 7)), attn_model, data, engine="reference")
        with pytest.raises(HypothesisError, match="not upstream"):
            h = Hypothesis("bad order")
            p = h.claim(Head(0, 0), EXACT, into=h.output())
            h.claim(Head(1, 0), EXACT, into=(p, "v"))
            scrub.evaluate(h, attn_model, data, engine="reference")
        assert calls == [], "errors must be raised before any forward pass"
        scrub.evaluate(_single(Head(0, 0)), attn_model, data, engine="reference", n_boot=10)
        assert calls, "control: a valid evaluation does run the model (the counter works)"
    finally:
        handle.remove()


def test_ready_made_features(data):
    toks = data.tokens
    assert torch.equal(Feature.token().fn(data), toks)
    prev = Feature.prev_token().fn(data)
    assert torch.equal(prev[:, 1:], toks[:, :-1]) and (prev[:, 0] == -1).all()
    assert Feature.position().evaluate(data).per_position
    anything = Feature.any().evaluate(data)
    assert anything.n_classes == 1 and not anything.per_position
    ex = EXACT.evaluate(data)
    assert torch.equal(ex.ids, torch.arange(len(data))) and ex.n_classes == len(data)
    values = Feature.token().evaluate(data)
    assert values.per_position and values.ids.shape == toks.shape
    # two entries share a class iff they have the same token at the same position
    sizes = values.class_sizes()
    expected = torch.stack([(toks[:, t, None] == toks[None, :, t]).sum(1) for t in range(toks.shape[1])], 1)
    assert torch.equal(sizes, expected)
    with pytest.raises(FeatureError, match=r"has no extras\['nope'\]"):
        Feature.extra("nope").evaluate(data)


# ---- datasets ---------------------------------------------------------------------------------


def _ds(tokens, targets=None, mask=None, **kw):
    targets = tokens.clone() if targets is None else targets
    mask = torch.ones(tokens.shape, dtype=torch.bool) if mask is None else mask
    return Dataset(tokens=tokens, targets=targets, loss_mask=mask, **kw)


def test_dataset_errors():
    tok = torch.randint(0, 5, (4, 3), generator=torch.Generator().manual_seed(0))
    with pytest.raises(DatasetError, match=r"is empty \(tokens shape \(0, 3\)\)"):
        _ds(torch.zeros((0, 3), dtype=torch.long))
    with pytest.raises(DatasetError, match="is empty"):
        _ds(torch.zeros((4, 0), dtype=torch.long))
    with pytest.raises(DatasetError, match=r"targets must have the shape of tokens \(4, 3\), got \(4, 2\)"):
        _ds(tok, targets=tok[:, :2])
    with pytest.raises(DatasetError, match=r"loss_mask must be a bool tensor of shape \(4, 3\)"):
        _ds(tok, mask=torch.ones((4, 2), dtype=torch.bool))
    with pytest.raises(DatasetError, match="loss_mask must be a bool tensor"):
        _ds(tok, mask=torch.ones((4, 3), dtype=torch.long))
    mask = torch.ones((4, 3), dtype=torch.bool)
    mask[1] = False
    mask[3] = False
    with pytest.raises(DatasetError, match=r"rows \[1, 3\] have no scored position"):
        _ds(tok, mask=mask)
    with pytest.raises(DatasetError, match="2-D integer tensor"):
        _ds(tok[0])
    with pytest.raises(DatasetError, match="must be int64"):
        _ds(tok.float(), targets=tok)
    with pytest.raises(DatasetError, match=r"extras\['x'\] must be a tensor with one entry per row"):
        _ds(tok, extras={"x": torch.zeros(3)})
    ok = _ds(tok, extras={"x": torch.arange(4)})
    assert len(ok) == 4 and ok.n_pos == 3
    assert torch.equal(ok.rows(torch.tensor([2, 0])).extras["x"], torch.tensor([2, 0]))
    with pytest.raises(DatasetError, match="needs n >= 1"):
        ok.head(0)
    assert ok.fingerprint() == _ds(tok.clone(), extras={"x": torch.arange(4)}).fingerprint()
    assert ok.fingerprint() != _ds((tok + 1) % 5, extras={"x": torch.arange(4)}).fingerprint()


# ---- evaluate() -------------------------------------------------------------------------------


def test_evaluate_refuses_tokens_outside_the_vocabulary(attn_model):
    d = random_dataset(n=8, vocab=D_VOCAB + 3, seed=5)
    assert int(d.tokens.max()) >= D_VOCAB
    with pytest.raises(DatasetError, match=rf"token ids in \[\d+, {int(d.tokens.max())}\] but the model's vocabulary is 0..{D_VOCAB - 1}"):
        scrub.evaluate(_single(Embed()), attn_model, d, engine="reference")
    neg = random_dataset(n=8)
    neg.tokens[0, 0] = -1
    with pytest.raises(DatasetError, match="vocabulary"):
        scrub.evaluate(_single(Embed()), attn_model, neg, engine="reference")
    bad_target = random_dataset(n=8)
    bad_target.targets[0, 0] = D_VOCAB
    with pytest.raises(DatasetError, match="scored targets outside the model's outputs"):
        scrub.evaluate(_single(Embed()), attn_model, bad_target, engine="reference")


def test_evaluate_refuses_sequences_longer_than_the_context(attn_model):
    d = random_dataset(n=8, pos=N_CTX + 1)
    with pytest.raises(DatasetError, match=rf"sequences of {N_CTX + 1} positions; the model's context is {N_CTX}"):
        scrub.evaluate(_single(Embed()), attn_model, d, engine="reference")


def test_evaluate_refuses_unknown_metric_engine_and_seeds(attn_model, data):
    h = _single(Embed())
    with pytest.raises(MetricError, match=r"unknown metric 'nope'; choose one of \[.*'accuracy'.*\]"):
        scrub.evaluate(h, attn_model, data, metric="nope", engine="reference")
    with pytest.raises(MetricError, match="must be a name"):
        scrub.evaluate(h, attn_model, data, metric=3, engine="reference")
    with pytest.raises(ScrubError, match=r"unknown engine 'warp'; choose one of \[.*'reference'.*\]"):
        scrub.evaluate(h, attn_model, data, engine="warp")
    with pytest.raises(ScrubError, match="seeds must be a positive count or a non-empty list"):
        scrub.evaluate(h, attn_model, data, seeds=[], engine="reference")
    with pytest.raises(MetricError, match=r"must return one value per row, a tensor of shape \(48,\)"):
        scrub.evaluate(h, attn_model, data, metric=lambda logits, batch: logits.mean(), engine="reference", n_boot=10)
    with pytest.raises(MetricError, match=r"needs dataset extras\['wrong_target'\]"):
        scrub.evaluate(h, attn_model, data, metric="logit_diff", engine="reference", n_boot=10)


def test_evaluate_refuses_nan_logits(attn_model, data):
    from conftest import copy_model

    broken = copy_model(attn_model)
    with torch.no_grad():
        broken.unembed.W_U[0, 0] = float("nan")
    with pytest.raises(MetricError, match="NaN logits"):
        scrub.evaluate(_single(Embed()), broken, data, engine="reference", n_boot=10)


def test_evaluate_refuses_a_bad_hypothesis_for_the_model(attn_model, data):
    with pytest.raises(ComponentError, match="attention-only"):
        scrub.evaluate(_single(MLP(1)), attn_model, data, engine="reference")
    h = Hypothesis("pos")
    h.claim(Embed(), EXACT, into=h.output(), positions=[N_POS])
    with pytest.raises(HypothesisError, match="out of range"):
        scrub.evaluate(h, attn_model, data, engine="reference")
    bad_base = _single(Head(5, 0))
    with pytest.raises(ComponentError, match=r"Head\(5.0\)"):
        scrub.evaluate(_single(Embed()), attn_model, data, baseline=bad_base, engine="reference")


def test_plan_refuses_bad_reference_rows(data):
    h = _single(Embed())
    for reference in (torch.tensor([], dtype=torch.long), torch.tensor([len(data)]), torch.tensor([-1]),
                      torch.zeros((2, 2), dtype=torch.long)):
        with pytest.raises(ScheduleError, match="reference rows must be a non-empty 1-D tensor"):
            plan(h, data, seed=0, reference=reference)


def test_removing_the_last_child_resamples_the_parents_inputs_instead_of_making_a_leaf():
    """A claim that loses all its children keeps its meaning (its inputs are not claimed); it
    must not turn into a leaf, which would claim everything upstream of it."""
    h = Hypothesis("h")
    out = h.output()
    a = h.claim(Head(1, 0), EXACT, into=out)
    q = h.claim(Embed(), EXACT, into=(a, "q"))
    variant = h.without(q)
    (node,) = variant.tree().children
    assert node.claim.scrub_inputs and not node.is_leaf
    assert "inputs resampled" in str(variant)
    (kept,) = h.tree().children
    assert not kept.claim.scrub_inputs
    leaf = Hypothesis("leaf")
    leaf.claim(Head(1, 0), EXACT, into=leaf.output())
    assert leaf.tree().children[0].is_leaf
