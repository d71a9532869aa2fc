"""`cai train …`: training commands, each a thin call into `cai.train`.

torch/transformers/TRL are imported inside the commands, so `cai --help` stays fast. Every
command also runs under `accelerate launch` (e.g. ``accelerate launch --config_file
accelerate/ddp.yaml -m cai.cli train sft …``); only the main process prints the summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

DataOpt = Annotated[list[str], typer.Option(
    "--data", "-d", help="SL-CAI output folder (its dataset/ or sft.jsonl), a saved dataset, or a "
    "JSONL file of `messages` rows. Repeat to combine.")]
ModelOpt = Annotated[str, typer.Option(
    "--model", "-m", help="Base model: embedded, a local model folder, or a hub id.")]
OutOpt = Annotated[Path, typer.Option(
    "--out", "-o", help="Folder for the trained model (new or empty).")]
HelpfulOpt = Annotated[list[str] | None, typer.Option(
    "--helpful", help="Helpfulness data (`messages` rows) mixed in so the model stays helpful.")]
HelpfulRatioOpt = Annotated[float, typer.Option(
    "--helpful-ratio", help="Share of the training rows drawn from --helpful, in [0, 1).")]
EpochsOpt = Annotated[float, typer.Option(
    "--epochs", help="Passes over the data (ignored with --max-steps).")]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak learning rate (linear decay).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Rows per device per step.")]
AccumOpt = Annotated[int, typer.Option("--grad-accum", help="Gradient accumulation steps.")]
MaxLenOpt = Annotated[int, typer.Option(
    "--max-length", help="Tokens per row; longer rows are cut at the end.")]
MaxStepsOpt = Annotated[int, typer.Option(
    "--max-steps", help="Stop after N optimiser steps (-1: use --epochs).")]
SeedOpt = Annotated[int, typer.Option(
    "--seed", help="Seed for data order, mixing, splits and init.")]
EvalOpt = Annotated[float, typer.Option(
    "--eval-fraction", help="Share of --data held out to report eval loss before/after.")]
OverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", help="Replace a model already in --out (its folder is emptied first).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or log chatter.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


def sft(
    data: DataOpt,
    out: OutOpt,
    model: ModelOpt = "embedded",
    helpful: HelpfulOpt = None,
    helpful_ratio: HelpfulRatioOpt = 0.0,
    epochs: EpochsOpt = 1.0,
    lr: LrOpt = 1e-5,
    batch_size: BatchOpt = 4,
    grad_accum: AccumOpt = 1,
    max_length: MaxLenOpt = 512,
    max_steps: MaxStepsOpt = -1,
    seed: SeedOpt = 0,
    eval_fraction: EvalOpt = 0.0,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Supervised fine-tuning on SL-CAI revisions (TRL SFTTrainer); loss on the answers only."""
    from cai.train.common import is_main_process
    from cai.train.sft import train_sft

    summary = train_sft(
        data, model, str(out), helpful=helpful, helpful_ratio=helpful_ratio, epochs=epochs,
        lr=lr, batch_size=batch_size, grad_accum=grad_accum, max_length=max_length,
        max_steps=max_steps, seed=seed, eval_fraction=eval_fraction, quiet=quiet,
        overwrite=overwrite)
    if is_main_process():
        _print_summary(summary, as_json)


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return

    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    rows = summary["rows"]
    steps = summary["steps"]
    typer.echo(f"trained {steps} step{'s' * (steps != 1)} on {rows['train']} rows "
               f"({rows['helpful']} helpful) → {summary['out']}")
    first, last = fmt(summary["train_loss_first"]), fmt(summary["train_loss_last"])
    typer.echo(f"train loss {first} → {last}")
    if summary["eval_loss_before"] is not None:
        before, after = fmt(summary["eval_loss_before"]), fmt(summary["eval_loss_after"])
        typer.echo(f"eval loss {before} → {after} on {rows['eval']} held-out rows")
    if rows["skipped_empty_answer"]:
        typer.echo(f"skipped {rows['skipped_empty_answer']} rows with an empty answer")
    if rows["dropped_too_long"]:
        typer.echo(f"dropped {rows['dropped_too_long']} rows whose prompt exceeds --max-length")
    if summary["params_changed"] is False:
        typer.echo("warning: no parameter changed (learning rate 0 or no trainable tokens?)",
                   err=True)


def register(app: typer.Typer) -> None:
    """Add the `train` group. Built here, not at import, so importing this module changes nothing.

    `pm` and `ppo` live in `cai.cli_rl` and join this group through its `register_train`.
    """
    import importlib

    train_app = typer.Typer(no_args_is_help=True,
                            help="Train models with TRL: sft (SL-CAI), pm, ppo (RL-CAI).")
    train_app.command("sft")(sft)
    try:
        rl = importlib.import_module("cai.cli_rl")
    except ModuleNotFoundError as e:
        if e.name != "cai.cli_rl":
            raise
    else:
        rl.register_train(train_app)
    app.add_typer(train_app, name="train")
