"""Which event loop mcphost runs: uvloop when it is installed, the stdlib loop otherwise.

uvloop (libuv under asyncio's API) runs the call path at about half the CPU per frame
of the pure-Python loop. ``MCPHOST_LOOP=asyncio`` chooses the stdlib loop even where
uvloop is installed (to compare, or to rule the loop out); ``MCPHOST_LOOP=uvloop``
asks for uvloop and is an error where it cannot be imported (never a silent fallback);
left unset, uvloop runs where it is installed and the stdlib loop elsewhere. The host
and the worker both choose here, so one variable sets both: a worker inherits it from
its host (see :func:`mcphost.sandbox.isolation.clean_env`).

uvloop is imported on first use, not when this module is imported.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import IO

__all__ = [
    "ENV",
    "LOOPS",
    "loop_factory",
    "loop_name",
    "new_event_loop",
    "pipe_file",
    "wanted_loop",
]

#: The environment variable that chooses the loop.
ENV = "MCPHOST_LOOP"
#: The values it may take.
LOOPS = ("uvloop", "asyncio")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def wanted_loop() -> str:
    """The loop ``MCPHOST_LOOP`` asks for (``"uvloop"`` when unset), checked but not
    imported; ConfigError for a value that names no loop."""
    wanted = os.environ.get(ENV, "").strip().lower() or "uvloop"
    if wanted not in LOOPS:
        from mcphost.sdk.errors import ConfigError

        raise ConfigError(
            f"{ENV}={wanted!r} is not a known event loop; set it to one of "
            f"{', '.join(LOOPS)} (or leave it unset for uvloop where installed)"
        )
    return wanted


def _choose() -> tuple[str, LoopFactory]:
    # Read each time (a lookup and, after the first, a cached import): a test or an
    # embedding application may change the variable.
    if wanted_loop() == "uvloop":
        try:
            import uvloop
        except ImportError:
            if os.environ.get(ENV, "").strip():
                from mcphost.sdk.errors import ConfigError

                raise ConfigError(
                    f"{ENV}=uvloop but uvloop is not installed; install it "
                    f"(pip install uvloop) or set {ENV}=asyncio"
                ) from None
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop


def loop_factory() -> LoopFactory:
    """What makes a new event loop of the chosen kind, e.g. for ``asyncio.Runner``."""
    return _choose()[1]


def loop_name() -> str:
    """``"uvloop"`` or ``"asyncio"``: the kind of loop :func:`loop_factory` makes."""
    return _choose()[0]


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop of the chosen kind."""
    return _choose()[1]()


def pipe_file(fd: int, mode: str) -> IO[bytes]:
    """An unbuffered file object over ``fd`` to hand to ``connect_read_pipe`` or
    ``connect_write_pipe`` of the running loop, such that ``fd`` is closed exactly once.

    uvloop gives the fd to libuv, which closes it when the transport closes, and the
    file object attached to the transport closes the same number again when it is
    collected (uvloop issue #763): if another thread was given that number in between,
    its descriptor is closed under it (a worker's channel, a jail's pipe). Under uvloop
    the file object therefore leaves the fd to libuv; under the stdlib loop the
    transport closes the fd through the file object, as usual.
    """
    loop = asyncio.get_running_loop()
    libuv = type(loop).__module__.partition(".")[0] == "uvloop"
    return open(fd, mode, buffering=0, closefd=not libuv)
