"""The indirect-object-identification (IOI) circuit of GPT-2 small, as causal-scrubbing hypotheses.

Source: Wang, Variengien, Conmy, Shlegeris and Steinhardt 2022, "Interpretability in the Wild: a
Circuit for Indirect Object Identification in GPT-2 small" (arXiv 2211.00593; section numbers
below are those of the arXiv paper). The paper finds 26 heads in 7 classes; heads are written
``layer.head`` as in the paper:

=====================  ===========================================  =======
class                  heads                                        section
=====================  ===========================================  =======
name movers            9.9, 9.6, 10.0                               3.1
negative name movers   10.7, 11.10                                  3.1
S-inhibition           7.3, 7.9, 8.6, 8.10                          3.2
induction              5.5, 5.8, 5.9, 6.9                           3.3
duplicate token        0.1, 0.10, 3.0                               3.3
previous token         2.2, 4.11                                    3.3
backup name movers     10.10, 10.6, 10.2, 10.1, 11.2, 9.7, 9.0,     3.4
                       11.9
=====================  ===========================================  =======

The paper's story, read as claims (what each head's output carries, into which port of whom):

* **Name movers** (3.1) attend from END to the IO name and copy it into the logits: they feed the
  output at END and carry the feature **"IO name"**. Their keys and values read the names at the
  name positions: the token embedding feeds their ``k`` and ``v`` with the token at each position.
  **Negative name movers** (3.1) also attend to the names and write against IO: the same claim
  (their output is a function of the IO name). **Backup name movers** (3.4) behave like name
  movers (mostly latent on clean inputs; they compensate when the name movers are ablated): the
  same claim.
* **S-inhibition heads** (3.2) attend from END to S2 and tell the name movers' *queries* which name
  not to attend to. The paper splits their output into a "token signal" (the S name) and a
  "position signal" (where S1 is, relative to IO), the latter the stronger. They feed the ``q`` of
  every (negative, backup) name mover at END and carry **"S name + which name is duplicated"**
  (`position_signal_only` keeps just the position).
* **Induction heads** and **duplicate-token heads** (3.3) at S2 detect that S is repeated (the
  induction heads by attending to S1+1, the duplicate-token heads by attending to S1) and write
  this, with S1's position, at S2. They feed the ``v`` of the S-inhibition heads at S2 and carry
  the same feature as the S-inhibition heads. The duplicate-token heads are leaves (their whole
  input is a prompt with the same S and family). The induction heads read, Olsson-style, the
  current token through ``q`` and ``v`` (token embedding) and, through ``k``, the previous token,
  carried by the **previous-token heads** (3.3) at the positions after the first two names (S1+1
  is one of them).

**Positions.** The hypotheses restrict edges to the fixed positions of the `scrub.tasks.ioi`
layout (`scrub.tasks.ioi.ioi_layout`: with BOS, names at 2 and 4, S2 at 10, END at 14): name movers
-> output and S-inhibition -> name movers' ``q`` at END, induction and duplicate-token heads ->
S-inhibition ``v`` at S2, previous-token heads -> induction ``k`` after the names. Every prompt
shares the layout, so each "other" datum (the rows feeding what a claim does not cover, e.g. the
S-inhibition heads' ``q`` and ``k``) has the same sentence structure as the reference: the claim
that the S-inhibition heads' attention END -> S2 depends only on the layout is implicit. `dataset`
checks that the GPT-2-tokenised prompts have this layout.

Everything here is built without loading GPT-2: `hypotheses()` builds graphs only; `model()` and
`dataset()` download GPT-2 small and its tokenizer (internet needed, once).

Run: ``scrub run hypotheses/ioi.py``. The prompts score only END, whose target is the IO name, so
the default cross-entropy is the loss of the IO name; the paper's metric is the logit difference
logit(IO) - logit(S): ``scrub.evaluate(h, model(), dataset(), metric=METRIC)``.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import scrub
from scrub import Embed, Feature, Head, Hypothesis, MLP
from scrub.tasks.ioi import IOI_NAMES, ioi, ioi_features, ioi_layout, is_single_token


def _heads(*names: str) -> tuple[Head, ...]:
    return tuple(Head(int(layer), int(head)) for layer, head in (n.split(".") for n in names))


NAME_MOVERS = _heads("9.9", "9.6", "10.0")
NEGATIVE_NAME_MOVERS = _heads("10.7", "11.10")
BACKUP_NAME_MOVERS = _heads("10.10", "10.6", "10.2", "10.1", "11.2", "9.7", "9.0", "11.9")
S_INHIBITION = _heads("7.3", "7.9", "8.6", "8.10")
INDUCTION = _heads("5.5", "5.8", "5.9", "6.9")
DUPLICATE_TOKEN = _heads("0.1", "0.10", "3.0")
PREVIOUS_TOKEN = _heads("2.2", "4.11")
LAYOUT = ioi_layout()  # {"n1_pos": 2, "n2_pos": 4, "s2_pos": 10, "end_pos": 14, "n_pos": 15}

METRIC = "logit_diff"


def _label(head: Head) -> str:
    return f"{head.layer}.{head.head}"


def circuit(
    name: str = "IOI circuit (Wang et al. 2022)",
    *,
    name_movers: Sequence[Head] = NAME_MOVERS,
    negative_name_movers: Sequence[Head] = NEGATIVE_NAME_MOVERS,
    backup_name_movers: Sequence[Head] = BACKUP_NAME_MOVERS,
    s_inhibition: Sequence[Head] = S_INHIBITION,
    induction: Sequence[Head] = INDUCTION,
    duplicate_token: Sequence[Head] = DUPLICATE_TOKEN,
    previous_token: Sequence[Head] = PREVIOUS_TOKEN,
    s_signal: str = "s_and_duplicated",
    mover_inputs: bool = True,
    extended_embedding: bool = False,
    layout: Optional[dict] = None,
) -> Hypothesis:
    """The IOI circuit as one hypothesis graph; each head class can be changed or left out (``()``).

    Args:
        name: the hypothesis's name in reports.
        name_movers, negative_name_movers, backup_name_movers: heads feeding the output at END
            with the IO name.
        s_inhibition: heads feeding the name movers' ``q`` at END.
        induction, duplicate_token: heads feeding the S-inhibition heads' ``v`` at S2.
        previous_token: heads feeding the induction heads' ``k`` after the first two names.
        s_signal: the `scrub.tasks.ioi.ioi_features` key the S-inhibition, induction and
            duplicate-token heads carry: ``"s_and_duplicated"`` (token and position signal) or
            ``"duplicated_first"`` (position signal only).
        mover_inputs: claim the name movers' inputs (``q`` from the S-inhibition heads, ``k`` and
            ``v`` from the embedding). False makes them leaves: everything upstream of a name mover
            runs on a prompt with the same IO name (and the rest of the circuit is left out).
        extended_embedding: also claim MLP 0 (GPT-2's "extended embedding") with the token at each
            position wherever the token embedding is claimed.
        layout: positions (`scrub.tasks.ioi.ioi_layout`); default: the default templates with BOS.
    """
    lay = dict(LAYOUT if layout is None else layout)
    end, s2 = lay["end_pos"], lay["s2_pos"]
    after_names = (lay["n1_pos"] + 1, lay["n2_pos"] + 1)  # S1 + 1 is one of these
    features = ioi_features()  # one Feature object per kind, shared by every claim below
    token, prev_token = Feature.token(), Feature.prev_token()
    carried = features[s_signal]

    h = Hypothesis(name)
    out = h.output()

    def embed_into(targets, label: str) -> None:
        h.claim(Embed(), token, into=targets, name=f"Embed -> {label}")
        if extended_embedding:
            h.claim(MLP(0), token, into=targets, name=f"MLP0 -> {label}")

    # 3.1 / 3.4: name movers (positive, negative, backup) copy the IO name into the logits at END.
    movers = []
    for group, kind in ((name_movers, "NM"), (negative_name_movers, "negative NM"), (backup_name_movers, "backup NM")):
        for head in group:
            movers.append(h.claim(head, features["io"], into=out, positions=[end], name=f"{kind} {_label(head)}"))
    if not mover_inputs:
        return h
    if movers:
        # their keys and values read the names from the token embedding (every position)
        embed_into([(m, port) for m in movers for port in ("k", "v")], "name movers k,v")

    # 3.2: S-inhibition heads tell the name movers' queries, at END, which name is S.
    inhibitors = [
        h.claim(head, carried, into=[(m, "q") for m in movers], positions=[end], name=f"S-inhibition {_label(head)}")
        for head in (s_inhibition if movers else ())
    ]

    # 3.3: induction and duplicate-token heads at S2 signal that S is duplicated (and where S1 is).
    if inhibitors:
        v_ports = [(s, "v") for s in inhibitors]
        inductions = [
            h.claim(head, carried, into=v_ports, positions=[s2], name=f"induction {_label(head)}")
            for head in induction
        ]
        for head in duplicate_token:
            h.claim(head, carried, into=v_ports, positions=[s2], name=f"duplicate-token {_label(head)}")
        if inductions:
            embed_into([(i, port) for i in inductions for port in ("q", "v")], "induction q,v")
            for head in previous_token:
                # 3.3: previous-token heads move the token before S1+1 (that is, S) into its key
                later = [(i, "k") for i in inductions if i.component.layer > head.layer]
                if later:
                    h.claim(head, prev_token, into=later, positions=after_names, name=f"previous-token {_label(head)}")
    return h


def full() -> Hypothesis:
    """All 26 heads of the paper with the claims above."""
    return circuit()


def name_movers_only() -> Hypothesis:
    """The three name movers copy the IO name into the logits; nothing else matters (leaves)."""
    return circuit("name movers only", negative_name_movers=(), backup_name_movers=(), mover_inputs=False)


def without_backup() -> Hypothesis:
    """The circuit without the backup name movers (3.4: they matter mainly when the NMs are ablated)."""
    return circuit("IOI circuit without backup name movers", backup_name_movers=())


def position_signal_only() -> Hypothesis:
    """The circuit, but the S-inhibition / induction / duplicate-token heads carry only which name
    is duplicated (the "position signal"), not the S name."""
    return circuit("IOI circuit, position signal only", s_signal="duplicated_first")


def hypotheses() -> list[Hypothesis]:
    """The hypotheses `scrub run` evaluates (graphs only: no model is loaded)."""
    return [full(), name_movers_only(), without_backup(), position_signal_only()]


@functools.lru_cache(maxsize=1)
def model():
    """GPT-2 small (downloads the weights on first use): a HookedTransformer under TransformerLens 3,
    the HuggingFace model under TransformerLens 4 (`scrub.load_model`'s hub path)."""
    return scrub.load_model("gpt2")


def dataset(n: int = 512, seed: int = 0):
    """IOI prompts tokenised for GPT-2, in the layout the hypotheses' positions assume.

    Names, places and objects that GPT-2 splits into several tokens are left out (and templates
    off the common layout), so the file runs unchanged if one of the defaults is not a single token.

    Raises:
        scrub.DatasetError: the prompts' layout differs from `LAYOUT`.
    """
    tokenizer = model().tokenizer
    names = [w for w in IOI_NAMES if is_single_token(tokenizer, " " + w)]
    data = ioi(tokenizer, n=n, seed=seed, names=names, fixed_layout=True)
    found = ioi_layout(data)
    if found != LAYOUT:
        raise scrub.DatasetError(
            f"hypotheses/ioi.py: GPT-2's tokenizer gives the IOI prompts the layout {found}, but the "
            f"hypotheses assume {LAYOUT}; pass circuit(layout=scrub.tasks.ioi.ioi_layout(data))"
        )
    return data
