"""The node's step scheduler: every session's forward request goes through one queue; decode steps waiting at the
same time are run as one batch, and long prefills are cut into chunks so that decoding sessions never wait for a
whole prompt. All compute runs on one dedicated thread, so the node keeps reading requests (and filling the next
batch) while a batch computes, and torch keeps a single OpenMP pool: the pool belongs to the calling thread, and
computing from several threads in turn would start several pools that spin against each other for the cores.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import trio

from inferchain.models.batched import decode_batch, supports_batching
from inferchain.models.span import SpanModel

T = TypeVar("T")
log = logging.getLogger(__name__)


class ComputeThread:
    """One OS thread that runs every torch call of the node; trio tasks await its results."""

    def __init__(self) -> None:
        threads = torch.get_num_threads()  # the creating thread's setting (--threads), applied to the compute thread
        self._pool = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="inferchain-compute",
            initializer=torch.set_num_threads,
            initargs=(threads,),
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        future = self._pool.submit(fn, *args)
        future.add_done_callback(lambda _: token.run_sync_soon(done.set))
        await done.wait()
        return future.result()


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
    def __init__(self, span: SpanModel, max_batch: int = 16, prefill_chunk: int = 256) -> None:
        self.span = span
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.stats = SchedulerStats()
        self.compute = ComputeThread()
        self._send, self._receive = trio.open_memory_channel[StepRequest](float("inf"))
        self._backlog: deque[StepRequest] = deque()
        self._last_was_batch = False

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
            while True:
                try:
                    self._backlog.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
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
        started = time.perf_counter()
        try:
            outs = await self.compute.run(
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
        self.record(time.perf_counter() - started, batch[0].end - batch[0].start, len(batch))
        for r, out in zip(batch, outs, strict=True):
            r.outputs.append(out)
            r.done.set()

    async def _run_chunk(self, request: StepRequest) -> None:
        """Run the next chunk of a prefill (or a step that cannot be batched); requeue it if more is left."""
        n = min(self.prefill_chunk, request.tokens - request.computed)
        piece = request.hidden[:, request.computed : request.computed + n]
        started = time.perf_counter()
        try:
            out = await self.compute.run(
                self.span.forward, piece, request.position + request.computed, request.cache, request.start, request.end
            )
        except Exception as e:
            request.error = e
            request.done.set()
            return
        if n == 1:
            self.record(time.perf_counter() - started, request.end - request.start, 1)
        else:
            self.stats.prefill_chunks += 1
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
