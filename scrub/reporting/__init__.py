"""Reports built on `scrub.evaluate`: tables and renderers."""

from scrub.reporting.terminal import format_table

__all__ = ["format_table"]
