"""Registers every sub-command; one module per command group keeps them small."""

from workbench.cli import check, demo  # noqa: F401
