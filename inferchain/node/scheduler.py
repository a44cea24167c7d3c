"""The node's step scheduler: every session's forward request goes through one queue; decode steps waiting at the
same time are run as one batch, and long prefills are cut into chunks so that decoding sessions never wait for a
whole prompt.

Compute runs inline on the node's event-loop thread. Handing each step to a worker thread and back cost two
thread wake-ups per step (measured on 2 loaded cores: several ms per hop, more than the libp2p round trip), and
one thread keeps torch to a single OpenMP pool. While a batch computes, requests wait in the socket buffers, and
the replies of a batch go out one after another, so the next steps of a batch's sessions arrive spread over a few
milliseconds. A batched step costs about a fixed part (streaming the span's weights; what one session's step
costs) plus a little per session, so running the early arrivals at once and the late ones as a second batch pays
the fixed part twice: the batches then stay split for good (16 sessions ran as two batches of ~8 per round). So
before a decode batch the scheduler waits, for up to one session's step time, for the sessions it expects soon:
those actively decoding whose usual pause between a reply and their next step (measured per session) ends within
that time. A session that does not come when expected is not waited for again until its next step comes.

A decode step that finds the scheduler idle (nothing queued, nothing running) and no other session due within
that time runs at once in its own session's task: the same batch code, without the hand-off to the worker loop
and back (two task switches per hop, ~0.3 ms each on a process that wakes cold).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import trio

from inferchain.models.batched import decode_batch, supports_batching
from inferchain.models.span import SpanModel

T = TypeVar("T")
log = logging.getLogger(__name__)
ACTIVE_S = 2.0  # a session that was served this recently may send its next decode step soon


def _timed(fn: Callable[..., T], *args: Any) -> tuple[T, float, float]:
    started = time.perf_counter()
    out = fn(*args)
    return out, started, time.perf_counter()


@dataclass(eq=False)  # identity, not field-wise equality: the backlog removes requests, and tensors can't compare
class StepRequest:
    hidden: torch.Tensor  # [1, tokens, hidden]
    position: int
    cache: Any
    start: int
    end: int
    done: trio.Event = field(default_factory=trio.Event)
    outputs: list[torch.Tensor] = field(default_factory=list)
    computed: int = 0  # tokens already run (prefill chunks)
    error: BaseException | None = None
    compute_start: float = 0.0  # perf_counter() when its first compute began and its last ended
    compute_end: float = 0.0
    arrived: float = field(default_factory=time.perf_counter)

    @property
    def tokens(self) -> int:
        return int(self.hidden.shape[1])

    def batchable(self, span: SpanModel) -> bool:
        return self.tokens == 1 and supports_batching(span, self.start, self.end)


@dataclass
class _Rhythm:
    """When a session's last step finished and its usual pause before sending the next one (perf_counter s)."""

    done: float
    pause_s: float = 0.0
    missed: bool = False  # waited for in vain since its last step: not waited for again until it sends one

    def expected(self) -> float:
        return self.done + self.pause_s


@dataclass
class SchedulerStats:
    batches: int = 0
    batched_steps: int = 0
    largest_batch: int = 0
    prefill_chunks: int = 0
    late_waits: int = 0  # decode batches that waited for an expected session in vain
    direct: int = 0  # decode steps run at once in their session's task (the scheduler was idle)
    ms_per_layer: float = 0.0  # moving average of a decode step's latency per layer


class StepScheduler:
    def __init__(
        self, span: SpanModel, max_batch: int = 16, prefill_chunk: int = 256, max_gather_s: float = 0.05
    ) -> None:
        """`max_gather_s`: the longest a decode batch waits for expected sessions' steps to join it (it waits at
        most one session's step time, and not at all when every expected session is in)."""
        self.span = span
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.max_gather_s = max_gather_s
        self.stats = SchedulerStats()
        self._send, self._receive = trio.open_memory_channel[StepRequest](float("inf"))
        self._backlog: deque[StepRequest] = deque()
        self._last_was_batch = False
        self._rhythm: dict[int, _Rhythm] = {}  # id(cache) -> its session's last step and pause
        self._last_batch_s = 0.0
        self._solo_s_per_layer = 0.0  # moving average of one session's decode step, per layer
        self._idle = False  # the worker loop waits for work and nothing has been handed to it since

    def forget(self, cache: Any) -> None:
        """A session closed: no more steps to wait for from it."""
        self._rhythm.pop(id(cache), None)

    async def submit(self, request: StepRequest) -> torch.Tensor:
        if self._idle and request.batchable(self.span) and not self._others_due(request):
            self._note_arrival(request)
            self.stats.direct += 1
            await self._run_batch([request])  # does not yield: nothing can join the queue meanwhile
        else:
            self._idle = False
            await self._send.send(request)
            await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.outputs[0] if len(request.outputs) == 1 else torch.cat(request.outputs, dim=1)

    async def run(self) -> None:
        """The worker loop; start it once in the node's nursery."""
        while True:
            if not self._backlog:
                self._idle = True
                try:
                    request = await self._receive.receive()
                finally:
                    self._idle = False
                self._arrived(request)
            else:  # compute does not yield: let sessions send their replies and queue their next steps
                await trio.lowlevel.checkpoint()
            while True:
                try:
                    self._arrived(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                # Decode batches and prefill chunks take turns, so neither kind can starve the other.
                waiting_chunk = next((r for r in self._backlog if not r.batchable(self.span)), None)
                chunk_turn = waiting_chunk is not None and self._last_was_batch
                if not chunk_turn:
                    await self._gather()
                batch = [] if chunk_turn else self._next_decode_batch()
                if batch:
                    self._last_was_batch = True
                    await self._run_batch(batch)
                else:
                    self._last_was_batch = False
                    request = waiting_chunk or self._backlog[0]
                    self._backlog.remove(request)
                    await self._run_chunk(request)
            except Exception as e:  # a scheduling bug must fail the waiting steps, not take the node down
                log.exception("scheduler failure; failing %d queued steps", len(self._backlog))
                while self._backlog:
                    request = self._backlog.popleft()
                    request.error = e
                    request.done.set()

    def _arrived(self, request: StepRequest) -> None:
        self._backlog.append(request)
        self._note_arrival(request)

    def _note_arrival(self, request: StepRequest) -> None:
        rhythm = self._rhythm.get(id(request.cache))
        if rhythm is not None:
            # a shorter pause counts at once (the session is back at its pace, e.g. decoding after its prompt); a
            # longer one half, so that one slow step does not stop the batch from waiting for it
            pause = max(0.0, request.arrived - rhythm.done)
            rhythm.pause_s = pause if pause < rhythm.pause_s or rhythm.pause_s == 0 else (rhythm.pause_s + pause) / 2
            rhythm.missed = False

    def _due(self, now: float, budget: float, exclude: set[int]) -> set[int]:
        """Active sessions, other than `exclude`, whose next decode step is expected within `budget`."""
        return {
            k
            for k, r in self._rhythm.items()
            if k not in exclude and not r.missed and now - r.done <= ACTIVE_S and r.expected() <= now + budget
        }

    def _others_due(self, request: StepRequest) -> bool:
        """Is another session's decode step expected within a batch's fixed cost (worth batching with)?"""
        return bool(self._due(time.perf_counter(), self._wait_budget(request.end - request.start), {id(request.cache)}))

    def _wait_budget(self, layers: int) -> float:
        """How long joining a batch is worth waiting for: about what one more batch would cost, its fixed part."""
        solo = self._solo_s_per_layer * layers if self._solo_s_per_layer else self._last_batch_s / 2
        return min(self.max_gather_s, solo)

    async def _gather(self) -> None:
        """Give sessions whose next decode step is due within a batch's fixed cost the time to join the batch."""
        now = time.perf_counter()
        for key in [k for k, r in self._rhythm.items() if now - r.done > ACTIVE_S]:
            del self._rhythm[key]
        queued = {id(r.cache) for r in self._backlog}
        first = next((r for r in self._backlog if r.batchable(self.span)), None)
        if first is None or len(queued) >= self.max_batch:
            return
        budget = self._wait_budget(first.end - first.start)
        due = self._due(now, budget, queued)
        if not due:
            return
        with trio.move_on_after(budget) as waited:
            while due and len(queued) < self.max_batch:
                request = await self._receive.receive()
                self._arrived(request)
                queued.add(id(request.cache))
                due.discard(id(request.cache))
        if waited.cancelled_caught:  # expected and not come: do not wait for them again until they do
            self.stats.late_waits += 1
            for key in due & self._rhythm.keys():
                self._rhythm[key].missed = True

    def _next_decode_batch(self) -> list[StepRequest]:
        first = next((r for r in self._backlog if r.batchable(self.span)), None)
        if first is None:
            return []
        batch = [r for r in self._backlog if r.batchable(self.span) and (r.start, r.end) == (first.start, first.end)][
            : self.max_batch
        ]
        for r in batch:
            self._backlog.remove(r)
        return batch

    async def _run_batch(self, batch: list[StepRequest]) -> None:
        try:
            outs, started, ended = _timed(
                decode_batch,
                self.span,
                [r.hidden for r in batch],
                [r.position for r in batch],
                [r.cache for r in batch],
                batch[0].start,
                batch[0].end,
            )
        except Exception as e:  # reported to every session of the batch
            for r in batch:
                r.error = e
                r.done.set()
            return
        self._last_batch_s = ended - started
        self.record(ended - started, batch[0].end - batch[0].start, len(batch))
        for r, out in zip(batch, outs, strict=True):
            self._served(r, ended)
            r.compute_start, r.compute_end = started, ended
            r.outputs.append(out)
            r.done.set()

    async def _run_chunk(self, request: StepRequest) -> None:
        """Run the next chunk of a prefill (or a step that cannot be batched); requeue it if more is left."""
        n = min(self.prefill_chunk, request.tokens - request.computed)
        piece = request.hidden[:, request.computed : request.computed + n]
        try:
            out, started, ended = _timed(
                self.span.forward,
                piece,
                request.position + request.computed,
                request.cache,
                request.start,
                request.end,
            )
        except Exception as e:
            request.error = e
            request.done.set()
            return
        if n == 1:
            self.record(ended - started, request.end - request.start, 1)
        else:
            self.stats.prefill_chunks += 1
        request.compute_start = request.compute_start or started
        request.compute_end = ended
        self._served(request, ended)
        request.outputs.append(out)
        request.computed += n
        if request.computed < request.tokens:
            self._backlog.appendleft(request)  # decodes that arrived meanwhile go first, then the next chunk
        else:
            request.done.set()

    def _served(self, request: StepRequest, ended: float) -> None:
        rhythm = self._rhythm.get(id(request.cache))
        if rhythm is None:
            self._rhythm[id(request.cache)] = _Rhythm(ended)
        else:
            rhythm.done = ended

    def record(self, seconds: float, layers: int, batch: int) -> None:
        self.stats.batches += 1
        self.stats.batched_steps += batch
        self.stats.largest_batch = max(self.stats.largest_batch, batch)
        if batch == 1:
            solo = seconds / layers
            self._solo_s_per_layer = solo if not self._solo_s_per_layer else 0.8 * self._solo_s_per_layer + 0.2 * solo
        sample = seconds * 1000 / layers
        s = self.stats
        s.ms_per_layer = sample if s.ms_per_layer == 0 else 0.9 * s.ms_per_layer + 0.1 * sample
