"""The result store: finished cells of scrubs, content-addressed, written atomically.

Pass ``store="runs/"`` to `scrub.evaluate`, `evaluate_many`, `report`, `compare` (or
``--store runs/`` to the command): every cell (one hypothesis, one seed) found there is read
instead of computed, and every computed cell is written there. See `scrub.store.cells` for the
layout and `scrub.store.keys` for what a cell's address depends on.
"""

from scrub.store.cells import STORE_FORMAT, Cell, Store, StoreError, as_store
from scrub.store.keys import (
    cell_key,
    dataset_fingerprint,
    hypothesis_fingerprint,
    metric_fingerprint,
    model_fingerprint,
    scrub_version,
)

__all__ = [
    "Store",
    "Cell",
    "StoreError",
    "STORE_FORMAT",
    "as_store",
    "cell_key",
    "dataset_fingerprint",
    "hypothesis_fingerprint",
    "metric_fingerprint",
    "model_fingerprint",
    "scrub_version",
]
