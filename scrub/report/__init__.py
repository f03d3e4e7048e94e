"""Reports built on `scrub.evaluate`: tables and renderers."""

from scrub.report.terminal import format_table

__all__ = ["format_table"]
