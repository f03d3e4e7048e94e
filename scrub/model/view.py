"""The model view: a decoder-only transformer's weights as plain tensors, and pure functions that
evaluate ONE component on given port inputs, batched over rows.

The view is what the batched scrubbing engine runs. Every function is pure (no hooks, no module
state), vectorised over the leading batch axis, and computes in the dtype and on the device of
the weights. `ModelView.forward` is built only from the component functions (embeddings, heads,
MLPs, unembedding) summed into the residual stream, and equals the source model's logits
(TransformerLens, or HuggingFace for the families in `scrub.model.hf_config`) for every
supported configuration. The architecture pieces live in their own modules: `norms`,
`rotary`, `attention` (projections, masks, soft-capping, mixing) and `mlps`.

Padding masks are not modelled: every token is a real token. (A TransformerLens model with a
left-padding tokenizer masks leading pad tokens in its own forward; the view does not.)
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
import torch
from jaxtyping import Float, Int
from torch import Tensor

from scrub.errors import ComponentError, DatasetError, ScheduleError
from scrub.model import attention
from scrub.model.clean_pass import CleanPass, run
from scrub.model.config import ViewConfig, config_from_hooked
from scrub.model.mlps import gated_mlp, linear, plain_mlp
from scrub.model.norms import normalise
from scrub.model.rotary import rotate
from scrub.model.weights import expected_shapes, weights_from_hooked

__all__ = ["ModelView", "CleanPass"]


@attrs.frozen(eq=False)
class ModelView:
    """A decoder-only transformer's weights as plain tensors, with one pure function per component.

    Build it with `ModelView.from_model` (a ``HookedTransformer`` or a HuggingFace causal LM).
    Weight shapes (``L`` layers, ``H`` query heads, ``Hk`` key/value heads)::

        W_E [d_vocab, d_model] (times embed_scale)   W_pos [n_ctx, d_model] (learned positions)
        W_Q [L, H, d_model, d_head]    W_K, W_V [L, Hk, d_model, d_head]
        b_Q [L, H, d_head]             b_K, b_V [L, Hk, d_head]
        W_O [L, H, d_head, d_model]             b_O [L, d_model]
        W_in [L, d_model, d_mlp]  b_in [L, d_mlp]  W_out [L, d_mlp, d_model]  b_out [L, d_model]
        W_gate [L, d_model, d_mlp]  b_gate [L, d_mlp] (gated MLPs)
        ln1_w, ln1_b, ln2_w, ln2_b [L, d_model]   ln_final_w, ln_final_b [d_model]
        ln_attn_out_w, ln_mlp_out_w [L, d_model] (post-norms)
        W_U [d_model, d_vocab_out]  b_U [d_vocab_out]
        rotary_inv_freq [rotary_dim / 2] (float32; the source's own, where it holds them)

    MLP weights are ``None`` for attention-only models; norm gains and shifts exist where the
    normalisation has them. Biases a model lacks are zeros (adding zero is exact). All tensors
    are detached copies sharing one dtype and device.
    """

    config: ViewConfig
    W_E: Tensor
    W_pos: Optional[Tensor]
    W_Q: Tensor
    b_Q: Tensor
    W_K: Tensor
    b_K: Tensor
    W_V: Tensor
    b_V: Tensor
    W_O: Tensor
    b_O: Tensor
    W_U: Tensor
    b_U: Tensor
    W_in: Optional[Tensor] = None
    b_in: Optional[Tensor] = None
    W_gate: Optional[Tensor] = None
    b_gate: Optional[Tensor] = None
    W_out: Optional[Tensor] = None
    b_out: Optional[Tensor] = None
    ln1_w: Optional[Tensor] = None
    ln1_b: Optional[Tensor] = None
    ln2_w: Optional[Tensor] = None
    ln2_b: Optional[Tensor] = None
    ln_attn_out_w: Optional[Tensor] = None
    ln_mlp_out_w: Optional[Tensor] = None
    ln_final_w: Optional[Tensor] = None
    ln_final_b: Optional[Tensor] = None
    rotary_inv_freq: Optional[Tensor] = None

    def __attrs_post_init__(self) -> None:
        self._check_shapes()

    # ---------------------------------------------------------------------------- construction

    @classmethod
    def from_hooked(cls, model: Any) -> "ModelView":
        """Read a TransformerLens ``HookedTransformer`` into a view (weights copied, detached).

        Raises:
            UnsupportedModelError: the model uses a setting the view does not implement (rotary
                or ALiBi positions, RMSNorm, grouped-query attention, gated or MoE MLPs,
                parallel attention/MLP, soft caps, qk-norm, local attention, post-norm, ...).
                The message names the setting and says what is supported.
        """
        config = config_from_hooked(model)
        weights = weights_from_hooked(model, config)
        return cls(config=config, **weights)

    @classmethod
    def from_model(cls, model: Any) -> "ModelView":
        """Read a TransformerLens ``HookedTransformer`` or a HuggingFace causal LM (a
        ``transformers.PreTrainedModel`` of a family in `scrub.model.hf_config.FAMILIES`) into
        a view; weights copied and detached, in the model's own dtype.

        Raises:
            UnsupportedModelError: an unknown model type, or a setting the view does not
                implement (the message names it), before any forward pass.
        """
        from scrub.model.sources import config_from_model, weights_from_model

        config = config_from_model(model)
        return cls(config=config, **weights_from_model(model, config))

    def _check_shapes(self) -> None:
        expected = expected_shapes(self.config)
        for name, shape in expected.items():
            t = getattr(self, name)
            got = None if t is None else tuple(t.shape)
            if name == "rotary_inv_freq" and t is None:  # optional: computed from rotary_base
                continue
            if got != shape:
                raise ValueError(f"ModelView.{name}: expected shape {shape}, got {got}")
            if name == "rotary_inv_freq":  # float32 whatever the model's dtype
                continue
            if t is not None and (t.dtype != self.W_E.dtype or t.device != self.W_E.device):
                raise ValueError(
                    f"ModelView.{name} is {t.dtype} on {t.device}; every weight must share "
                    f"W_E's dtype and device ({self.W_E.dtype}, {self.W_E.device})"
                )

    def to(
        self, device: Optional[torch.device | str] = None, dtype: Optional[torch.dtype] = None
    ) -> "ModelView":
        """A copy of the view with every weight moved to ``device`` and/or cast to ``dtype``."""
        moved = {}
        for f in attrs.fields(type(self)):
            t = getattr(self, f.name)
            if f.name == "rotary_inv_freq":
                moved[f.name] = None if t is None else t.to(device=device)
            elif f.name != "config":
                moved[f.name] = None if t is None else t.to(device=device, dtype=dtype)
        return type(self)(config=self.config, **moved)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights; every function computes in it."""
        return self.W_E.dtype

    @property
    def device(self) -> torch.device:
        """The device of the weights; every function computes on it."""
        return self.W_E.device

    # ------------------------------------------------------------------------------- helpers

    def _layer(self, layer: int) -> int:
        n_layers = self.config.n_layers
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < n_layers:
            raise ComponentError(
                f"layer {layer!r} does not exist: the model has layers 0..{n_layers - 1}"
            )
        return layer

    def _check_positions(self, n_pos: int) -> None:
        if n_pos > self.config.n_ctx:
            raise DatasetError(
                f"sequences of {n_pos} positions are longer than the model's context "
                f"(n_ctx={self.config.n_ctx}); truncate the dataset to at most {self.config.n_ctx}"
            )

    def _norm(self, x: Tensor, w: Optional[Tensor], b: Optional[Tensor]) -> Tensor:
        """The model's normalisation (`scrub.model.norms`) of ``x`` with gain ``w``, shift ``b``."""
        return normalise(self.config.normalization, x, w, b, self.config.eps)

    def _layer_norm(self, name: str, layer: int, x: Tensor) -> Tensor:
        """Norm ``name`` (``"ln1"``, ``"ln2"``) of ``layer`` applied to ``x``."""
        w, b = getattr(self, f"{name}_w"), getattr(self, f"{name}_b")
        return self._norm(x, None if w is None else w[layer], None if b is None else b[layer])

    def _ln1(self, layer: int, x: Tensor) -> Tensor:
        return self._layer_norm("ln1", layer, x)

    def _port(self, layer: int, heads: slice, port: str, x_n: Tensor, positions: Tensor) -> Tensor:
        """Port ``port`` of the query heads ``heads`` on the normalised input ``x_n [b, p, d]`` at
        ``positions``: projected, then rotated (q, k of rotary models). ``[b, h, p, e]``; for
        k and v ``h`` counts the key/value heads the query heads read."""
        c = self.config
        if port == "q":
            W, b = self.W_Q[layer, heads], self.b_Q[layer, heads]  # [h, d, e], [h, e]
        elif port in ("k", "v"):
            kv = attention.key_value_heads(c, heads)
            W = (self.W_K if port == "k" else self.W_V)[layer, kv]  # [hk, d, e]
            b = (self.b_K if port == "k" else self.b_V)[layer, kv]  # [hk, e]
        else:
            raise ComponentError(f"head port {port!r} does not exist; use 'q', 'k' or 'v'")
        y = attention.project(W, b, attention.with_positions(c, self.W_pos, port, x_n, positions))  # [b, h, p, e]
        if c.positional == "rotary" and port in ("q", "k"):
            assert c.rotary_dim is not None  # checked by ViewConfig
            y = rotate(y, positions, c.rotary_dim, c.rotary_base, c.rotary_pairing, self.rotary_inv_freq)  # [b, h, p, e]
        return y

    def _attend(
        self,
        layer: int,
        heads: slice,
        q_in: Tensor,
        k_in: Tensor,
        v_in: Tensor,
        q_pos: Optional[Tensor] = None,
        keep: Optional[list] = None,
    ) -> Tensor:
        """Attention of layer ``layer`` for the heads ``heads`` (``slice(h, h + 1)``: head ``h``;
        ``slice(None)``: every head); see `scrub.model.attention`.

        Keys and values sit at positions ``0..pk-1``; queries at ``q_pos`` (``[pq]`` or
        ``[b, pq]``; default ``0..pk-1``). Returns ``z``, the heads' mixed values before
        ``W_O``: ``[b, h, pq, d_head]``. ``keep``, a list, receives the projected q, k and v.
        """
        if k_in.shape != v_in.shape or q_in.ndim != 3 or k_in.ndim != 3 or q_in.shape[0] != k_in.shape[0]:
            raise ScheduleError(
                f"head inputs must be [batch, pos, d_model] with k and v of one shape; got "
                f"q {tuple(q_in.shape)}, k {tuple(k_in.shape)}, v {tuple(v_in.shape)}"
            )
        if q_in.shape[-1] != self.config.d_model or k_in.shape[-1] != self.config.d_model:
            raise ScheduleError(
                f"head inputs must have d_model={self.config.d_model} features, "
                f"got {q_in.shape[-1]} (q) and {k_in.shape[-1]} (k, v)"
            )
        n_keys = k_in.shape[1]
        self._check_positions(n_keys)
        q_pos = attention.query_positions(q_pos, q_in.shape[1], n_keys, self.device)
        keys = torch.arange(n_keys, device=self.device)
        # one norm for inputs that are one tensor (as in a clean pass)
        normed: dict[int, Tensor] = {}

        def prepared(x: Tensor) -> Tensor:
            if id(x) not in normed:
                normed[id(x)] = self._ln1(layer, x)  # [b, p, d_model]
            return normed[id(x)]

        q = self._port(layer, heads, "q", prepared(q_in), q_pos)  # [b, h, pq, e]
        k = self._port(layer, heads, "k", prepared(k_in), keys)  # [b, hk, pk, e]
        v = self._port(layer, heads, "v", prepared(v_in), keys)  # [b, hk, pk, e]
        if keep is not None:
            keep.extend((q, k, v))
        return attention.mix(self.config, layer, q, k, v, q_pos)  # [b, h, pq, e]

    def head_projection(
        self, layer: int, head: int, port: str, x: Float[Tensor, "b p d"], positions: Int[Tensor, "p"]
    ) -> Float[Tensor, "b p e"]:
        """Port ``port`` (``"q"``, ``"k"`` or ``"v"``) of head ``head`` of ``layer`` on the port input
        ``x`` sitting at ``positions`` (``[p]`` or ``[b, p]``): ``ln1``, ``W_pos`` for q and k of a
        shortformer model, then ``W_port`` and ``b_port``, then (q and k of a rotary model) the
        rotation for ``positions``. ``[b, p, d_head]``. ``head`` is a query head: its k and v
        ports read its key/value head ``head // config.kv_group``."""
        layer = self._layer(layer)
        if not isinstance(head, int) or isinstance(head, bool) or not 0 <= head < self.config.n_heads:
            raise ComponentError(f"head {head!r} does not exist: layer {layer} has heads 0..{self.config.n_heads - 1}")
        pos = torch.as_tensor(positions, dtype=torch.long, device=self.device)
        return self._port(layer, slice(head, head + 1), port, self._ln1(layer, x), pos)[:, 0]  # [b, p, e]

    def head_output(
        self,
        layer: int,
        head: int,
        q: Float[Tensor, "b q e"],
        k: Float[Tensor, "b k e"],
        v: Float[Tensor, "b k e"],
        q_positions: Optional[Int[Tensor, "b q"]] = None,
    ) -> Float[Tensor, "b q d"]:
        """Head ``head`` of ``layer`` from its projected queries (at ``q_positions``, default
        ``0..k-1``), keys and values (at ``0..k-1``), as `head_projection` returns them (q and k
        already rotated in rotary models): attention (masks, soft cap), then ``W_O`` (no ``b_O``)."""
        layer = self._layer(layer)
        q_pos = attention.query_positions(q_positions, q.shape[1], k.shape[1], self.device)
        z = attention.mix(self.config, layer, q[:, None], k[:, None], v[:, None], q_pos)  # [b, 1, q, e]
        return z[:, 0] @ self.W_O[layer, head]  # [b, q, d_model]

    def _per_head_out(self, layer: int, heads: Any, z: Tensor) -> Tensor:
        """``z [b, h, p, e]`` through each selected head's ``W_O``: ``[b, p, h, d_model]``."""
        return torch.einsum("bhpe,hed->bphd", z, self.W_O[layer, heads])  # [b, p, h, d_model]

    # ------------------------------------------------------------------------------ components

    def embed(self, tokens: Int[Tensor, "b p"]) -> Float[Tensor, "b p d"]:
        """Token embedding ``W_E[tokens]`` (the output of ``Embed()``)."""
        if tokens.ndim != 2 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise DatasetError(
                f"tokens must be an integer tensor [batch, pos], got {tokens.dtype} "
                f"of shape {tuple(tokens.shape)}"
            )
        return self.W_E[tokens.to(self.device)]  # [b, p, d_model]

    def pos_embed(self, n_rows: int, n_pos: int) -> Float[Tensor, "b p d"]:
        """``W_pos[:n_pos]`` broadcast to ``n_rows`` rows (a view; do not write into it).

        For ``"standard"`` positions this is the output of ``PosEmbed()``; for
        ``"shortformer"`` it is the vector added to the normalised q and k inputs of every head
        (it is not part of the residual stream there; see `CleanPass.pos`).
        """
        self._check_positions(n_pos)
        if self.W_pos is None:
            raise ScheduleError(
                f"pos_embed: the model has {self.config.positional!r} positions, no learned "
                f"positional embedding; use it only when config.positional == 'standard'"
            )
        return self.W_pos[:n_pos].expand(n_rows, n_pos, self.config.d_model)  # [b, p, d_model]

    def heads(
        self,
        layer: int,
        head_index: Int[Tensor, "b"],
        q_in: Float[Tensor, "b p d"],
        k_in: Float[Tensor, "b p d"],
        v_in: Float[Tensor, "b p d"],
        q_positions: Optional[Int[Tensor, "b q"]] = None,
    ) -> Float[Tensor, "b q d"]:
        """Output of head ``head_index[i]`` of ``layer`` for row ``i``, given its port inputs.

        ``q_in``, ``k_in`` and ``v_in`` are residual-stream values (before ``ln1``) at the head's
        q, k and v ports. Each is normalised by ``ln1`` separately; for shortformer models
        ``W_pos`` is added to the normalised q and k inputs (not v); causal models mask later
        key positions. Returns ``z @ W_O[h]`` without ``b_O``, which equals TransformerLens's
        ``hook_result[:, :, h]`` when its ``hook_q_input``/``hook_k_input``/``hook_v_input`` hold
        these inputs at head ``h``.

        By default q, k and v cover the same positions ``0..p-1``. With ``q_positions``
        (``[q]``, or ``[b, q]`` for a position set per row) ``q_in`` holds the query inputs at
        those positions only, ``k_in`` and ``v_in`` the key/value inputs at ``0..p-1``, and the
        result is the head's output at the query positions, ``[b, q, d_model]``. For a causal
        model ``k_in``/``v_in`` need only reach the last query position; keys past a row's
        query are masked, so what they hold there does not matter.

        Rows are grouped by head, one batched call per head used. Checking ``head_index``'s
        range reads two numbers from the device.
        """
        layer = self._layer(layer)
        head_index = torch.as_tensor(head_index, device=self.device)
        if head_index.ndim != 1 or head_index.shape[0] != q_in.shape[0]:
            raise ScheduleError(
                f"head_index must be a 1-D tensor with one head per row ({q_in.shape[0]}), "
                f"got shape {tuple(head_index.shape)}"
            )
        if head_index.dtype.is_floating_point or head_index.dtype == torch.bool:
            raise ScheduleError(f"head_index must be an integer tensor, got {head_index.dtype}")
        if head_index.numel() and (
            int(head_index.min()) < 0 or int(head_index.max()) >= self.config.n_heads
        ):
            raise ComponentError(
                f"head_index has values outside 0..{self.config.n_heads - 1} "
                f"(layer {layer} has {self.config.n_heads} heads)"
            )
        unique = torch.unique(head_index)
        q_pos = None if q_positions is None else torch.as_tensor(q_positions, device=self.device)
        if len(unique) == 1:  # one head: its weights broadcast over every row
            h = int(unique[0])
            z = self._attend(layer, slice(h, h + 1), q_in, k_in, v_in, q_pos)  # [b, 1, q, e]
            return z[:, 0] @ self.W_O[layer, h]  # [b, q, d_model]
        # several heads: one call per head on the rows that use it
        per_row = q_pos is not None and q_pos.ndim == 2
        out = q_in.new_empty(q_in.shape)  # [b, q, d_model]
        for h in unique.tolist():
            rows = (head_index == h).nonzero().flatten()
            pos = q_pos[rows] if per_row else q_pos
            z = self._attend(layer, slice(h, h + 1), q_in[rows], k_in[rows], v_in[rows], pos)  # [r, 1, q, e]
            out[rows] = z[:, 0] @ self.W_O[layer, h]  # [r, q, d_model]
        return out

    def all_heads(
        self,
        layer: int,
        q_in: Float[Tensor, "b p d"],
        k_in: Float[Tensor, "b p d"],
        v_in: Float[Tensor, "b p d"],
    ) -> Float[Tensor, "b p h d"]:
        """Every head of ``layer`` on the same port inputs: ``[b, p, n_heads, d_model]``.

        Head ``h`` of the result equals ``heads(layer, full(h), q_in, k_in, v_in)``; the same
        code computes both.
        """
        layer = self._layer(layer)
        z = self._attend(layer, slice(None), q_in, k_in, v_in)  # [b, H, p, e]
        return self._per_head_out(layer, slice(None), z)  # [b, p, H, d_model]

    def attn_bias(self, layer: int) -> Float[Tensor, "d"]:
        """``b_O`` of ``layer``: added once to the residual stream, not part of any head."""
        return self.b_O[self._layer(layer)]  # [d_model]

    def mlp(self, layer: int, x: Float[Tensor, "b p d"]) -> Float[Tensor, "b p d"]:
        """Output of the MLP of ``layer`` given its input ``x`` (residual stream before ``ln2``).

        Applies ``ln2``, ``W_in``, ``b_in``, the activation (times the gate ``x W_gate +
        b_gate`` for gated MLPs), ``W_out`` and ``b_out``, then the post-MLP norm of a post-norm
        model: what the MLP adds to the residual stream. Equals TransformerLens's
        ``hook_mlp_out`` when its ``hook_mlp_in`` holds ``x`` (HuggingFace: the MLP's residual
        write when the block's MLP input norm reads ``x``).
        """
        layer = self._layer(layer)
        if self.config.attn_only or self.W_in is None:
            raise ComponentError(
                f"MLP({layer}) does not exist: the model is attention-only; claim heads or "
                f"embeddings instead"
            )
        assert self.b_in is not None and self.W_out is not None and self.b_out is not None
        c = self.config
        x_n = self._layer_norm("ln2", layer, x)  # [b, p, d_model]
        act = c.act_fn or "relu"
        if c.gated_mlp:
            assert self.W_gate is not None and self.b_gate is not None
            out = gated_mlp(
                x_n, act, self.W_gate[layer], self.b_gate[layer], self.W_in[layer], self.b_in[layer],
                self.W_out[layer], self.b_out[layer],
            )  # [b, p, d_model]
        else:
            out = plain_mlp(x_n, act, self.W_in[layer], self.b_in[layer], self.W_out[layer], self.b_out[layer])  # [b, p, d_model]
        if c.post_norms:
            assert self.ln_mlp_out_w is not None
            out = self._norm(out, self.ln_mlp_out_w[layer], None)  # [b, p, d_model]
        return out

    def attn_write(
        self, layer: int, heads_sum: Float[Tensor, "b p d"], *, with_bias: bool = True
    ) -> Float[Tensor, "b p d"]:
        """What the attention of ``layer`` adds to the residual stream given the sum of its
        heads' outputs: ``heads_sum + b_O`` (``with_bias=False``: ``heads_sum`` already holds
        ``b_O``), then the post-attention norm of a post-norm model."""
        out = heads_sum + self.attn_bias(layer) if with_bias else heads_sum  # [b, p, d_model]
        if self.config.post_norms:
            assert self.ln_attn_out_w is not None
            out = self._norm(out, self.ln_attn_out_w[layer], None)  # [b, p, d_model]
        return out

    def unembed(self, resid: Float[Tensor, "b p d"]) -> Float[Tensor, "b p v"]:
        """Logits from the final residual stream: ``ln_final``, then ``W_U`` and ``b_U`` (then
        the final-logit soft cap of a model that has one)."""
        x = self._norm(resid, self.ln_final_w, self.ln_final_b)  # [b, p, d_model]
        return attention.soft_cap(linear(x, self.W_U, self.b_U), self.config.logit_softcap)  # [b, p, d_vocab_out]

    # ----------------------------------------------------------------------------- full passes

    def clean_pass(self, tokens: Int[Tensor, "b p"], *, logits: bool = True) -> CleanPass:
        """One forward pass over ``tokens`` keeping every component output and port input
        (``logits=False``: skip the unembedding; `CleanPass.logits` is then ``None``)."""
        result = run(self, tokens, keep=True, logits=logits)
        assert isinstance(result, CleanPass)
        return result

    def forward(self, tokens: Int[Tensor, "b p"], positions: Optional[Int[Tensor, "q"]] = None) -> Float[Tensor, "b q v"]:
        """Logits, assembled only from the component functions summed into the residual stream
        (at ``positions`` only, ``[b, q, vocab]``, when given)."""
        result = run(self, tokens, keep=False, positions=positions)
        assert isinstance(result, Tensor)
        return result

    __call__ = forward
