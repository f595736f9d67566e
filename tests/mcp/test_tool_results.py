"""The text content of a tool result, past what the comparison with the official server
covers: lists too long to be a block per item."""

from __future__ import annotations

import json

from mcphost.host.mcp.catalog import MAX_TEXT_BLOCKS, text_blocks


def test_a_list_result_is_a_text_block_per_item_up_to_the_limit_then_one_block_of_json() -> None:
    at_limit = text_blocks(list(range(MAX_TEXT_BLOCKS)))
    assert [block["text"] for block in at_limit] == [str(i) for i in range(MAX_TEXT_BLOCKS)]
    over = [[i, None] for i in range(MAX_TEXT_BLOCKS + 1)]
    (block,) = text_blocks(over)
    assert json.loads(block["text"]) == over
    assert block["text"].startswith("[\n  [\n    0,")


def test_none_items_and_empty_lists_do_not_count_towards_the_limit() -> None:
    value = [None] * (3 * MAX_TEXT_BLOCKS) + [[]] * MAX_TEXT_BLOCKS + ["a", {"b": "é"}]
    assert [block["text"] for block in text_blocks(value)] == ["a", '{\n  "b": "é"\n}']
