"""Engines execute Schedules: `ReferenceEngine` (TransformerLens hooks, one node at a time)."""

from scrub.engine.reference import ReferenceEngine

__all__ = ["ReferenceEngine"]
