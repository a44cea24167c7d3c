"""Runs generations for the gateway through the client library against real nodes.

One `HostThread` (libp2p on its own trio thread) is shared by every request; each request opens its own
`InferenceSession` on it. Everything here is blocking: the HTTP handlers call it through
`anyio.to_thread.run_sync`, so many requests run concurrently while the event loop stays free.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferchain.client.chain import RouteLimits
from inferchain.client.generation import Chunk, Completion, SamplingParams, chat_prompt, stream_tokens
from inferchain.client.remote import Timeouts
from inferchain.client.session import InferenceSession
from inferchain.models.folder import ModelFolder
from inferchain.models.span import ModelHead
from inferchain.p2p.host import load_or_create_identity
from inferchain.p2p.thread import HostThread
from inferchain.wallet.buyer import Buyer
from inferchain.wallet.receipts import SignedReceipt

PeerSource = Callable[[str], Sequence[str]]  # model id -> multiaddrs of nodes that may serve it


@dataclass
class Generation:
    """A running generation: iterate `chunks()`; `completion`, `route` and `receipts` are filled as it goes."""

    session: InferenceSession
    prompt_ids: list[int]
    params: SamplingParams
    tokenizer: Any
    started_at: float = field(default_factory=time.perf_counter)
    completion: Completion | None = None
    generated: int = 0
    closed: bool = False
    _route: list[dict[str, Any]] = field(default_factory=list)

    def chunks(self) -> Iterator[Chunk]:
        result: list[Completion] = []
        for chunk in stream_tokens(self.session, self.tokenizer, self.prompt_ids, self.params, result):
            if chunk.token_id >= 0:
                self.generated += 1
            yield chunk
        self.completion = result[0]

    @property
    def route(self) -> list[dict[str, Any]]:
        """The hops that served it (kept from before `close`, which drops them)."""
        if not self.closed:
            self._route = [{"node": n, "start": a, "end": b} for n, a, b in self.session.route]
        return self._route

    def close(self) -> None:
        if not self.closed:
            _ = self.route
            self.closed = True
            self.session.close()

    @property
    def receipts(self) -> list[SignedReceipt]:
        """Node receipts countersigned for the buyer (paid sessions, after `close`)."""
        return list(self.session.receipts)


class ModelRunner:
    """One model the gateway serves: its local head, tokenizer and context size."""

    def __init__(
        self,
        folder: Path,
        host: HostThread,
        peers: PeerSource,
        max_length: int = 2048,
        timeouts: Timeouts | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        manifest = ModelFolder(folder).manifest()
        self.model_id, self.name = manifest.model_id, manifest.name
        self.head = ModelHead(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.max_length, self.timeouts = max_length, timeouts
        self.host, self.peers = host, peers
        self._tok_lock = threading.Lock()  # HF fast tokenizers are not safe to call from many threads at once

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        with self._tok_lock:
            return chat_prompt(self.tokenizer, messages)

    def encode(self, text: str) -> list[int]:
        with self._tok_lock:
            return list(self.tokenizer(text)["input_ids"])

    def start(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        limits: RouteLimits | None = None,
        buyer: Buyer | None = None,
    ) -> Generation:
        """Open sessions on a route covering every layer within `limits` (raises NoRouteError when none can be
        opened); with `buyer`, paid sessions whose receipts it countersigns."""
        session = InferenceSession(
            self.head, list(self.peers(self.model_id)), host=self.host, max_length=self.max_length,
            limits=limits, buyer=buyer, timeouts=self.timeouts,
        )  # fmt: skip
        return Generation(session, prompt_ids, params, self.tokenizer)


class Runners:
    """The gateway's models by id and by name, on one shared host thread."""

    def __init__(
        self, folders: Sequence[Path], peers: PeerSource, max_length: int = 2048, timeouts: Timeouts | None = None
    ) -> None:
        """`timeouts`: the client's connect and per-step limits (None: the client's defaults)."""
        self.host = HostThread(load_or_create_identity(None))
        try:
            runners = (ModelRunner(f, self.host, peers, max_length, timeouts) for f in folders)
            self.by_id = {r.model_id: r for r in runners}
        except BaseException:
            self.host.close()
            raise

    def find(self, name: str) -> ModelRunner | None:
        if name in self.by_id:
            return self.by_id[name]
        return next((r for r in self.by_id.values() if r.name == name), None)

    def close(self) -> None:
        self.host.close()


def static_peers(addrs: Sequence[str]) -> PeerSource:
    return lambda _model_id: list(addrs)
