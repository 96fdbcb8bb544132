"""``shotline locator``: run the locator (no subcommand) or refit its scoring model (``fit``).

Every failure an operator can cause (bad settings, a missing or malformed file, an unreachable
broker) ends in a one-line message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from shared.cli import err, fail, operator_errors

app = typer.Typer(
    help="The locator: detections in, located and classified incidents out.",
    pretty_exceptions_enable=False,
)
out = Console()


@app.callback(invoke_without_command=True)
@operator_errors
def locator(ctx: typer.Context) -> None:
    """Run the locator consumer until SIGTERM/SIGINT (SHOTLINE_LOCATOR_* settings)."""
    if ctx.invoked_subcommand is not None:
        return
    from services.locator.main import run
    from services.locator.settings import LocatorSettings

    run(LocatorSettings())


@app.command("fit")
@operator_errors
def fit_command(
    labels: Annotated[Path, typer.Argument(help="labels.csv: features + label per incident")],
    out_path: Annotated[
        Path, typer.Option("--out", help="Where to write the refitted model (JSON)")
    ] = Path("scoring_model.json"),
    base: Annotated[
        Path | None, typer.Option(help="Model to refit (default: the packaged one)")
    ] = None,
) -> None:
    """Refit the gunfire scoring model from labelled incidents; print its calibration.

    The figures are measured on the same rows the model was fitted on (in-sample).
    """
    from services.locator.fit import evaluate, fit, read_labels_csv
    from services.locator.scoring import ScoringModel

    if not labels.is_file():
        raise fail(f"{labels}: no such file")
    rows = read_labels_csv(labels)
    model = fit(rows, ScoringModel.load(base))
    report = evaluate(model, rows)
    model.save(out_path)
    _print_report(report)
    err.print(
        f"model {model.version} written to {out_path}; use it with "
        f"SHOTLINE_LOCATOR_SCORING_MODEL_PATH={out_path}",
        highlight=False,
    )


def _print_report(report: dict[str, Any]) -> None:
    out.print(
        f"rows {report['rows']}  brier {report['brier']:.4f}  log loss "
        f"{report['log_loss']:.4f}  AUC(gunfire) {report['auc_gunfire']:.4f}  (in-sample)",
        highlight=False,
    )
    reliability = Table("P(gunfire) bin", "count", "mean predicted", "observed gunfire")
    for row in report["reliability"]:
        lo, hi = row["bin"]
        reliability.add_row(
            f"{lo:.1f}-{hi:.1f}",
            str(row["count"]),
            f"{row['mean_predicted']:.3f}",
            f"{row['observed']:.3f}",
        )
    out.print(reliability)
    confusion = report["confusion"]
    classes = list(next(iter(confusion.values())))
    table = Table("label \\ class", *classes)
    for label, counts in confusion.items():
        table.add_row(label, *(str(counts[c]) for c in classes))
    out.print(table)
