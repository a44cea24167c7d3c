"""Where a node's decode steps spend their time, phase by phase, so that what is not compute can be found and cut.

A one-token step is stamped as it goes: payload received (a whole frame read from the stream), message and
tensor decoded (`deserialise`), waiting for the scheduler (`queue`), the forward pass itself (`compute`), until
the session's task runs again (`resume`), reply encoded (`serialise`), reply written to the stream (`send`).
Totals since start are reported in `NodeInfo.step_ms`; a reader takes the difference of two snapshots.

A relayed step's wait is elsewhere (the previous node, the client), so phases alone do not show a whole token's
path. For that, a node started with INFERCHAIN_STEP_TRACE=FILE appends one line per one-token step to FILE:
`session start end pos received decoded compute_start compute_end pushed sent`, perf_counter() seconds. On one
machine these clocks agree across processes (CLOCK_MONOTONIC), so bench/chain.py lines up the nodes' lines with
its own stamps into a token's timeline. Off unless set; never sent over the wire.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

TRACE_ENV = "INFERCHAIN_STEP_TRACE"

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
    pushed: float = 0.0  # a relayed step's push to the next node written (between `resumed` and `encoded`)

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
    trace: str | None = field(default_factory=lambda: os.environ.get(TRACE_ENV) or None)
    _trace_fd: int | None = field(default=None, init=False, repr=False)  # opened at the first traced step

    def add(self, stamps: StepStamps, session: str = "", span: tuple[int, int] = (0, 0), pos: int = 0) -> None:
        stamps.sent = stamps.sent or time.perf_counter()
        self.steps += 1
        for phase, ms in stamps.phases_ms().items():
            self.totals_ms[phase] += ms
        if self.trace is not None:
            marks = (stamps.received, stamps.decoded, stamps.compute_start, stamps.compute_end, stamps.pushed)
            name = "".join(session.split()) or "-"  # a client picks its session id: no spaces or line breaks here
            line = " ".join([name, str(span[0]), str(span[1]), str(pos)] + [repr(t) for t in (*marks, stamps.sent)])
            if self._trace_fd is None:
                self._trace_fd = os.open(self.trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self._trace_fd, (line + "\n").encode())  # one O_APPEND write: nodes' lines never interleave

    def snapshot(self) -> dict[str, float]:
        return {"steps": float(self.steps)} | {p: round(ms, 3) for p, ms in self.totals_ms.items()}
