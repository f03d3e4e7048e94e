"""The model view: a transformer's weights as plain tensors and pure per-component functions.

`ModelView.from_model(model)` reads a TransformerLens ``HookedTransformer`` or a HuggingFace
causal LM of a supported family (GPT-2, GPT-NeoX/Pythia, GPT-J, Llama, Mistral, Qwen2, Gemma,
Gemma-2), refusing configurations it does not implement with
`scrub.errors.UnsupportedModelError` (``from_hooked`` reads HookedTransformers only); its methods
evaluate one component (a head, a stack of heads, an MLP, the embeddings, the unembedding) on
given port inputs, batched over rows, and `ModelView.clean_pass` runs the whole model keeping
every component's output.
"""

from scrub.model.config import ACTIVATIONS, SUPPORTED_ACT_FNS, ViewConfig, config_from_hooked
from scrub.model.sources import config_from_model, is_source_model, model_name
from scrub.model.view import CleanPass, ModelView

__all__ = [
    "ModelView",
    "ViewConfig",
    "CleanPass",
    "config_from_hooked",
    "config_from_model",
    "SUPPORTED_ACT_FNS",
    "ACTIVATIONS",
    "is_source_model",
    "model_name",
]
