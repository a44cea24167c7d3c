"""The node's step scheduler: every session's forward request goes through one queue; decode steps waiting at the
same time are run as one batch, and long prefills are cut into chunks so that decoding sessions never wait for a
whole prompt.

Compute runs inline on the node's event-loop thread. Handing each step to a worker thread and back cost two
thread wake-ups per step (measured on 2 loaded cores: several ms per hop, more than the libp2p round trip), and
one thread keeps torch to a single OpenMP pool. While a batch computes, requests wait in the socket buffers; so
that they still join the next batch, the scheduler waits briefly (a fraction of a batch's compute time) for the
decode steps of sessions that are actively decoding before it runs a batch that lacks some of them.
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
ACTIVE_S = 2.0  # a session that sent a step this recently is expected to send its next decode step soon


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

    @property
    def tokens(self) -> int:
        return int(self.hidden.shape[1])

    def batchable(self, span: SpanModel) -> bool:
        return self.tokens == 1 and supports_batching(span, self.start, self.end)


@dataclass
class SchedulerStats:
    batches: int = 0
    batched_steps: int = 0
    largest_batch: int = 0
    prefill_chunks: int = 0
    ms_per_layer: float = 0.0  # moving average of a decode step's latency per layer


class StepScheduler:
    def __init__(
        self, span: SpanModel, max_batch: int = 16, prefill_chunk: int = 256, max_gather_s: float = 0.005
    ) -> None:
        """`max_gather_s`: the longest a decode batch waits for active sessions' steps to join it (it waits at
        most half of the last batch's compute time, and not at all when every active session is in)."""
        self.span = span
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.max_gather_s = max_gather_s
        self.stats = SchedulerStats()
        self._send, self._receive = trio.open_memory_channel[StepRequest](float("inf"))
        self._backlog: deque[StepRequest] = deque()
        self._last_was_batch = False
        self._last_step: dict[int, float] = {}  # id(cache) -> monotonic time of its session's last step
        self._last_batch_s = 0.0

    def forget(self, cache: Any) -> None:
        """A session closed: no more steps to wait for from it."""
        self._last_step.pop(id(cache), None)

    async def submit(self, request: StepRequest) -> torch.Tensor:
        await self._send.send(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.outputs[0] if len(request.outputs) == 1 else torch.cat(request.outputs, dim=1)

    async def run(self) -> None:
        """The worker loop; start it once in the node's nursery."""
        while True:
            if not self._backlog:
                self._backlog.append(await self._receive.receive())
            else:  # compute does not yield: let sessions send their replies and queue their next steps
                await trio.lowlevel.checkpoint()
            while True:
                try:
                    self._backlog.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                await self._gather()
                # Decode batches and prefill chunks take turns, so neither kind can starve the other.
                waiting_chunk = next((r for r in self._backlog if not r.batchable(self.span)), None)
                batch = [] if (waiting_chunk is not None and self._last_was_batch) else self._next_decode_batch()
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

    async def _gather(self) -> None:
        """Give active sessions whose decode step is not queued yet a short while to join the next batch."""
        now = time.monotonic()
        for key in [k for k, t in self._last_step.items() if now - t > ACTIVE_S]:
            del self._last_step[key]
        queued = {id(r.cache) for r in self._backlog}
        missing = len(self._last_step.keys() - queued)
        if missing == 0 or len(queued) >= self.max_batch:
            return
        with trio.move_on_after(min(self.max_gather_s, self._last_batch_s / 2)):
            while missing > 0:
                request = await self._receive.receive()
                self._backlog.append(request)
                if id(request.cache) in self._last_step:
                    missing -= 1

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
        now = time.monotonic()
        for r in batch:
            self._last_step[id(r.cache)] = now
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
            r.compute_start, r.compute_end = started, ended
            r.outputs.append(out)
            r.done.set()

    async def _run_chunk(self, request: StepRequest) -> None:
        """Run the next chunk of a prefill (or a step that cannot be batched); requeue it if more is left."""
        n = min(self.prefill_chunk, request.tokens - request.computed)
        self._last_step[id(request.cache)] = time.monotonic()
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
        request.outputs.append(out)
        request.computed += n
        if request.computed < request.tokens:
            self._backlog.appendleft(request)  # decodes that arrived meanwhile go first, then the next chunk
        else:
            request.done.set()

    def record(self, seconds: float, layers: int, batch: int) -> None:
        self.stats.batches += 1
        self.stats.batched_steps += batch
        self.stats.largest_batch = max(self.stats.largest_batch, batch)
        sample = seconds * 1000 / layers
        s = self.stats
        s.ms_per_layer = sample if s.ms_per_layer == 0 else 0.9 * s.ms_per_layer + 0.1 * sample
