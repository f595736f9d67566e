"""The :class:`Context` a tool receives: logging, progress, cancellation, a data dir,
and questions to the MCP client that made the call (sampling, elicitation)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path
from typing import Any, Protocol

from .ask import Elicited, Sampled, elicit_params, elicited, sample_params, sampled
from .errors import AskUnsupported, CallCancelled, ToolTimeout

__all__ = ["Context", "ContextSink"]

LEVELS = ("debug", "info", "warning", "error")


class ContextSink(Protocol):
    """Where a context's logs and progress go: the worker's channel, or a test's list."""

    def emit_log(self, call_id: int, level: str, message: str) -> None: ...

    def emit_progress(
        self, call_id: int, progress: float, total: float | None, message: str | None
    ) -> None: ...


class AskSink(Protocol):
    """A sink that can also send a call's questions to its client (the worker's)."""

    def ask(
        self, call_id: int, kind: str, params: dict[str, Any]
    ) -> concurrent.futures.Future[Any]: ...


class Context:
    """Per-call services for a tool; declare a parameter annotated ``Context`` to get one.

    Every method is safe to call from sync tools (which run on worker threads) and from
    async tools alike.
    """

    def __init__(
        self,
        *,
        call_id: int,
        plugin: str,
        tool: str,
        data_dir: Path,
        sink: ContextSink,
        deadline: float | None = None,
        traceparent: str = "",
    ) -> None:
        self.call_id = call_id
        self.plugin = plugin
        self.tool = tool
        #: A directory private to this plugin that survives worker restarts.
        self.data_dir = data_dir
        #: ``time.monotonic()`` value after which the host gives up on the call.
        self.deadline = deadline
        #: How long a sync tool's function itself ran (set by the runner).
        self.run_seconds = 0.0
        #: The W3C ``traceparent`` of the host's span for this call ("" when the host
        #: is not tracing). Where OpenTelemetry is installed the worker already makes it
        #: the current context while the tool runs; this is for anything else.
        self.traceparent = traceparent
        self._sink = sink
        # A plain flag: set by the worker's loop, read by the tool's thread; the GIL
        # makes both safe, and a call that is never cancelled pays for no Event.
        self._cancelled = False

    # -- logging -------------------------------------------------------------------
    def log(self, level: str, message: str) -> None:
        """Send a log line to the host (levels: debug, info, warning, error)."""
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
        self._sink.emit_log(self.call_id, level, str(message))

    def debug(self, message: str) -> None:
        self.log("debug", message)

    def info(self, message: str) -> None:
        self.log("info", message)

    def warning(self, message: str) -> None:
        self.log("warning", message)

    def error(self, message: str) -> None:
        self.log("error", message)

    # -- progress ------------------------------------------------------------------
    def progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Report how far the call has come (MCP clients see a progress notification)."""
        self._sink.emit_progress(self.call_id, float(progress), total, message)

    # -- cancellation --------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        """True once the caller cancelled the call or its deadline passed."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            return True
        return self._cancelled

    def check_cancelled(self) -> None:
        """Raise :class:`CallCancelled` if the call was cancelled; for long sync loops."""
        if self.cancelled:
            raise CallCancelled(f"{self.plugin}.{self.tool}: call {self.call_id} was cancelled")

    def time_remaining(self) -> float | None:
        """Seconds until the deadline, or None when the call has none."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    # -- notifications -------------------------------------------------------------
    def notify_resource_updated(self, uri: str) -> None:
        """Tell the clients subscribed to resource ``uri`` (one of this plugin's) that
        it changed; they get ``notifications/resources/updated`` and may read it again."""
        notify = getattr(self._sink, "emit_notify", None)
        if notify is not None:
            notify("resource_updated", str(uri))

    def _cancel(self) -> None:
        self._cancelled = True

    # -- asking the client ----------------------------------------------------------
    async def sample(
        self,
        messages: Any,
        *,
        max_tokens: int,
        system_prompt: str | None = None,
        temperature: float | None = None,
        stop_sequences: list[str] | None = None,
        model_preferences: dict[str, Any] | None = None,
        include_context: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Sampled:
        """Ask the client's model for a message (MCP ``sampling/createMessage``).

        ``messages``: a str (one user message), or a list of str, ``(role, content)``
        pairs or ``{"role", "content"}`` dicts, content being text, :class:`Image`,
        :class:`Audio` or an MCP block. Raises :class:`AskUnsupported` when nobody can
        answer (the client did not declare ``sampling``, or there is no client), and
        :class:`AskFailed` when the client refused. Waits at most until the call's
        deadline; cancelling the call cancels the wait."""
        params = sample_params(
            messages,
            max_tokens=max_tokens,
            system_prompt=system_prompt,
            temperature=temperature,
            stop_sequences=stop_sequences,
            model_preferences=model_preferences,
            include_context=include_context,
            metadata=metadata,
        )
        return sampled(await asyncio.wrap_future(self._ask("sample", params)))

    def sample_sync(self, messages: Any, *, max_tokens: int, **options: Any) -> Sampled:
        """:meth:`sample` for sync tools: blocks the tool's thread until the answer."""
        params = sample_params(messages, max_tokens=max_tokens, **options)
        return sampled(self._wait(self._ask("sample", params)))

    async def elicit(self, message: str, schema: Any) -> Elicited:
        """Ask the user for input through the client (MCP ``elicitation/create``).

        ``schema``: a JSON Schema object of flat fields (strings, numbers, booleans,
        enums), or a class (dataclass, TypedDict, msgspec Struct, pydantic model) whose
        fields, defaults and enum choices make the form; an accepted answer's
        ``content`` is then an instance of it. Errors and deadline as :meth:`sample`."""
        params, tp = elicit_params(message, schema)
        return elicited(await asyncio.wrap_future(self._ask("elicit", params)), tp)

    def elicit_sync(self, message: str, schema: Any) -> Elicited:
        """:meth:`elicit` for sync tools: blocks the tool's thread until the answer."""
        params, tp = elicit_params(message, schema)
        return elicited(self._wait(self._ask("elicit", params)), tp)

    def _ask(self, kind: str, params: dict[str, Any]) -> concurrent.futures.Future[Any]:
        ask = getattr(self._sink, "ask", None)
        if ask is None:
            raise AskUnsupported(
                f"{self.plugin}.{self.tool}: this context cannot ask a client ({kind}); "
                "give the test harness a handler, or run the tool in a host"
            )
        self.check_cancelled()
        future: concurrent.futures.Future[Any] = ask(self.call_id, kind, params)
        return future

    def _wait(self, future: concurrent.futures.Future[Any]) -> Any:
        try:
            return future.result(self.time_remaining())
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ToolTimeout(
                f"{self.plugin}.{self.tool}: the client did not answer before the call's deadline"
            ) from None
        except concurrent.futures.CancelledError:
            raise CallCancelled(
                f"{self.plugin}.{self.tool}: call {self.call_id} was cancelled"
            ) from None
