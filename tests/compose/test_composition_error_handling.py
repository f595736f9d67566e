"""Failures: retries with backoff on chosen codes, on_error, tolerated failures of a
for_each, the deadline, and errors that say which step, attempt and input."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from mcphost.host import Host
from mcphost.host.compose import Plan, Retry, composition_from_data, make_run
from mcphost.sdk.errors import CompositionFailed, CompositionUnavailable, MCPHostError

FAST = {"initial_interval": 0.001, "max_interval": 0.01}


def flaky_step(key: str, failures: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": "flaky",
        "tool": "mathkit.flaky",
        "args": {"key": key, "failures": failures, "code": extra.pop("code", "flaky")},
        **extra,
    }


def run_one(host: Host, step: dict[str, Any], **comp: Any) -> Any:
    c = composition_from_data({"name": "demo.err", "steps": [step], **comp})
    return make_run(Plan(c), host, {})


def test_a_step_is_retried_on_a_chosen_code_until_it_succeeds(
    with_host: Callable[..., Any],
) -> None:
    step = flaky_step(uuid.uuid4().hex, 2, retry={"max_attempts": 3, "retry_on": ["flaky"], **FAST})

    async def scenario(host: Host) -> tuple[Any, Any]:
        run = run_one(host, step)
        return await run.run(), run.records["flaky"]

    result, rec = with_host(scenario)
    assert result == 3  # the third call succeeded
    assert (rec.attempts, rec.retries, rec.status) == (3, 2, "ok")


def test_a_code_not_chosen_is_never_retried_and_the_error_tells_it_all(
    with_host: Callable[..., Any],
) -> None:
    key = uuid.uuid4().hex
    steps = [
        {"id": "first", "tool": "textkit.upper", "args": {"text": "ok"}},
        {
            **flaky_step(
                key, 5, code="fatal", retry={"max_attempts": 4, "retry_on": ["flaky"], **FAST}
            ),
            "depends_on": ["first"],
        },
    ]

    async def scenario(host: Host) -> CompositionFailed:
        c = composition_from_data({"name": "demo.err", "steps": steps})
        with pytest.raises(CompositionFailed) as err:
            await make_run(Plan(c), host, {}).run()
        return err.value

    err = with_host(scenario)
    assert err.code == "composition_failed"
    assert "failed at step 'flaky' (mathkit.flaky), attempt 1 of 4: [fatal]" in err.message
    assert f'"key": "{key}"' in err.message
    assert 'earlier steps produced: first = "OK"' in err.message
    assert err.data["step"] == "flaky" and err.data["attempt"] == 1
    assert err.data["input"]["key"] == key
    assert err.data["outputs"] == {"first": "OK"}
    assert err.data["error"]["code"] == "fatal"


def test_retries_stop_after_max_attempts_and_never_retry_wins(
    with_host: Callable[..., Any],
) -> None:
    async def scenario(host: Host) -> list[int]:
        out = []
        for retry in (
            {"max_attempts": 3, **FAST},
            {"max_attempts": 3, "never_retry": ["flaky"], **FAST},
        ):
            run = run_one(host, flaky_step(uuid.uuid4().hex, 10, retry=retry))
            with pytest.raises(CompositionFailed):
                await run.run()
            out.append(run.records["flaky"].attempts)
        return out

    assert with_host(scenario) == [3, 1]


def test_on_error_continue_uses_the_default_and_the_run_goes_on(
    with_host: Callable[..., Any],
) -> None:
    steps = [
        {**flaky_step(uuid.uuid4().hex, 1), "on_error": "continue", "default": -1},
        {"id": "next", "tool": "mathkit.add", "args": {"a": "$steps.flaky.output", "b": 10}},
    ]

    async def scenario(host: Host) -> tuple[Any, str]:
        c = composition_from_data({"name": "demo.err", "steps": steps})
        run = make_run(Plan(c), host, {})
        return await run.run(), run.records["flaky"].status

    assert with_host(scenario) == (9, "failed")


def test_for_each_tolerates_the_failures_it_is_allowed(with_host: Callable[..., Any]) -> None:
    keys = [uuid.uuid4().hex for _ in range(4)]

    def comp(tolerated: int) -> Any:
        return composition_from_data(
            {
                "name": "demo.each",
                "input_schema": {
                    "type": "object",
                    "properties": {"keys": {"type": "array", "items": {"type": "string"}}},
                },
                "steps": [
                    {
                        "id": "each",
                        "tool": "mathkit.flaky",
                        "args": {"key": "$item", "failures": 1},
                        "for_each": {
                            "items": "$input.keys",
                            "max_concurrency": 2,
                            "tolerated_failures": tolerated,
                        },
                    },
                ],
            }
        )

    async def scenario(host: Host) -> tuple[Any, str]:
        # Every key fails on its first call: 4 failures.
        with pytest.raises(CompositionFailed, match="step 'each'"):
            await make_run(Plan(comp(3)), host, {"keys": keys}).run()
        # Now each key's next call succeeds; two fresh keys fail once more.
        fresh = [keys[0], uuid.uuid4().hex, keys[1], uuid.uuid4().hex]
        run = make_run(Plan(comp(2)), host, {"keys": fresh})
        return await run.run(), run.records["each"].failed_items

    result, failed = with_host(scenario)
    assert result == [2, None, 2, None] and failed == 2


def test_the_deadline_of_the_whole_composition_cancels_what_runs(
    with_host: Callable[..., Any],
) -> None:
    steps = [
        {"id": "quick", "tool": "textkit.upper", "args": {"text": "done"}},
        {"id": "long", "tool": "textkit.sleep", "args": {"seconds": 30}, "depends_on": ["quick"]},
    ]

    async def scenario(host: Host) -> CompositionFailed:
        c = composition_from_data({"name": "demo.late", "steps": steps, "deadline": 0.5})
        with pytest.raises(CompositionFailed) as err:
            await make_run(Plan(c), host, {}).run()
        return err.value

    err = with_host(scenario)
    assert err.data["reason"] == "deadline" and err.data["running"] == ["long"]
    assert "ran past its deadline of 0.5s; steps still running: long" in err.message
    assert 'quick = "DONE"' in err.message


def test_a_step_timeout_is_a_tool_timeout_that_can_be_retried(
    with_host: Callable[..., Any],
) -> None:
    step = {
        "id": "nap",
        "tool": "textkit.sleep",
        "args": {"seconds": 5},
        "timeout": 0.2,
        "retry": {"max_attempts": 2, "retry_on": ["tool_timeout"], **FAST},
    }

    async def scenario(host: Host) -> tuple[MCPHostError, int]:
        run = run_one(host, step)
        with pytest.raises(CompositionFailed) as err:
            await run.run()
        return err.value, run.records["nap"].attempts

    err, attempts = with_host(scenario)
    assert attempts == 2
    assert "[tool_timeout]" in err.message and "attempt 2 of 2" in err.message


def test_compositions_calling_each_other_in_a_loop_stop_at_a_depth(
    with_host: Callable[..., Any],
) -> None:
    async def scenario(host: Host) -> str:
        a = composition_from_data(
            {
                "name": "demo.a",
                "steps": [{"id": "s", "tool": "textkit.echo", "args": {"text": "x"}}],
            }
        )
        host.add_composition(a)
        b = composition_from_data({"name": "demo.b", "steps": [{"id": "s", "tool": "demo.a"}]})
        host.add_composition(b)
        # Replace demo.a by one that calls demo.b: a loop only a run can see.
        loop = composition_from_data({"name": "demo.a", "steps": [{"id": "s", "tool": "demo.b"}]})
        host.add_composition(loop)
        with pytest.raises(CompositionFailed) as err:
            await host.call("demo.a", {})
        return err.value.message

    assert "more than 8 deep" in with_host(scenario)


def test_an_unavailable_composition_says_why(with_host: Callable[..., Any]) -> None:
    async def scenario(host: Host) -> None:
        c = composition_from_data(
            {
                "name": "demo.u",
                "steps": [{"id": "s", "tool": "textkit.echo", "args": {"text": "x"}}],
            }
        )
        host.add_composition(c)
        served = host._served()
        served.by_name["demo.u"].unavailable = "swap of textkit to 2.0.0 broke it"
        with pytest.raises(CompositionUnavailable, match=r"swap of textkit to 2\.0\.0 broke it"):
            await host.call("demo.u", {})

    with_host(scenario)


def test_backoff_grows_is_capped_and_jitter_only_shortens() -> None:
    r = Retry(initial_interval=1, backoff_rate=2, max_interval=5, jitter=0.5)
    assert [r.delay(n, 0.0) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    assert r.delay(2, 0.999) == pytest.approx(1.001)
    assert not Retry(retry_on=["x"]).retries("y") and Retry().retries("worker_crashed")
    assert not Retry().retries("invalid_arguments")


def test_a_condition_that_fails_on_the_data_names_its_step(
    with_host: Callable[..., Any],
) -> None:
    comp = composition_from_data(
        {
            "name": "demo.when",
            "input_schema": {"type": "object", "properties": {"n": {"type": "number"}}},
            "steps": [
                {
                    "id": "u",
                    "tool": "textkit.upper",
                    "args": {"text": "x"},
                    "when": "length(input.n) > `1`",
                    "default": "",
                }
            ],
        }
    )

    async def scenario(host: Host) -> None:
        host.add_composition(comp)
        with pytest.raises(CompositionFailed, match=r"step 'u', when: 'length\(input\.n\)"):
            await host.call("demo.when", {"n": 5})

    with_host(scenario)
