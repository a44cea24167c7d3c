"""`inferchain model prepare | info`: prepared model folders and their content hashes."""

from __future__ import annotations

from pathlib import Path

import typer

from inferchain.cli.output import console, emit_json, fail

app = typer.Typer(help="Prepare and inspect model folders.", no_args_is_help=True)


@app.command()
def prepare(
    out: Path | None = typer.Option(None, help="Folder to write (default: $INFERCHAIN_HOME/models/<name>)."),
    force: bool = typer.Option(False, help="Rebuild even if a valid folder exists."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Convert the bundled SmolLM2-135M-Instruct GGUF into a safetensors folder with a content hash (once)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from inferchain.models.folder import ModelFolderError
    from inferchain.models.prepare import default_model_dir, prepare_default_model

    target = out or default_model_dir()
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=json_output,
        ) as progress:
            task = progress.add_task("preparing", total=1.0)
            manifest = prepare_default_model(
                target, lambda stage, f: progress.update(task, description=stage, completed=f), force=force
            )
    except ModelFolderError as e:
        fail(str(e))
    if json_output:
        emit_json({"path": str(target), "model_id": manifest.model_id, "layers": manifest.num_layers})
    else:
        console.print(f"[green]ready[/] {manifest.name}: {manifest.num_layers} layers at {target}")
        console.print(f"model id {manifest.model_id}")


@app.command()
def info(
    path: Path | None = typer.Argument(None, help="Model folder (default: the prepared default model)."),
    json_output: bool = typer.Option(False, "--json"),
) -> None:
    """Show a model folder's id, family and size, after checking its manifest against its content."""
    from inferchain.models.folder import ModelFolder, ModelFolderError
    from inferchain.models.prepare import default_model_dir

    folder = ModelFolder(path or default_model_dir())
    try:
        manifest = folder.manifest()
    except ModelFolderError as e:
        fail(str(e))
    data = {
        "path": str(folder.path),
        "name": manifest.name,
        "model_id": manifest.model_id,
        "family": manifest.family,
        "layers": manifest.num_layers,
    }
    if json_output:
        emit_json(data)
    else:
        for k, v in data.items():
            console.print(f"{k:>9}: {v}")
