"""The CLI reference (docs/cli.md), generated from the `inferchain` command tree itself.

`python -m inferchain.cli.reference --write` rewrites docs/cli.md; `--check` exits 1 when the file is stale
(tests/test_cli_reference.py runs the same comparison), so the reference cannot drift from the code.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from typer._click.core import Context

from inferchain.cli import app

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"

HEADER = """# CLI reference

Generated from the command itself by `python -m inferchain.cli.reference --write`; a test fails when this file
and the code disagree. Every command also answers `--help`. Commands that print results take `--json` for
scripts. `INFERCHAIN_HOME` (default `~/.inferchain`; the repo's scripts use `.data/`) holds the prepared model,
node identities and receipt stores, wallets and the devnet files.
"""


def _commands(command: Any, ctx: Context) -> Iterator[tuple[Any, Context]]:
    """Every leaf command under `command`, depth first, in the order they were registered."""
    children = getattr(command, "commands", None)
    if children is None or getattr(command, "invoke_without_command", False):
        yield command, ctx  # a leaf, or a group that runs on its own (`inferchain demo`)
    if children is None:
        return
    for name, child in children.items():
        if not child.hidden:
            yield from _commands(child, Context(child, info_name=name, parent=ctx))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The whole reference as Markdown."""
    root = typer.main.get_command(app)
    out = [HEADER]
    top = Context(root, info_name="inferchain")
    for command, ctx in _commands(root, top):
        if ctx is top:
            continue
        usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
        out += [f"## `{ctx.command_path}`", "", f"```\n{usage}\n```", ""]
        if command.help:
            out += [command.help.strip(), ""]
        rows = []
        for param in command.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or record[0] == "--help":
                continue
            rows.append(f"| `{_cell(record[0])}` | {_cell(record[1])} |")
        if rows:
            out += ["| argument / option | meaning |", "| --- | --- |", *rows, ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--write"]:
        REFERENCE.write_text(text)
        print(f"wrote {REFERENCE.name}")
        return 0
    if argv == ["--check"]:
        if REFERENCE.exists() and REFERENCE.read_text() == text:
            return 0
        print(f"{REFERENCE} is stale: run python -m inferchain.cli.reference --write", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
