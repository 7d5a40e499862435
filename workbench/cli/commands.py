"""Registers every sub-command; one module per command group keeps them small."""

from workbench.cli import demo  # noqa: F401
from workbench.cli import diff  # noqa: F401
from workbench.cli import jetstream  # noqa: F401
