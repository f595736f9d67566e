"""The ``mcphost`` command line. Errors map to exit codes in one place: 1 failure, 2 usage."""

from __future__ import annotations

from .main import main

__all__ = ["main"]
