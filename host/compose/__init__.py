"""mcphost.host.compose: workflows of tools, checked before they run, run as a dataflow.

A :class:`Composition` (TOML, JSON or built in Python with :mod:`.templates`) names
steps that call tools with typed references to the input and to earlier outputs;
:func:`check` finds every problem before anything runs; a :class:`Run` executes a
:class:`Plan` step by step as soon as each step's inputs exist. A host serves installed
compositions as tools (docs/compositions.md).
"""

from __future__ import annotations

from .engine import Plan, Run, StepRecord
from .model import (
    Composition,
    ForEach,
    Problem,
    Retry,
    Step,
    composition_from_data,
    load_composition,
)
from .served import Served, make_run
from .store import CompositionRecord, CompositionStore
from .validate import Budgets, check, output_schema

__all__ = [
    "Budgets",
    "Composition",
    "CompositionRecord",
    "CompositionStore",
    "ForEach",
    "Plan",
    "Problem",
    "Retry",
    "Run",
    "Served",
    "Step",
    "StepRecord",
    "check",
    "composition_from_data",
    "load_composition",
    "make_run",
    "output_schema",
]
