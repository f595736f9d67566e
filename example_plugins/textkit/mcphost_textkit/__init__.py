"""textkit: small text tools, one of them streaming."""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import AsyncIterator, Iterator

import msgspec

from mcphost.sdk import Context, Plugin

__version__ = "1.0.0"

plugin = Plugin("textkit", description="Text tools: case, counting, slugs, tokens")


class WordCount(msgspec.Struct):
    """How many words, characters and lines a text has."""

    words: int
    characters: int
    lines: int


@plugin.tool
def upper(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


@plugin.tool
def echo(text: str) -> str:
    """Return the text unchanged (handy for measuring the host's own overhead)."""
    return text


@plugin.tool
def count(text: str) -> WordCount:
    """Count the words, characters and lines of a text."""
    return WordCount(
        words=len(text.split()), characters=len(text), lines=text.count("\n") + 1 if text else 0
    )


@plugin.tool
def slugify(text: str, separator: str = "-") -> str:
    """Turn a title into a URL slug: ASCII, lower case, words joined by the separator."""
    norm = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", norm.lower())
    return separator.join(words)


@plugin.tool
def tokens(text: str) -> Iterator[str]:
    """Stream the words of a text, one item per word."""
    yield from text.split()


@plugin.tool
async def count_to(n: int, ctx: Context, delay: float = 0.0) -> AsyncIterator[int]:
    """Stream the numbers 0..n-1, reporting progress; ``delay`` seconds between items."""
    for i in range(n):
        if delay:
            await asyncio.sleep(delay)
        ctx.progress(i + 1, n)
        yield i


@plugin.tool
async def sleep(seconds: float, ctx: Context) -> float:
    """Wait ``seconds`` (cancellable) and return how long was waited."""
    ctx.info(f"sleeping {seconds}s")
    await asyncio.sleep(seconds)
    return seconds
