"""Hook backends of the reference engine: run a source model with hooks, in terms of components and ports.

The reference engine (`scrub.engine.reference`) evaluates a schedule's tree one node at a time;
everything it asks of the model goes through a backend with one small interface:

* ``run(tokens, reads, patches)``: one forward pass on ``tokens`` ``[n, pos]`` in which each
  ``(component, port, delta)`` of ``patches`` adds ``delta`` ``[n, pos, d_model]`` to that
  component's port input (the residual stream the port reads); returns the output of every
  component in ``reads`` from that same pass (``[n, pos, d_model]``; the logits for `Output`);
* ``logits(tokens)``: the unpatched logits;
* ``check(component)``: refuse a component the model does not have (before any forward pass);
* ``session()``: a context to run a schedule in (TransformerLens: per-head hooks switched on,
  settings restored after);
* post-norm models (``post_norms``, Gemma-2): ``attention_sums(tokens, layers)``, per layer the
  unpatched input ``sum_h o_h + b_O`` of its post-attention norm, and ``attn_write(layer, sum)``,
  that norm (the model's own module) applied to a given sum.

Two backends, chosen from the model's type by `backend_for`; anything else is refused with
`UnsupportedModelError` naming the type:

`TransformerLensBackend` (``HookedTransformer``; written against hook names only, so a
TransformerLens 4 ``TransformerBridge`` whose per-head hooks fire works too) reads ``hook_embed``,
``hook_pos_embed``, ``attn.hook_result`` (one head's slice), ``hook_mlp_out``, and adds deltas
at ``hook_{q,k,v}_input`` (one head's slice), ``hook_mlp_in`` and the last ``hook_resid_post``.

`HuggingFaceBackend` (plain HF causal LMs of the families in `scrub.model.hf_modules`) uses
PyTorch forward hooks and pre-hooks on the HF modules; its semantics are in `scrub.engine.backends.hf`.
Neither backend reads the model view: the reference engine stays an independent check of it.
"""

from __future__ import annotations

from typing import Any

from scrub.engine.backends.base import HookBackend, Patch, check_component
from scrub.errors import UnsupportedModelError
from scrub.model.sources import is_transformer_lens

__all__ = ["HookBackend", "Patch", "backend_for", "check_component"]


def backend_for(model: Any) -> HookBackend:
    """The hook backend for ``model``: TransformerLens hooks or HuggingFace module hooks.

    Raises:
        UnsupportedModelError: ``model`` is neither a TransformerLens model nor a HuggingFace
            causal LM of a supported family (or it uses an unsupported setting).
    """
    if is_transformer_lens(model):
        from scrub.engine.backends.tl import TransformerLensBackend

        return TransformerLensBackend(model)
    from scrub.model.hf_modules import is_hf_model

    if is_hf_model(model):
        from scrub.engine.backends.hf import HuggingFaceBackend

        return HuggingFaceBackend(model)
    raise UnsupportedModelError(
        f"the reference engine runs TransformerLens models (HookedTransformer, TransformerBridge) and "
        f"HuggingFace causal LMs; got {type(model).__module__}.{type(model).__name__}; load the model with "
        f"scrub.load_model or transformers.AutoModelForCausalLM"
    )
