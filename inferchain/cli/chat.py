"""`inferchain chat`: talk to a model through a chain of nodes, tokens streamed as they come."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from inferchain.cli.output import console, emit_json, fail


def chat(
    peer: list[str] = typer.Option([], "--peer", "-p", help="A node's address (/ip4/.../tcp/.../p2p/...); repeat."),
    bootstrap: list[str] = typer.Option([], help="Join the network through this peer and discover nodes; repeat."),
    prompt: str | None = typer.Option(None, help="One message to send; omit for an interactive chat."),
    model: Path | None = typer.Option(None, help="Prepared model folder (default: the bundled SmolLM2)."),
    max_tokens: int = typer.Option(128, min=1),
    temperature: float = typer.Option(0.0, min=0.0, help="0 for greedy decoding."),
    top_p: float = typer.Option(1.0),
    top_k: int = typer.Option(0, min=0),
    seed: int | None = typer.Option(None),
    stop: list[str] = typer.Option([], help="Stop string; repeat for several."),
    wire_dtype: str = typer.Option("f16", help="Hidden states on the wire: f16, f32 or i8 (int8 blocks)."),
    system: str | None = typer.Option(None, help="System message."),
    relay: bool = typer.Option(
        True, help="Nodes push each output straight to the next node (--no-relay: this client forwards every hop)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object per answer."),
) -> None:
    """Chat with a model whose layers are served by the given nodes."""
    from transformers import AutoTokenizer

    from inferchain.client.chain import NoRouteError
    from inferchain.client.generation import Completion, SamplingParams, chat_prompt, stream_tokens
    from inferchain.client.remote import RemoteError
    from inferchain.client.session import InferenceSession
    from inferchain.models.folder import ModelFolderError
    from inferchain.models.prepare import default_model_dir
    from inferchain.models.span import ModelHead

    if not peer and not bootstrap:
        fail("give at least one --peer or --bootstrap address")
    if wire_dtype not in ("f16", "f32", "i8"):
        fail("--wire-dtype must be f16, f32 or i8")
    try:
        params = SamplingParams(
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, stop=tuple(stop)
        )
    except ValueError as e:
        fail(str(e))
    folder = model or default_model_dir()
    try:
        head = ModelHead(folder)
    except ModelFolderError as e:
        fail(str(e))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []

    def answer(text: str) -> None:
        messages.append({"role": "user", "content": text})
        ids = chat_prompt(tokenizer, messages)
        result: list[Completion] = []
        with InferenceSession(
            head,
            peer,
            max_length=len(ids) + max_tokens,
            wire_dtype=wire_dtype,  # type: ignore[arg-type]
            bootstrap=bootstrap,
            relay=relay,
        ) as session:
            route = " -> ".join(f"{name[-6:]}[{a}:{b}]" for name, a, b in session.route)
            if session.chain.relay and any(h.remote.relaying for h in session.chain.hops):
                route += " (relayed)"
            if not json_output:
                console.print(f"[dim]route {route}[/]")
            for chunk in stream_tokens(session, tokenizer, ids, params, result):
                if not json_output:
                    sys.stdout.write(chunk.text)
                    sys.stdout.flush()
            done = result[0]
            if json_output:
                emit_json(
                    {
                        "text": done.text,
                        "finish_reason": done.finish_reason,
                        "route": session.route,
                        "prompt_tokens": done.prompt_tokens,
                        "completion_tokens": len(done.token_ids),
                        "failovers": [f.__dict__ for f in session.failovers],
                        "relayed_steps": [h.remote.relayed_steps for h in session.chain.hops],
                    }
                )
            else:
                sys.stdout.write("\n")
                for f in session.failovers:
                    console.print(f"[yellow]fail-over[/] {f.failed_peer[-6:]} layers {f.layers}: {f.reason}")
        messages.append({"role": "assistant", "content": done.text})

    try:
        if prompt is not None:
            answer(prompt)
            return
        console.print("[dim]empty line or Ctrl-D to quit[/]")
        while True:
            try:
                text = input("> ")
            except EOFError:
                break
            if not text.strip():
                break
            answer(text)
    except (NoRouteError, RemoteError) as e:
        fail(str(e))
