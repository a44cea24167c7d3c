"""Where a node's decode steps spend their time, phase by phase, so that what is not compute can be found and cut.

A one-token step is stamped as it goes: payload received (a whole frame read from the stream), message and
tensor decoded (`deserialise`), waiting for the scheduler (`queue`), the forward pass itself (`compute`), until
the session's task runs again (`resume`), reply encoded (`serialise`), reply written to the stream (`send`).
Totals since start are reported in `NodeInfo.step_ms`; a reader takes the difference of two snapshots.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

PHASES = ("deserialise", "queue", "compute", "resume", "serialise", "send")


@dataclass
class StepStamps:
    """perf_counter() stamps of one step (seconds)."""

    received: float
    decoded: float = 0.0
    compute_start: float = 0.0
    compute_end: float = 0.0
    resumed: float = 0.0
    encoded: float = 0.0
    sent: float = 0.0

    def phases_ms(self) -> dict[str, float]:
        marks = (
            self.received,
            self.decoded,
            self.compute_start,
            self.compute_end,
            self.resumed,
            self.encoded,
            self.sent,
        )
        return {phase: (b - a) * 1000 for phase, a, b in zip(PHASES, marks[:-1], marks[1:], strict=True)}


@dataclass
class StepProfile:
    steps: int = 0
    totals_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    def add(self, stamps: StepStamps) -> None:
        stamps.sent = stamps.sent or time.perf_counter()
        self.steps += 1
        for phase, ms in stamps.phases_ms().items():
            self.totals_ms[phase] += ms

    def snapshot(self) -> dict[str, float]:
        return {"steps": float(self.steps)} | {p: round(ms, 3) for p, ms in self.totals_ms.items()}
