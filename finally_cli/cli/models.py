"""`finally models list|info|download|create`: named models, the Hub cache, random starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from finally_cli.cli.command import App
from finally_cli.cli.options import JsonOpt, OfflineOpt, RevisionOpt, handle_errors

app = App(help="List, inspect, download and create models.", no_args_is_help=True)

LIST_CAPTION = (
    "A preset is an architecture; only names with weights enhance. `finally models create "
    "PRESET -o DIR` makes a random start."
)
REIMPL_TRAINABLE_M = 143.7
REIMPL_WAVLM_M = 315.0


@app.command("list")
@handle_errors
def list_models(as_json: JsonOpt = False) -> None:
    """Presets and the model folders in weights/."""
    from finally_cli.models.config import PRESETS
    from finally_cli.models.hub import WEIGHTS_NAME, registry_names, resolve_model

    rows = []
    registry = set(registry_names())
    for name in sorted(set(PRESETS) | registry):
        entry = {
            "name": name,
            "preset": name in PRESETS,
            "folder": None,
            "weights": False,
            "size_mb": 0.0,
        }
        if name in registry:
            folder = resolve_model(name).folder
            weights = folder / WEIGHTS_NAME
            entry.update(
                folder=str(folder),
                weights=weights.is_file(),
                size_mb=round(weights.stat().st_size / 2**20, 2) if weights.is_file() else 0.0,
            )
        rows.append(entry)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    # Paths fold onto more lines instead of being cut: they are what a user copies.
    table = Table("name", "preset", "weights", "folder", caption=LIST_CAPTION)
    table.columns[3].overflow = "fold"
    for r in rows:
        table.add_row(
            r["name"],
            "yes" if r["preset"] else "",
            f"{r['size_mb']:.1f} MB" if r["weights"] else "none",
            r["folder"] or "",
        )
    Console().print(table)


def _config_for(spec: str, revision: str | None, offline: bool):  # noqa: ANN202
    """(config, model folder or None for a bare preset)."""
    from finally_cli.models.config import PRESETS, preset
    from finally_cli.models.hub import read_config, registry_names, resolve_model

    if spec in PRESETS and spec not in registry_names():
        return preset(spec), None
    folder = resolve_model(spec, revision=revision, offline=offline).folder
    return read_config(folder), folder


def card_summary(folder: Path | None) -> dict:
    """Licence, title and first sentence of a model card (README.md front matter + text)."""
    from finally_cli.models.hub import CARD_NAME, WEIGHTS_NAME

    if folder is None:
        return {"licence": None, "title": "preset: an architecture without weights", "card": None}
    card = folder / CARD_NAME
    if not card.is_file():
        return {"licence": None, "title": "no model card (README.md)", "card": None}
    text = card.read_text(encoding="utf-8", errors="replace")
    licence, body = None, text
    if text.startswith("---"):
        front, _, body = text[3:].partition("\n---")
        for line in front.splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("license", "licence"):
                licence = value.strip() or None
    title = next(
        (line.lstrip("# ").strip() for line in body.splitlines() if line.startswith("#")), ""
    )
    weights = folder / WEIGHTS_NAME
    return {
        "licence": licence,
        "title": title,
        "card": str(card),
        "weights_mb": round(weights.stat().st_size / 2**20, 1) if weights.is_file() else 0.0,
    }


def parameter_report(config) -> dict:  # noqa: ANN001
    """Parameters per block (counted on the meta device: nothing is allocated)."""
    import torch

    from finally_cli.models.generator import FinallyGenerator

    with torch.device("meta"):
        model = FinallyGenerator(config)
    blocks = {}
    for name, block in model.blocks().items():
        count = sum(p.numel() for p in block.parameters())
        blocks[name] = {"parameters": count, "frozen": name == "ssl"}
    trainable = sum(b["parameters"] for b in blocks.values() if not b["frozen"])
    frozen = sum(b["parameters"] for b in blocks.values() if b["frozen"])
    return {
        "name": config.name,
        "output_sample_rate": config.output_sample_rate,
        "ssl": config.ssl.model_id if config.ssl.enabled else None,
        "blocks": blocks,
        "trainable": trainable,
        "frozen": frozen,
        "total": trainable + frozen,
    }


@app.command()
@handle_errors
def info(
    name: Annotated[str, typer.Argument(help="Preset, name in weights/, folder or Hub id.")],
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Architecture summary and parameters per block."""
    config, folder = _config_for(name, revision, offline)
    report = parameter_report(config)
    report["card"] = card_summary(folder)
    if as_json:
        report["config"] = config.to_dict()
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "block",
        "parameters",
        "",
        title=f"{config.name} (16 kHz in → {config.output_sample_rate // 1000} kHz out)",
    )
    for block, entry in report["blocks"].items():
        table.add_row(
            block,
            f"{entry['parameters'] / 1e6:.3f} M",
            "frozen" if entry["frozen"] else "trainable",
        )
    table.add_row("[bold]trainable", f"[bold]{report['trainable'] / 1e6:.3f} M", "")
    table.add_row("[bold]frozen (SSL)", f"[bold]{report['frozen'] / 1e6:.3f} M", "")
    table.add_row("[bold]total", f"[bold]{report['total'] / 1e6:.3f} M", "")
    console = Console()
    console.print(table)
    card = report["card"]
    console.print(f"licence: {card['licence'] or 'not stated'}", highlight=False)
    console.print(f"card: {card['card'] or '-'}", highlight=False, overflow="fold")
    if card["title"]:
        console.print(card["title"], highlight=False)
    if config.name == "finally-large":
        console.print(
            f"Public re-implementation: {REIMPL_TRAINABLE_M} M trainable + {REIMPL_WAVLM_M:.0f} M "
            "WavLM-Large; the difference is explained in docs/architecture.md."
        )


@app.command()
@handle_errors
def download(
    repo_id: Annotated[str, typer.Argument(help="Hub id owner/name\\[@revision].")],
    revision: RevisionOpt = None,
    with_ssl: Annotated[
        bool,
        typer.Option(
            "--with-ssl/--no-ssl", help="Also fetch the SSL encoder weights the config names."
        ),
    ] = True,
) -> None:
    """Fetch a model (and its SSL encoder) into the Hugging Face cache."""
    from finally_cli.models.hub import download_model, read_config

    repo, _, inline = repo_id.partition("@")
    folder = download_model(repo, revision or inline or None)
    config = read_config(folder)
    if with_ssl and config.ssl.enabled and config.ssl.weights == "hub":
        from huggingface_hub import snapshot_download

        snapshot_download(config.ssl.model_id, revision=config.ssl.revision)
    typer.echo(str(folder))


@app.command()
@handle_errors
def create(
    preset_name: Annotated[
        str, typer.Argument(metavar="PRESET", help="finally-large, finally-small or tiny.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write.")],
    seed: Annotated[int, typer.Option(help="Random seed of the initial weights.")] = 0,
    ssl_weights: Annotated[
        str | None,
        typer.Option(
            help="SSL weights source: hub, random or checkpoint \\[default: the preset's]."
        ),
    ] = None,
    overlay: Annotated[
        list[Path] | None,
        typer.Option(help="Sparse YAML overrides of the config (e.g. an ablation); repeatable."),
    ] = None,
    ssl_stats: Annotated[
        Path | None,
        typer.Option(
            help="Clean SSL statistics from `finally train ssl-stats` for normalize_layers."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
) -> None:
    """Write a randomly initialised model folder (a training start or a speed benchmark)."""
    from dataclasses import replace

    from finally_cli.errors import OutputError
    from finally_cli.models.config import apply_overlay, preset
    from finally_cli.models.hub import CONFIG_NAME, create_model, save_model

    config = preset(preset_name)
    for path in overlay or []:
        config = apply_overlay(config, path)
    if ssl_weights is not None:
        config = replace(config, ssl=replace(config.ssl, weights=ssl_weights))
    if (output / CONFIG_NAME).exists() and not overwrite:
        raise OutputError(f"{output}: already holds a model (pass --overwrite to replace it)")
    model = create_model(config, seed=seed)
    if ssl_stats is not None:
        from finally_cli.training.ssl_stats import load_statistics

        if model.ssl is None or model.ssl.norm is None:
            raise OutputError(
                f"{ssl_stats}: the config normalises no SSL layer (set ssl.normalize_layers)"
            )
        try:
            model.ssl.norm.load_statistics(load_statistics(ssl_stats))
        except (KeyError, OSError, RuntimeError) as err:
            raise OutputError(f"{ssl_stats}: {err}") from err
    save_model(model, output)
    typer.echo(str(output))
