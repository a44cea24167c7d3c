"""`inferchain swarm`: a private local swarm (node processes on 127.0.0.1) and a chat through it."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from inferchain.cli.output import console, fail


def even_spans(num_layers: int, nodes: int) -> list[tuple[int, int]]:
    cuts = [round(i * num_layers / nodes) for i in range(nodes + 1)]
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def swarm(
    nodes: int = typer.Option(3, min=1, max=30, help="Node processes, each serving an even share of the layers."),
    spare: bool = typer.Option(True, help="Start one spare node for the middle span, for fail-over."),
    prompt: str = typer.Option("What is the capital of France? Answer in one sentence.", help="Message to send."),
    max_tokens: int = typer.Option(64, min=1),
    kill_a_node: bool = typer.Option(False, help="Kill the node serving the middle span mid-answer."),
    model: Path | None = typer.Option(None, help="Prepared model folder (default: the bundled SmolLM2)."),
) -> None:
    """Prepare the model, start a local swarm, answer one chat message through it, then stop every node."""
    import os

    from transformers import AutoTokenizer

    from inferchain.client.chain import NoRouteError
    from inferchain.client.generation import SamplingParams, chat_prompt, stream_tokens
    from inferchain.client.remote import RemoteError
    from inferchain.client.session import InferenceSession
    from inferchain.models.folder import ModelFolder
    from inferchain.models.prepare import default_model_dir, prepare_default_model
    from inferchain.node.launch import NodeStartError, local_swarm

    folder = model or default_model_dir()
    if model is None:
        with console.status("preparing the default model (once; about 30 s)"):
            prepare_default_model(folder)
    num_layers = ModelFolder(folder).manifest().num_layers
    spans = even_spans(num_layers, nodes)
    if spare:
        spans.append(spans[len(spans) // 2])
    home = Path(os.environ.get("INFERCHAIN_HOME", Path.home() / ".inferchain")) / "swarm"
    console.print(f"starting {len(spans)} node processes (logs in {home})")
    try:
        with local_swarm(spans, home, folder) as started:
            for node in started:
                console.print(
                    f"node pid {node.process.pid:>7}  layers {node.layers[0]:>2}:{node.layers[1]:<2}  {node.addr}"
                )
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            ids = chat_prompt(tokenizer, [{"role": "user", "content": prompt}])
            with InferenceSession(folder, [n.addr for n in started], max_length=len(ids) + max_tokens) as session:
                route = " -> ".join(f"{p[-6:]}[{a}:{b}]" for p, a, b in session.route)
                console.print(f"[dim]route {route}[/]\n[bold]> {prompt}[/]")
                victim = next((n for n in started if n.peer_id == session.route[len(session.route) // 2][0]), None)
                params = SamplingParams(max_tokens=max_tokens)
                for i, chunk in enumerate(stream_tokens(session, tokenizer, ids, params)):
                    sys.stdout.write(chunk.text)
                    sys.stdout.flush()
                    if kill_a_node and i == 4 and victim is not None:
                        victim.kill()
                sys.stdout.write("\n")
                for f in session.failovers:
                    console.print(
                        f"[yellow]fail-over[/]: node {f.failed_peer[-6:]} (layers {f.layers[0]}:{f.layers[1]}) "
                        f"{f.reason}; replayed {f.replayed_tokens} tokens into "
                        + ", ".join(f"{p[-6:]}[{a}:{b}]" for p, a, b in f.replacement)
                    )
    except NodeStartError as e:
        fail(str(e))
    except (NoRouteError, RemoteError) as e:
        fail(str(e))
    console.print("[dim]all nodes stopped[/]")
