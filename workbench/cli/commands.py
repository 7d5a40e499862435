"""Registers every sub-command; one module per command group keeps them small."""

from workbench.cli import (
    check,  # noqa: F401
    compact,  # noqa: F401
    demo,  # noqa: F401
    diff,  # noqa: F401
    jetstream,  # noqa: F401
    postgres,  # noqa: F401
    replay,  # noqa: F401
    report,  # noqa: F401
)
