"""Text a plugin wrote loses every control character before it reaches a terminal."""

from __future__ import annotations

import pytest

from mcphost.sdk.text import printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[31mred\x1b[0m", "[31mred[0m"),
        ("\x1b]0;title\x07after", "]0;titleafter"),
        ("\x9b2J csi", "2J csi"),
        ("one\rtwo", "one two"),
        ("line\nbreak\ttab", "line break tab"),
        ("back\x08space\x7f", "backspace"),
        ("\u202eevil\u2066", "evil"),
        ("plain text, ünïcode", "plain text, ünïcode"),
    ],
)
def test_a_one_line_field_keeps_no_control_character(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(text).isprintable()


def test_a_multi_line_field_keeps_its_line_breaks_and_tabs_only() -> None:
    assert printable("a\x1b[2J\nb\tc\r\n", multiline=True) == "a[2J\nb\tc\n"
