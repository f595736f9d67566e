"""notes: a tiny persistent note store in the plugin's private data directory."""

from __future__ import annotations

import json
import re

from mcphost.sdk import Context, Message, Plugin, TextResource, ToolError

__version__ = "1.0.0"

plugin = Plugin("notes", description="Keep short notes that survive restarts")

_TITLE = re.compile(r"^[\w .-]{1,80}$")


def _path(ctx: Context, title: str) -> str:
    if not _TITLE.match(title) or title.strip(". ") == "":
        raise ToolError(
            f"bad note title {title!r}: use 1-80 letters, digits, spaces, '.', '_' or '-'",
            code="bad_title",
        )
    return str(ctx.data_dir / f"{title}.json")


@plugin.tool
def save(title: str, body: str, ctx: Context) -> str:
    """Save a note under a title (replacing one of the same title)."""
    with open(_path(ctx, title), "w", encoding="utf-8") as f:
        json.dump({"title": title, "body": body}, f)
    # Clients subscribed to this note's resource, or to the index, hear of it.
    ctx.notify_resource_updated(f"notes://note/{title}")
    ctx.notify_resource_updated("notes://index")
    return title


@plugin.tool
def read(title: str, ctx: Context) -> str:
    """Return the body of the note with that title."""
    try:
        with open(_path(ctx, title), encoding="utf-8") as f:
            return str(json.load(f)["body"])
    except FileNotFoundError:
        raise ToolError(f"no note titled {title!r}; see notes.list", code="not_found") from None


@plugin.tool(name="list")
def list_notes(ctx: Context) -> list[str]:
    """Titles of all saved notes, sorted."""
    return sorted(p.stem for p in ctx.data_dir.glob("*.json"))


@plugin.resource("notes://index", mime_type="application/json")
def index(ctx: Context) -> str:
    """The titles of all saved notes, as a JSON list."""
    return json.dumps(list_notes(ctx))


@plugin.resource("notes://note/{title}", mime_type="text/plain")
def note(title: str, ctx: Context) -> str:
    """The body of one note."""
    return read(title, ctx)


@plugin.prompt
def summarize(title: str, ctx: Context, words: int = 50) -> list[Message]:
    """Ask for a summary of one note; the note travels as an embedded resource."""
    return [
        Message("user", f"Summarize this note in at most {words} words."),
        Message(
            "user",
            TextResource(f"notes://note/{title}", read(title, ctx), mime_type="text/plain"),
        ),
    ]


@plugin.completion("summarize", "title")
@plugin.completion("notes://note/{title}", "title")
def complete_title(value: str, ctx: Context) -> list[str]:
    """The titles of saved notes that begin with what was typed."""
    return [t for t in list_notes(ctx) if t.startswith(value)]
