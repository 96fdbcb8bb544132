"""One way for every ``shotline`` command to turn an operator's mistake into a message.

Bad settings, bad input, a file that is not there or a server that cannot be reached end in
one line on stderr (``error: …``) and exit code 2, never a traceback. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg
import typer
from pydantic import ValidationError
from rich.console import Console

from shared.db import MigrationError
from shared.embedded import EmbeddedStartError
from shared.kafka import BrokerUnavailable, DeadLetterBudgetExceeded
from shared.settings import env_name, settings_class_named

err = Console(stderr=True, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr; raise the returned Exit (code 2)."""
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    return typer.Exit(2)


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming what the operator sets: for a settings class the environment
    variable (``SHOTLINE_DISPATCH_ADMIN_TOKEN: must be at least 16 characters``), else the
    field's path."""
    cls = settings_class_named(exc.title)
    problems = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"]]
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "required, not set"
        if cls is not None and loc and loc[0] in cls.model_fields:
            name = env_name(cls, loc[0])
        elif cls is not None and not loc:
            name = ""  # a check across several settings: its message names them
        else:
            name = ".".join(loc) or "value"
        problems.append(f"{name}: {message}" if name else message)
    prefix = "invalid settings: " if cls is not None else "invalid input: "
    return prefix + "; ".join(problems)


def operator_errors(fn: F) -> F:
    """Decorate a command: the errors an operator can cause become a message and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValidationError as exc:  # before ValueError: it is one
            raise fail(describe_validation_error(exc)) from None
        except DeadLetterBudgetExceeded as exc:
            raise fail(f"stopped: {exc} (is a bad producer writing to the topic?)") from None
        except (
            ValueError,
            MigrationError,
            EmbeddedStartError,
            BrokerUnavailable,
            asyncpg.PostgresError,
        ) as exc:
            raise fail(str(exc)) from None
        except OSError as exc:
            if exc.filename:
                raise fail(f"{exc.filename}: {exc.strerror or exc}") from None
            raise fail(f"cannot reach a server: {exc}") from None

    return wrapper  # type: ignore[return-value]
