"""The wire protocol with bytes alone: round trips, arbitrary input, size limits, versions."""

from __future__ import annotations

import itertools
import struct
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mcphost.sandbox.protocol import (
    DEFAULT_MAX_FRAME,
    ITEM_OVERHEAD,
    ITEMS_ENVELOPE,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Answer,
    Ask,
    Call,
    Cancel,
    Credit,
    Error,
    Frame,
    FrameCodec,
    Hello,
    ItemBatch,
    ItemError,
    Items,
    Log,
    Notify,
    Ping,
    Pong,
    Progress,
    Result,
    Shutdown,
    StreamEnd,
    StreamItem,
    Welcome,
    item_size,
    negotiate,
    result_frame,
)
from mcphost.sdk import ProtocolError
from mcphost.sdk.errors import BatchResults
from mcphost.sdk.features import PromptArgument, PromptSpec, ResourceSpec, TemplateSpec
from mcphost.sdk.schema import BatchSettings, ToolSpec

ids = st.integers(min_value=0, max_value=2**63 - 1)
counts = st.integers(min_value=0, max_value=2**31)
text = st.text(max_size=40)
floats = st.floats(allow_nan=False)
# What a tool may return or take: JSON-like data (NaN is excluded only because it is
# never equal to itself, which a round-trip comparison needs).
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | floats
    | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(text, json_values, max_size=4)
#: A result of rich content (sdk/content.py): bytes cross the channel as bytes.
content_blocks = st.fixed_dictionaries(
    {"$content": st.sampled_from(["image", "audio"]), "data": st.binary(), "mimeType": text}
) | st.lists(
    st.fixed_dictionaries({"$content": st.just("resource"), "uri": text, "blob": st.binary()}),
    max_size=3,
)
tool_specs = st.builds(
    ToolSpec,
    name=text,
    description=text,
    input_schema=json_objects,
    output_schema=st.none() | json_objects,
    kind=st.sampled_from(["call", "stream"]),
    batch=st.booleans(),
    batching=st.none()
    | st.builds(
        BatchSettings,
        max_batch_size=st.none() | counts,
        preferred_sizes=st.none() | st.lists(counts, max_size=3),
        max_queue_delay_ms=st.none() | floats,
        target_latency_ms=st.none() | floats,
        batch_key=text,
        priority=st.none() | counts,
    ),
)

resource_specs = st.builds(ResourceSpec, uri=text, name=text, description=text, mime_type=text)
template_specs = st.builds(
    TemplateSpec, uri_template=text, name=text, description=text, mime_type=text
)
prompt_specs = st.builds(
    PromptSpec,
    name=text,
    description=text,
    arguments=st.lists(
        st.builds(PromptArgument, name=text, description=text, required=st.booleans()),
        max_size=3,
    ),
    input_schema=json_objects,
)

FRAME_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    Hello: st.builds(
        Hello,
        versions=st.lists(counts, max_size=3),
        plugin=text,
        plugin_version=text,
        tools=st.lists(tool_specs, max_size=3),
        pid=counts,
        resources=st.lists(resource_specs, max_size=2),
        templates=st.lists(template_specs, max_size=2),
        prompts=st.lists(prompt_specs, max_size=2),
    ),
    Welcome: st.builds(Welcome, version=counts, max_frame=counts),
    Call: st.builds(
        Call,
        id=ids,
        tool=text,
        args=json_objects,
        timeout=st.none() | floats,
        stream=st.booleans(),
        window=counts,
        progress=st.booleans(),
        window_bytes=counts,
        kind=st.sampled_from(["tool", "resource", "prompt", "complete"]) | text,
    ),
    Result: st.builds(
        Result,
        id=ids,
        value=json_values | content_blocks,
        errors=st.lists(
            st.builds(ItemError, index=counts, code=text, message=text, data=json_objects),
            max_size=3,
        ),
    ),
    Error: st.builds(Error, id=ids, code=text, message=text, data=json_objects),
    StreamItem: st.builds(StreamItem, id=ids, seq=counts, value=json_values),
    Items: st.builds(
        Items,
        id=ids,
        seq=counts,
        values=st.lists(
            json_values.map(lambda v: msgspec.Raw(msgspec.msgpack.encode(v))),
            min_size=1,
            max_size=6,
        ),
    ),
    StreamEnd: st.builds(StreamEnd, id=ids, count=counts),
    Credit: st.builds(Credit, id=ids, n=counts, bytes=counts),
    Cancel: st.builds(Cancel, id=ids),
    Progress: st.builds(
        Progress,
        id=ids,
        progress=floats,
        total=st.none() | floats,
        message=st.none() | text,
    ),
    Log: st.builds(Log, level=text, message=text, id=ids),
    Notify: st.builds(Notify, kind=st.just("resource_updated") | text, uri=text),
    Ask: st.builds(
        Ask, id=ids, n=ids, kind=st.sampled_from(["sample", "elicit"]), params=json_objects
    ),
    Answer: st.builds(Answer, id=ids, n=ids, value=json_values, code=text, message=text),
    Ping: st.builds(Ping, n=ids),
    Pong: st.builds(Pong, n=ids),
    Shutdown: st.builds(Shutdown, reason=text),
}
frames = st.one_of(*FRAME_STRATEGIES.values())
codec = FrameCodec()


def test_every_frame_type_of_the_union_has_a_strategy() -> None:
    assert set(FRAME_STRATEGIES) == set(Frame.__args__)


@pytest.mark.parametrize("frame_type", list(FRAME_STRATEGIES), ids=lambda t: t.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_frame_type_survives_an_encode_decode_round_trip(
    frame_type: type[Any], data: st.DataObject
) -> None:
    frame = data.draw(FRAME_STRATEGIES[frame_type])
    wire = codec.encode(frame)
    (length,) = struct.unpack(">I", wire[:4])
    assert length == len(wire) - 4
    decoded = codec.decode(wire[4:])
    assert type(decoded) is frame_type
    assert decoded == frame


@settings(max_examples=100, deadline=None)
@given(batch=st.lists(frames, max_size=8), cut=st.integers(min_value=0))
def test_a_byte_stream_splits_into_the_frames_sent_keeping_the_incomplete_rest(
    batch: list[Any], cut: int
) -> None:
    wire = b"".join(codec.encode(f) for f in batch)
    cut = cut % (len(wire) + 1)
    first, rest = codec.decode_stream(wire[:cut])
    second, leftover = codec.decode_stream(rest + wire[cut:])
    assert first + second == batch
    assert leftover == b""


@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=256))
def test_decoding_arbitrary_bytes_raises_nothing_but_protocol_error(body: bytes) -> None:
    try:
        frame = codec.decode(body)
    except ProtocolError as exc:
        assert "malformed frame" in exc.message
    else:
        assert isinstance(frame, Frame.__args__)


@settings(max_examples=300, deadline=None)
@given(frame=frames, data=st.data())
def test_corrupting_or_cutting_a_valid_frame_raises_nothing_but_protocol_error(
    frame: Any, data: st.DataObject
) -> None:
    body = bytearray(codec.encode(frame)[4:])
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        i = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
        body[i] = data.draw(st.integers(min_value=0, max_value=255))
    end = data.draw(st.integers(min_value=0, max_value=len(body)))
    for candidate in (bytes(body), bytes(body[:end])):
        try:
            decoded = codec.decode(candidate)
        except ProtocolError as exc:
            assert exc.code == "protocol_error" and "malformed frame" in exc.message
        else:
            # Damage that still decodes gives a real frame, one that survives a round trip
            # (compared as bytes: damage can make a float NaN).
            assert type(decoded) in Frame.__args__
            again = codec.encode(decoded)
            assert codec.encode(codec.decode(again[4:])) == again


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=512))
def test_splitting_arbitrary_bytes_into_frames_raises_nothing_but_protocol_error(
    data: bytes,
) -> None:
    small = FrameCodec(max_frame=1024)
    try:
        got, rest = small.decode_stream(data)
    except ProtocolError:
        return
    assert len(rest) < len(data) + 1
    assert all(isinstance(f, Frame.__args__) for f in got)


#: Each frame type by its tag, and every field name a frame has.
FRAME_BY_TAG = {t.__struct_config__.tag: t for t in Frame.__args__}
FIELD_NAMES = sorted({name for t in Frame.__args__ for name in t.__struct_fields__})


@settings(max_examples=300, deadline=None)
@given(
    tag=st.sampled_from(["call", "result", "hello", "credit", "nope", ""]),
    fields=st.dictionaries(st.sampled_from(FIELD_NAMES) | text, json_values, max_size=5),
)
@example(tag="credit", fields={"id": 1, "n": 2, "extra": "ignored"})
@example(tag="nope", fields={"id": 1})
def test_well_formed_msgpack_is_the_frame_its_tag_and_fields_say_or_a_protocol_error(
    tag: str, fields: dict[str, Any]
) -> None:
    body = msgspec.msgpack.encode({"t": tag, **fields})
    try:
        frame = codec.decode(body)
    except ProtocolError as exc:
        assert exc.code == "protocol_error" and "malformed frame" in exc.message
    else:
        # Only a known tag whose required fields are there, with the right types, decodes,
        # and to that type with those values.
        assert type(frame) is FRAME_BY_TAG.get(tag), (tag, frame)
        for name in type(frame).__struct_fields__:
            if name in fields:
                assert getattr(frame, name) == fields[name], name


@pytest.mark.parametrize(
    "body",
    [
        msgspec.msgpack.encode({"t": "unknown", "id": 1}),
        msgspec.msgpack.encode({"t": "call", "id": "one", "tool": "x", "args": {}}),
        msgspec.msgpack.encode({"t": "result"}),
        msgspec.msgpack.encode([1, 2, 3]),
        b"",
        b"\xc1",
        b"\x82\xa1t\xa4call\xa4tool\xa1\x80",
    ],
    ids=[
        "unknown-tag",
        "wrong-type",
        "missing-field",
        "not-a-map",
        "empty",
        "reserved-byte",
        "string-not-utf8",
    ],
)
def test_frames_that_do_not_decode_are_refused_with_a_protocol_error(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed frame from peer"):
        codec.decode(body)


def test_encoding_a_frame_over_the_size_limit_is_refused_with_advice() -> None:
    small = FrameCodec(max_frame=1024)
    assert small.encode(Result(id=1, value="x" * 900))
    with pytest.raises(ProtocolError) as info:
        small.encode(Result(id=1, value="x" * 2000))
    assert "Result frame of" in info.value.message
    assert "over the limit of 1024 bytes" in info.value.message
    assert "stream them" in info.value.message


def test_an_announced_length_over_the_limit_is_refused_before_the_body_arrives() -> None:
    small = FrameCodec(max_frame=1024)
    header = struct.pack(">I", 1025)
    with pytest.raises(ProtocolError, match="announced a frame of 1025 bytes"):
        small.body_length(header)
    # Only the header is there: the body is never waited for.
    with pytest.raises(ProtocolError):
        small.decode_stream(header)
    assert small.body_length(struct.pack(">I", 1024)) == 1024


def test_the_default_frame_limit_is_sixteen_mebibytes() -> None:
    assert DEFAULT_MAX_FRAME == FrameCodec().max_frame == 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("theirs", "ours", "chosen"),
    [([1], (1,), 1), ([1, 2, 3], (1, 2), 2), ([3, 1], (1, 3, 4), 3)],
)
def test_negotiation_picks_the_highest_version_both_sides_speak(
    theirs: list[int], ours: tuple[int, ...], chosen: int
) -> None:
    assert negotiate(theirs, ours) == chosen


def test_negotiation_without_a_common_version_says_what_each_side_speaks() -> None:
    with pytest.raises(ProtocolError) as info:
        negotiate([7, 5], (1, 2))
    msg = info.value.message
    assert "protocol version mismatch" in msg
    assert "the worker speaks [5, 7]" in msg and "this host speaks [1, 2]" in msg
    assert "install matching versions of mcphost" in msg
    assert info.value.data == {"theirs": [5, 7], "ours": [1, 2]}


def test_this_build_speaks_its_own_protocol_version() -> None:
    assert PROTOCOL_VERSION in SUPPORTED_VERSIONS
    assert negotiate(list(SUPPORTED_VERSIONS)) == PROTOCOL_VERSION


def test_a_result_without_item_errors_is_the_frame_older_peers_send() -> None:
    frame = Result(id=3, value=[1, 2])
    body = codec.encode(frame)[4:]
    assert msgspec.msgpack.decode(body) == {"t": "result", "id": 3, "value": [1, 2]}
    # A frame from a peer that has never heard of item errors decodes with none.
    old = msgspec.msgpack.encode({"t": "result", "id": 3, "value": [1, 2]})
    assert codec.decode(old) == frame


def test_failed_items_travel_in_the_result_and_older_hosts_get_the_first_error() -> None:
    value = BatchResults([1, None, None], {2: ("late", "too late", {}), 1: ("bad", "no", {"k": 1})})
    frame = result_frame(9, value, 3)
    assert frame == Result(
        id=9,
        value=[1, None, None],
        errors=[
            ItemError(index=1, code="bad", message="no", data={"k": 1}),
            ItemError(index=2, code="late", message="too late"),
        ],
    )
    assert codec.decode(codec.encode(frame)[4:]) == frame
    older = result_frame(9, value, 2)
    assert older == Error(id=9, code="bad", message="no", data={"k": 1, "item": 1})
    assert result_frame(9, [1, 2], 1) == Result(id=9, value=[1, 2])


@settings(max_examples=200, deadline=None)
@given(
    call_id=ids,
    seq=counts,
    values=st.lists(json_values | content_blocks, min_size=1, max_size=40),
    max_frame=st.integers(min_value=200, max_value=4096),
)
def test_an_item_batch_leaves_as_items_frames_that_give_back_every_value_and_its_size(
    call_id: int, seq: int, values: list[Any], max_frame: int
) -> None:
    small = FrameCodec(max_frame=max_frame)
    batch = ItemBatch(small)
    out = bytearray()
    sizes: list[int] = []
    for i, value in enumerate(values):
        try:
            size = batch.add(call_id, seq + i, value)
        except ProtocolError as exc:
            # Only a value that fits no frame at all is refused, and it says so.
            assert len(msgspec.msgpack.encode(value)) + ITEMS_ENVELOPE > max_frame
            assert "over the frame limit" in exc.message
            return
        if size < 0:  # the frame is full: it leaves, and the value starts the next one
            batch.encode_into(small, out)
            size = batch.add(call_id, seq + i, value)
        # Its value's bytes, and the overhead every item counts for.
        assert size == len(msgspec.msgpack.encode(value)) + ITEM_OVERHEAD
        sizes.append(size)
    batch.encode_into(small, out)
    assert batch.count == 0
    frames, rest = small.decode_stream(bytes(out))
    assert rest == b""
    got: list[Any] = []
    got_sizes: list[int] = []
    for frame in frames:
        assert isinstance(frame, Items) and frame.id == call_id
        assert frame.seq == seq + len(got)
        got += [small.decode_value(raw) for raw in frame.values]
        got_sizes += [item_size(raw) for raw in frame.values]
    assert got == [msgspec.msgpack.decode(msgspec.msgpack.encode(v)) for v in values]
    assert got_sizes == sizes
    # Items of one stream share frames: a new frame begins only when the next value
    # would have taken the last one past the limit.
    for this, following in itertools.pairwise(frames):
        assert isinstance(this, Items) and isinstance(following, Items)
        held = sum(len(raw) for raw in this.values)
        assert held + len(following.values[0]) + ITEMS_ENVELOPE > max_frame


def test_an_item_batch_takes_only_the_next_item_of_its_own_stream() -> None:
    batch = ItemBatch(codec)
    assert batch.add(5, 10, "a") == 2 + ITEM_OVERHEAD
    assert batch.add(6, 11, "b") == -1  # another stream's
    assert batch.add(5, 12, "b") == -1  # not the next seq
    assert batch.add(5, 11, "b") == 2 + ITEM_OVERHEAD
    out = bytearray()
    batch.encode_into(codec, out)
    (frame,) = codec.decode_stream(bytes(out))[0]
    assert frame == Items(id=5, seq=10, values=[msgspec.Raw(b"\xa1a"), msgspec.Raw(b"\xa1b")])
    # The frame is the one an Items struct of those values encodes to, byte for byte.
    assert bytes(out) == codec.encode(frame)
    assert batch.add(6, 0, "c") == 2 + ITEM_OVERHEAD  # an empty batch starts anywhere


def test_a_value_that_cannot_be_encoded_leaves_the_batch_as_it_was() -> None:
    batch = ItemBatch(codec)
    assert batch.add(1, 0, [1, 2]) == 3 + ITEM_OVERHEAD
    with pytest.raises(TypeError):
        batch.add(1, 1, [3, object()])
    assert batch.count == 1 and bytes(batch.values) == b"\x92\x01\x02"
    assert batch.add(1, 1, "ok") == 3 + ITEM_OVERHEAD


def test_a_frame_that_cannot_be_encoded_leaves_the_outgoing_buffer_as_it_was() -> None:
    out = bytearray()
    codec.encode_into(Ping(n=1), out)
    sent = bytes(out)
    with pytest.raises(TypeError):
        codec.encode_into(Result(id=1, value=[1, object()]), out)
    assert bytes(out) == sent


def test_a_malformed_item_value_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        codec.decode_value(msgspec.Raw(b"\xc1"))
    assert "malformed stream item" in info.value.message
