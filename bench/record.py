"""Where a benchmark's figures go: one JSON line appended to its file under bench/results/, also printed."""

from __future__ import annotations

import json
from pathlib import Path


def write_result(out: str | Path, result: dict, echo: bool = True) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        f.write(json.dumps(result) + "\n")
    if echo:
        print(json.dumps(result))
