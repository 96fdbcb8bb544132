"""``shotline dispatch``: run the dispatch service, inspect dead letters, replay them.

* ``shotline dispatch`` — run (SHOTLINE_DISPATCH_* settings; blocks until SIGTERM/SIGINT);
* ``shotline dispatch undelivered`` — what did not arrive: failed and dead deliveries;
* ``shotline dispatch dead-letters list`` — deliveries that exhausted their retries;
* ``shotline dispatch replay ID …`` / ``--all-undelivered`` / ``--all-dead`` — send them
  again (same webhook-id).

Operator mistakes (bad settings, unknown id, unreachable database) end in one line on stderr
and exit code 2, never a traceback.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from services.dispatch import store
from shared.cli import err, fail, operator_errors
from shared.runtime import with_database

app = typer.Typer(
    help="Alert dispatch: webhooks and officer push for located incidents.",
    pretty_exceptions_enable=False,
)
dead_letters_app = typer.Typer(
    help="Deliveries that exhausted their retries.", no_args_is_help=True
)
app.add_typer(dead_letters_app, name="dead-letters")

out = Console()


def _with_pool(action: Callable[[asyncpg.Pool], Awaitable[Any]]) -> Any:
    return with_database(action)


@app.callback(invoke_without_command=True)
@operator_errors
def main(ctx: typer.Context) -> None:
    """Run the dispatch service (consumer, delivery workers, admin API) until a signal."""
    if ctx.invoked_subcommand is not None:
        return
    from services.dispatch.main import run
    from services.dispatch.settings import DispatchSettings

    run(DispatchSettings())  # type: ignore[call-arg]  # admin_token comes from the environment


def _print_deliveries(rows: list[dict[str, Any]]) -> None:
    table = Table(
        "id", "status", "subscription", "incident", "v", "webhook-id", "attempts", "last error"
    )
    for r in rows:
        table.add_row(
            str(r["delivery_id"]),
            r["status"],
            r["subscription_id"],
            r["incident_id"],
            str(r["version"]),
            r["webhook_id"],
            str(r["attempts"]),
            r["last_error"] or "",
        )
    out.print(table)


def _list(status: str, subscription: str | None, incident: str | None, limit: int) -> list[Any]:
    async def _go(pool: asyncpg.Pool) -> list[dict[str, Any]]:
        return await store.list_deliveries(
            pool, status=status, subscription_id=subscription, incident_id=incident, limit=limit
        )

    rows: list[dict[str, Any]] = _with_pool(_go)
    _print_deliveries(rows)
    return rows


@app.command("undelivered")
@operator_errors
def undelivered(
    subscription: Annotated[str | None, typer.Option(help="Only this subscription")] = None,
    incident: Annotated[str | None, typer.Option(help="Only this incident")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
) -> None:
    """List what did not arrive: failed (refused, subscription disabled) and dead (retries
    exhausted) deliveries, oldest first. `replay --all-undelivered` sends them again."""
    rows = _list("undelivered", subscription, incident, limit)
    err.print(f"{len(rows)} undelivered")


@dead_letters_app.command("list")
@operator_errors
def dead_letters_list(
    subscription: Annotated[str | None, typer.Option(help="Only this subscription")] = None,
    incident: Annotated[str | None, typer.Option(help="Only this incident")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
) -> None:
    """List dead-lettered deliveries, oldest first."""
    rows = _list("dead", subscription, incident, limit)
    err.print(f"{len(rows)} dead letter(s)")


@app.command("replay")
@operator_errors
def replay(
    delivery_ids: Annotated[
        list[int] | None, typer.Argument(help="Delivery ids to replay (see dead-letters list)")
    ] = None,
    all_undelivered: Annotated[
        bool, typer.Option("--all-undelivered", help="Every failed and dead delivery")
    ] = False,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Every dead letter")] = False,
    subscription: Annotated[str | None, typer.Option(help="With --all-…: only this")] = None,
    incident: Annotated[str | None, typer.Option(help="With --all-…: only this")] = None,
) -> None:
    """Send undelivered (dead or failed) deliveries again, same webhook-id and body."""
    bulk = "undelivered" if all_undelivered else "dead" if all_dead else None
    if all_undelivered and all_dead:
        raise fail("give --all-undelivered or --all-dead, not both")
    if not delivery_ids and bulk is None:
        raise fail("give delivery ids, --all-undelivered or --all-dead")
    if delivery_ids and bulk is not None:
        raise fail("give delivery ids or --all-…, not both")

    async def _go(pool: asyncpg.Pool) -> tuple[list[int], list[str]]:
        if bulk is not None:
            ids = await store.replay(
                pool, status=bulk, subscription_id=subscription, incident_id=incident
            )
            return ids, []
        done: list[int] = []
        problems: list[str] = []
        for delivery_id in delivery_ids or []:
            status = await store.delivery_status(pool, delivery_id)
            if status is None:
                problems.append(f"delivery {delivery_id} not found")
            elif status not in {"dead", "failed"}:
                problems.append(f"delivery {delivery_id} is {status}, not dead or failed")
            elif not await store.replay(pool, delivery_id=delivery_id, status=status):
                problems.append(f"delivery {delivery_id}: its subscription is disabled")
            else:
                done.append(delivery_id)
        return done, problems

    done, problems = _with_pool(_go)
    out.print(f"replayed {len(done)} deliver{'y' if len(done) == 1 else 'ies'}")
    if problems:
        raise fail("; ".join(problems))
