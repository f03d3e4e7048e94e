"""Reports built on `scrub.evaluate`: tables and renderers."""

from scrub.reporting import notebook  # noqa: F401  (registers how a Result draws itself)
from scrub.reporting.terminal import format_table

__all__ = ["format_table"]
