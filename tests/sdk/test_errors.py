"""The one exception tree: every error has its own stable code and crosses a wire as itself."""

from __future__ import annotations

import pytest

import mcphost.host.policy
import mcphost.security.tokens
from mcphost.sandbox.protocol import FrameCodec, Result
from mcphost.sdk import MCPHostError, ProtocolError, ToolError
from mcphost.sdk.errors import error_from_code


def every_error_class() -> list[type[MCPHostError]]:
    found: list[type[MCPHostError]] = [MCPHostError]
    for cls in found:
        found += [c for c in cls.__subclasses__() if c not in found]
    return found


def test_every_error_class_has_a_code_of_its_own() -> None:
    classes = every_error_class()
    assert mcphost.host.policy.PolicyDenied in classes  # the ones outside sdk count too
    codes = [cls.__dict__.get("code") for cls in classes]
    assert None not in codes, [c for c in classes if "code" not in c.__dict__]
    assert len(set(codes)) == len(codes), sorted(c for c in codes if codes.count(c) > 1)


@pytest.mark.parametrize("cls", every_error_class(), ids=lambda c: c.__name__)
def test_an_error_that_crossed_a_wire_comes_back_as_its_own_class(
    cls: type[MCPHostError],
) -> None:
    sent = cls("what happened, and what to do", data={"plugin": "p"})
    back = error_from_code(**sent.to_dict())
    assert type(back) is cls
    assert back.to_dict() == sent.to_dict()


def test_a_frame_over_the_limit_is_a_protocol_error_any_mcphost_handler_catches() -> None:
    with pytest.raises(MCPHostError) as info:
        FrameCodec(max_frame=16).encode(Result(id=1, value="x" * 100))
    assert type(info.value) is ProtocolError and info.value.code == "protocol_error"
    assert "over the limit of 16 bytes" in info.value.message
    back = error_from_code(**info.value.to_dict())
    assert type(back) is ProtocolError and back.message == info.value.message


def test_an_unknown_code_comes_back_as_a_tool_error_keeping_the_code() -> None:
    back = error_from_code("out_of_cheese", "no cheese left", {"left": 0})
    assert type(back) is ToolError
    assert back.to_dict() == {
        "code": "out_of_cheese",
        "message": "no cheese left",
        "data": {"left": 0},
    }
