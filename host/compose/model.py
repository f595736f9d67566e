"""What a composition is: pydantic models of the definition people write by hand.

A composition file is TOML or JSON; :func:`load_composition` reads one and every mistake
in its shape is reported at once, each naming the step (by its ``id``) and the field.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mcphost.sdk.errors import CompositionInvalid

__all__ = [
    "Composition",
    "ForEach",
    "Problem",
    "Retry",
    "Step",
    "composition_from_data",
    "load_composition",
]

#: ``<group>.<name>``: the same shape as ``<plugin>.<tool>``.
NAME_RE = r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$"
STEP_ID_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"

#: Codes never worth retrying by default: the call itself is wrong.
NEVER_RETRY = [
    "invalid_arguments",
    "tool_not_found",
    "plugin_not_found",
    "call_cancelled",
    "composition_invalid",
    "composition_unavailable",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Problem(_Strict):
    """One thing wrong with a composition: where (step and field) and what."""

    step: str = ""
    field: str = ""
    message: str

    def __str__(self) -> str:
        where = f"step {self.step!r}" if self.step else "composition"
        if self.field:
            where += f", {self.field}"
        return f"{where}: {self.message}"


class Retry(_Strict):
    """How a failed step is tried again: attempts, backoff with jitter, which codes.

    ``retry_on`` empty retries every code not in ``never_retry``.
    """

    max_attempts: int = Field(3, ge=1, le=100)
    initial_interval: float = Field(0.1, ge=0)
    backoff_rate: float = Field(2.0, ge=1)
    max_interval: float = Field(10.0, ge=0)
    #: Each delay is shortened at random by up to this fraction (0: no jitter).
    jitter: float = Field(0.5, ge=0, le=1)
    retry_on: list[str] = []
    never_retry: list[str] = Field(default_factory=lambda: list(NEVER_RETRY))

    def retries(self, code: str) -> bool:
        if code in self.never_retry:
            return False
        return not self.retry_on or code in self.retry_on

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based); ``rand`` in [0, 1)."""
        base = min(self.initial_interval * self.backoff_rate ** (attempt - 1), self.max_interval)
        return base * (1 - self.jitter * rand)


class ForEach(_Strict):
    """Run the step once per item of a list (``$item`` in its args is the item)."""

    items: str
    max_concurrency: int = Field(8, ge=1)
    tolerated_failures: int = Field(0, ge=0)


class Step(_Strict):
    """One call of a tool (or of another composition) inside a composition."""

    id: str = Field(pattern=STEP_ID_RE)
    tool: str
    args: dict[str, Any] = {}
    #: Steps that must finish first even though no argument refers to them.
    depends_on: list[str] = []
    #: A JMESPath expression over ``input`` and ``steps``; false skips the step.
    when: str | None = None
    retry: Retry | None = None
    #: Seconds each attempt may run (capped by the composition's deadline).
    timeout: float | None = Field(None, gt=0)
    on_error: Literal["fail", "continue"] = "fail"
    #: The step's output when it is skipped, or fails with ``on_error = "continue"``.
    default: Any = None
    for_each: ForEach | None = None

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set

    @property
    def may_not_produce(self) -> bool:
        """Whether the step can end without an output of its own tool."""
        return self.when is not None or self.on_error == "continue"


class Composition(_Strict):
    """A workflow of tools offered as one tool named ``<group>.<name>``."""

    name: str = Field(pattern=NAME_RE)
    description: str = ""
    input_schema: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    steps: list[Step] = Field(min_length=1)
    #: What the composition returns: a reference, or an object/list holding references.
    output: Any = None
    #: Seconds the whole composition may run.
    deadline: float = Field(300.0, gt=0)

    @field_validator("input_schema")
    @classmethod
    def _object_schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("type", "object") != "object":
            raise ValueError('must be a JSON schema of "type": "object"')
        return v

    def step(self, step_id: str) -> Step:
        return next(s for s in self.steps if s.id == step_id)

    def to_data(self) -> dict[str, Any]:
        """The definition as plain JSON data (what the registry stores): the fields set,
        without the optional ones left empty."""
        data = self.model_dump(mode="json", exclude_unset=True)
        for step in data["steps"]:
            for key in [k for k, v in step.items() if v is None and k != "default"]:
                del step[key]
        return data


def _problems(exc: ValidationError, data: Any) -> list[Problem]:
    steps = data.get("steps") if isinstance(data, dict) else None
    out = []
    for err in exc.errors():
        loc = list(err["loc"])
        step = ""
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            idx = loc[1]
            raw = steps[idx] if isinstance(steps, list) and idx < len(steps) else None
            sid = raw.get("id") if isinstance(raw, dict) else None
            step = sid if isinstance(sid, str) and sid else f"#{idx + 1}"
            loc = loc[2:]
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        out.append(Problem(step=step, field=".".join(str(p) for p in loc), message=msg))
    return out


def composition_from_data(data: Any, source: str = "definition") -> Composition:
    """Build a composition from plain data; every problem of shape is reported at once."""
    try:
        return Composition.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc, data)
        raise invalid(problems, source) from None


def invalid(problems: list[Problem], source: str) -> CompositionInvalid:
    lines = "\n".join(f"  - {p}" for p in problems)
    return CompositionInvalid(
        f"{source} has {len(problems)} problem{'s' if len(problems) != 1 else ''}:\n{lines}",
        data={"problems": [p.model_dump() for p in problems]},
    )


def load_composition(path: str | Path) -> Composition:
    """Read a composition from a ``.toml`` or ``.json`` file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CompositionInvalid(f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if p.suffix == ".json" else "TOML"
        raise CompositionInvalid(f"{p} is not valid {kind}: {exc}") from None
    return composition_from_data(data, str(p))


def is_identifier(text: str) -> bool:
    return re.match(STEP_ID_RE, text) is not None
