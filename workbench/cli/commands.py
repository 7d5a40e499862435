"""Registers every sub-command; one module per command group keeps them small."""

from workbench.cli import (
    demo,  # noqa: F401
    replay,  # noqa: F401
)
