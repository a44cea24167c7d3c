"""docs/cli.md is generated from the `inferchain` command tree; it must match the code."""

from __future__ import annotations

from inferchain.cli.reference import REFERENCE, render


def test_cli_reference_matches_the_commands() -> None:
    text = render()
    # every registered leaf command has a section, and the file on disk is exactly what the code generates
    for command in ("inferchain node start", "inferchain wallet create", "inferchain market start", "inferchain demo"):
        assert f"## `{command}`" in text
    assert REFERENCE.read_text() == text, "docs/cli.md is stale: run python -m inferchain.cli.reference --write"

