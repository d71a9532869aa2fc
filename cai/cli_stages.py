"""Commands of the SL-CAI data stage: `critique`, `try`, `merge`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cai.cli_common import (
    BaseUrlOpt,
    ConcurrencyOpt,
    DeviceOpt,
    DtypeOpt,
    KeyEnvOpt,
    LimitOpt,
    ModelOpt,
    QuietOpt,
    SeedOpt,
    ShardOpt,
    open_backend,
)

ConstitutionOpt = Annotated[str, typer.Option("--constitution", "-c", help="A path or a shipped name.")]


def critique(
    prompts: Annotated[
        str,
        typer.Option(
            "--prompts", "-p", help="JSONL/CSV/TXT file, datasets folder, or a shipped set (red-team, helpful)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder; rerunning the same command resumes it.")],
    constitution: ConstitutionOpt = "harmless",
    model: ModelOpt = "embedded",
    rounds: Annotated[int | None, typer.Option(help="Critique→revision rounds (default: the constitution's).")] = None,
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
    shard: ShardOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Prompts per batch (one work unit).")] = 16,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 160,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.7,
    top_p: Annotated[float, typer.Option("--top-p")] = 0.95,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    concurrency: ConcurrencyOpt = 8,
    quiet: QuietOpt = False,
) -> None:
    """Generate SL-CAI data: answer, then critique and revise against sampled principles."""
    from cai.constitution import load_constitution
    from cai.models.base import GenerationParams
    from cai.records import parse_shard
    from cai.sources import load_prompts
    from cai.stages.critique import CritiqueSettings, run_critique

    c = load_constitution(constitution)
    items = load_prompts(prompts, limit)
    settings = CritiqueSettings(
        rounds=rounds,
        seed=seed,
        batch_size=batch_size,
        shard=parse_shard(shard),
        params=GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p),
    )
    backend = open_backend(model, base_url, api_key_env, dtype, device, concurrency, quiet=quiet)
    try:
        summary = run_critique(c, items, backend, out, settings, quiet=quiet)
    finally:
        backend.close()
    t = summary["throughput"]
    typer.echo(
        f"{summary['records']} records ({summary['exported']} exported, {summary['excluded_flagged']} flagged, "
        f"{summary['errors']} errors) in {out}; {t['prompts_s']} prompts/s, {t['tok_s']} tok/s"
    )


def try_principle(
    prompt: Annotated[str, typer.Option("--prompt", help="One user prompt.")],
    constitution: ConstitutionOpt = "harmless",
    principle: Annotated[
        list[str] | None, typer.Option("--principle", help="Principle id; repeat for several rounds.")
    ] = None,
    model: ModelOpt = "embedded",
    rounds: Annotated[int, typer.Option(help="Rounds when --principle is not given (sampled).")] = 1,
    seed: SeedOpt = 0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 160,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.7,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
) -> None:
    """One live critique→revision on one prompt, printed round by round."""
    import random

    from cai import conversation as conv
    from cai.cleaning import clean_revision, quality_flags
    from cai.constitution import load_constitution
    from cai.models.base import GenerationParams

    c = load_constitution(constitution)
    chosen = (
        [c.critique_principle(p) for p in principle] if principle else c.sample_critique(random.Random(seed), rounds)
    )
    backend = open_backend(model, base_url, api_key_env, dtype, device)
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=0.95, seed=seed)
    messages = [{"role": "user", "content": prompt}]

    def one(convo: list[dict[str, str]]) -> str:
        g = backend.generate([convo], params)[0]
        if g.error:
            from cai.errors import fail

            raise fail("--model", None, model, f"generation failed: {g.error}")
        return g.texts[0].strip()

    try:
        answer = one(conv.prompt_messages(c, messages))
        typer.secho("[initial answer]", bold=True)
        typer.echo(answer)
        for r, p in enumerate(chosen, 1):
            critique_text = one(conv.critique_messages(c, messages, answer, p))
            typer.secho(f"\n[round {r}: {p.ref}] critique", bold=True)
            typer.echo(critique_text)
            revised = clean_revision(one(conv.revision_messages(c, messages, answer, p, critique_text)))
            flags = quality_flags(revised, previous=answer, request=p.principle.revision)  # type: ignore[union-attr]
            typer.secho(f"[round {r}: {p.ref}] revision" + (f"  flags: {', '.join(flags)}" if flags else ""), bold=True)
            typer.echo(revised)
            answer = revised
    finally:
        backend.close()


def merge(
    dirs: Annotated[list[Path], typer.Argument(help="Shard folders of one run.")],
    out: Annotated[Path, typer.Option("--out", "-o")],
) -> None:
    """Merge `--shard` folders into one, ordered as an unsharded run, and re-export."""
    from cai.records import MANIFEST, Store, merge_stores

    n = merge_stores(dirs, out)
    manifest = json.loads((out / MANIFEST).read_text())
    if manifest.get("stage") == "critique":
        from cai.stages.critique_export import export_critique, write_summary

        write_summary(out, export_critique(Store(out, manifest), out))
    elif manifest.get("stage") == "label":
        from cai.stages.label_export import export_labels

        export_labels(Store(out, manifest), out)
    typer.echo(f"merged {n} records into {out}")


def register(app: typer.Typer) -> None:
    app.command()(critique)
    app.command("try")(try_principle)
    app.command()(merge)
