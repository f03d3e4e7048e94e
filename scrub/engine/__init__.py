"""Engines execute Schedules.

`BatchedEngine` (the default) runs one clean pass and evaluates tree nodes layer by layer in
batched calls; `ReferenceEngine` runs hooks on the source model (TransformerLens hook points or
HuggingFace module hooks, `scrub.engine.backends`) one tree node at a time and is the
oracle the batched engine is tested against.
"""

from scrub.engine.batched import BatchedEngine
from scrub.engine.reference import ReferenceEngine

__all__ = ["BatchedEngine", "ReferenceEngine"]
