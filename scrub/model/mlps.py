"""MLP pieces of the model view: the activation functions and the plain and gated MLPs.

Activation names are TransformerLens's, which HuggingFace's ``ACT2FN`` shares for every name
listed here (same formulas: ``gelu_new`` and ``gelu_fast`` are the tanh approximations written
out, ``gelu_pytorch_tanh`` is torch's tanh GELU, ``gelu`` the exact one).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ACTIVATIONS", "SUPPORTED_ACT_FNS", "linear", "plain_mlp", "gated_mlp"]


def _gelu_new(x: Tensor) -> Tensor:
    inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))
    return 0.5 * x * (1.0 + torch.tanh(inner))


def _gelu_fast(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": _gelu_new,
    "gelu_fast": _gelu_fast,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "relu2": lambda x: F.relu(x) ** 2,
    "solu": lambda x: x * F.softmax(x, dim=-1),
}

#: Activation functions the model view implements.
SUPPORTED_ACT_FNS: tuple[str, ...] = tuple(ACTIVATIONS)


def linear(x: Tensor, W: Tensor, b: Optional[Tensor]) -> Tensor:
    """``x @ W + b`` for ``x [..., in]``, ``W [in, out]``, with the bias added inside the matmul
    (as ``nn.Linear`` does: one rounding in low precision)."""
    if b is None:
        return x @ W  # [..., out]
    return torch.addmm(b, x.reshape(-1, x.shape[-1]), W).reshape(*x.shape[:-1], W.shape[-1])  # [..., out]


def plain_mlp(x_n: Tensor, act: str, W_in: Tensor, b_in: Optional[Tensor], W_out: Tensor, b_out: Optional[Tensor]) -> Tensor:
    """``act(x_n @ W_in + b_in) @ W_out + b_out`` for a normalised input ``x_n [..., d]``."""
    return linear(ACTIVATIONS[act](linear(x_n, W_in, b_in)), W_out, b_out)  # [..., d]


def gated_mlp(
    x_n: Tensor,
    act: str,
    W_gate: Tensor,
    b_gate: Optional[Tensor],
    W_in: Tensor,
    b_in: Optional[Tensor],
    W_out: Tensor,
    b_out: Optional[Tensor],
) -> Tensor:
    """Gated MLP (SwiGLU with ``silu``, GeGLU with a GELU):
    ``(act(x_n @ W_gate + b_gate) * (x_n @ W_in + b_in)) @ W_out + b_out``."""
    gate = ACTIVATIONS[act](linear(x_n, W_gate, b_gate))  # [..., m]
    return linear(gate * linear(x_n, W_in, b_in), W_out, b_out)  # [..., d]
