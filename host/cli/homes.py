"""Which commands may create a home: the decorators that hand a command its home.

A mistyped ``--home`` must never become a new, empty home that answers "nothing
installed". Commands that only read (``plugin list``, ``tools``, ``serve``, ``audit``,
...) take the home as it is and fail with ``home_not_found`` where there is none;
commands that set something up (``plugin install``, ``keys trust``, ``tokens create``,
...) create it, but never inside a directory that holds something else.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper
from typing import Any, Literal, TypeVar, cast

import click

from ..home import Home

__all__ = ["pass_existing_home", "pass_home_to_create", "pass_serving_home"]

F = TypeVar("F", bound=Callable[..., Any])
Use = Literal["existing", "create", "serve"]


def _home_named(ctx: click.Context) -> bool:
    """Whether the home was given (``--home`` or ``$MCPHOST_HOME``), not the default."""
    return ctx.find_root().params.get("home") is not None


def _pass_home(use: Use) -> Callable[[F], F]:
    def decorator(f: F) -> F:
        @click.pass_context
        def new_func(ctx: click.Context, /, *args: Any, **kwargs: Any) -> Any:
            home = ctx.find_object(Home)
            assert home is not None, "the mcphost group sets the home"
            if use == "create":
                home.create()
            elif use == "serve" and not _home_named(ctx) and home.state() == "missing":
                # The default home cannot be mistyped, and plugins installed in mcphost's
                # environment keep their data in it: a host makes it on first use.
                home.create()
            else:
                home.require()
            return ctx.invoke(f, home, *args, **kwargs)

        return cast(F, update_wrapper(new_func, f))

    return decorator


#: The home must exist (a home, or an empty directory): for commands that only read it,
#: or change what is in it.
pass_existing_home = _pass_home("existing")
#: The home is created when missing: for commands that set one up.
pass_home_to_create = _pass_home("create")
#: ``tools``, ``call`` and ``serve``: an existing home, or the default one, made on first
#: use when it is missing.
pass_serving_home = _pass_home("serve")
