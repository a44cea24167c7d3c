"""The gateway end to end over a free swarm: three node processes on 127.0.0.1, the market app with the gateway
under uvicorn, keys made through the reseller admin API, and the official `openai` client."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from eth_account import Account

from inferchain.marketplace.gateway import siwe
from tests.http_server import serve_app

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def nodes(smollm2: Path, tmp_path_factory: pytest.TempPathFactory):
    """Three nodes; the last two join through the first, so a market bootstrapping there hears all offers."""
    from inferchain.node.launch import start_node

    work, fast = tmp_path_factory.mktemp("gwswarm"), ["--announce-every", "0.5"]
    seed = start_node((0, 10), work / "seed", smollm2, fast)
    others = []
    try:
        seed.wait_ready(120)
        others = [start_node(s, work / f"n{s[0]}", smollm2, [*fast, "--bootstrap", seed.addr])
                  for s in [(10, 20), (20, 30)]]  # fmt: skip
        for node in others:
            node.wait_ready(120)
        yield [seed, *others]
    finally:
        for node in [seed, *others]:
            node.kill()


@pytest.fixture(scope="module")
def gateway(nodes, smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from inferchain.marketplace.book import OfferBook
    from inferchain.marketplace.db import init_db, make_engine
    from inferchain.marketplace.gateway.db import init_gateway_db
    from inferchain.marketplace.gateway.runner import Runners, static_peers
    from inferchain.marketplace.gateway.state import Gateway
    from inferchain.marketplace.service import MarketState, create_app

    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('gw') / 'market.sqlite'}")
    runners = Runners([smollm2], static_peers([n.addr for n in nodes]))
    gw = Gateway(init_gateway_db(engine), runners, domain="gateway.test")
    server, thread, url = serve_app(create_app(MarketState(OfferBook(init_db(engine), {})), gw))
    reseller = Account.create()
    with httpx.Client(base_url=url, timeout=30) as http:
        n = http.get("/admin/nonce").json()
        now = time.time()
        msg = siwe.SignInMessage("gateway.test", reseller.address, "https://gateway.test", n["chain_id"],
                                 n["nonce"], now, now + 600)  # fmt: skip
        login = http.post("/admin/login", json={"message": msg.text(), "signature": siwe.sign(msg, reseller.key)})
        admin = {"authorization": f"Bearer {login.json()['token']}"}
        key = http.post("/admin/keys", json={"name": "customer"}, headers=admin).json()["key"]
    try:
        yield {"url": url, "admin": admin, "key": key, "runner": next(iter(runners.by_id.values())), "nodes": nodes}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        runners.close()
        engine.dispose()


def _client(gw: dict, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw["url"] + "/v1", api_key=key or gw["key"], max_retries=0, timeout=120)


def _direct(gw: dict, prompt_ids: list[int], max_tokens: int) -> str:
    from inferchain.client.generation import SamplingParams, generate
    from inferchain.client.session import InferenceSession

    runner = gw["runner"]
    with InferenceSession(runner.head, [n.addr for n in gw["nodes"]]) as session:
        return generate(session, runner.tokenizer, prompt_ids, SamplingParams(max_tokens=max_tokens)).text


def test_chat_streamed_and_not_equal_the_client_run_directly(gateway) -> None:
    client = _client(gateway)
    models = client.models.list()
    assert [m.id for m in models.data] == ["SmolLM2-135M-Instruct"]
    stream = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=MESSAGES, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1 and chunks[-1].usage is not None and chunks[-1].choices == []
    full = client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=MESSAGES, max_tokens=8,
                                          temperature=0)  # fmt: skip
    assert full.choices[0].message.content == streamed and full.choices[0].finish_reason == finishes[0]
    assert full.usage is not None and full.usage.completion_tokens == chunks[-1].usage.completion_tokens
    prompt_ids = gateway["runner"].encode_chat(MESSAGES)
    assert full.usage.prompt_tokens == len(prompt_ids)
    assert streamed == _direct(gateway, prompt_ids, 8) and streamed.strip()

    text = client.completions.create(model="SmolLM2-135M-Instruct", prompt="The sky is", max_tokens=6, temperature=0)
    assert text.choices[0].text == _direct(gateway, gateway["runner"].encode("The sky is"), 6)
    streamed_text = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="SmolLM2-135M-Instruct", prompt="The sky is", max_tokens=6, temperature=0, stream=True
        )
    )
    assert streamed_text == text.choices[0].text

    usage = httpx.get(gateway["url"] + "/admin/usage", headers=gateway["admin"], timeout=10).json()
    assert usage["requests"] == 4 and usage["open_reservations"] == 0
    assert all(len(r["route"]) == 3 for r in usage["rows"])


def test_errors_map_to_the_openai_exceptions(gateway) -> None:
    model = "SmolLM2-135M-Instruct"
    with pytest.raises(openai.AuthenticationError):
        _client(gateway, "ick_000000000000_" + "A" * 43).chat.completions.create(model=model, messages=MESSAGES)
    client = _client(gateway)
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="gpt-17", messages=MESSAGES)
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        client.chat.completions.create(model=model, messages=MESSAGES, temperature=7)
    assert bad.value.body["param"] == "body.temperature" or "temperature" in str(bad.value.body)
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=10**6)
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model=model, messages=MESSAGES, n=2)


def test_reseller_default_caps_apply_to_requests_that_name_none(gateway) -> None:
    """A reseller's default latency cap too tight for any route turns its customers' requests without caps into
    503 no_route; a request's own cap still wins; clearing the default serves the request again."""
    url, admin, model = gateway["url"], gateway["admin"], "SmolLM2-135M-Instruct"
    with _client(gateway) as client, httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/admin/settings", headers=admin).json() == {"max_price_per_1k": None, "max_latency_ms": None}
        assert http.put("/admin/settings", json={"max_price_per_1k": -1}, headers=admin).status_code == 422
        tight = {"max_price_per_1k": None, "max_latency_ms": 0.001}
        assert http.put("/admin/settings", json=tight, headers=admin).json() == tight
        assert http.get("/admin/settings", headers=admin).json() == tight
        try:
            with pytest.raises(openai.InternalServerError) as refused:
                client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=2)
            assert refused.value.code == "no_route" and "latency" in str(refused.value.body).lower()
            own = client.chat.completions.create(
                model=model, messages=MESSAGES, max_tokens=2, extra_body={"max_latency_ms": 1e6}
            )
            assert own.usage is not None and own.usage.completion_tokens == 2
        finally:
            http.put("/admin/settings", json={}, headers=admin)
        served = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=2)
        assert served.usage is not None and served.usage.completion_tokens == 2


def test_quota_burst_revoke_and_rotate(gateway) -> None:
    """A key allowed 2 requests' worth of tokens per day, hit by 6 concurrent streams: 2 are served and 4 get
    RateLimitError, before any node works. Revocation and rotation act on the very next request."""
    url, admin = gateway["url"], gateway["admin"]
    worst = len(gateway["runner"].encode_chat(MESSAGES)) + 4
    with httpx.Client(base_url=url, timeout=30) as http:
        made = http.post("/admin/keys", json={"name": "small", "tokens_per_day": 2 * worst}, headers=admin).json()
    client = _client(gateway, made["key"])

    def ask(_: int) -> str:
        try:
            stream = client.chat.completions.create(
                model="SmolLM2-135M-Instruct", messages=MESSAGES, max_tokens=4, temperature=0, stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in stream)
        except openai.RateLimitError as e:
            assert e.code == "quota_exceeded"
            return "429"

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(ask, range(6)))
    assert results.count("429") == 4
    with httpx.Client(base_url=url, timeout=30) as http:
        usage = http.get("/admin/usage", params={"key_id": made["id"]}, headers=admin).json()
        assert usage["requests"] == 2 and usage["prompt_tokens"] + usage["completion_tokens"] <= 2 * worst
        rotated = http.post(f"/admin/keys/{made['id']}/rotate", headers=admin).json()["key"]
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
        assert _client(gateway, rotated).models.list().data
        http.delete(f"/admin/keys/{made['id']}", headers=admin)
        with pytest.raises(openai.AuthenticationError):
            _client(gateway, rotated).models.list()


def test_market_start_serves_the_gateway_from_its_book(nodes, smollm2: Path, tmp_path: Path) -> None:
    """`inferchain market start` (a separate process) routes gateway requests through the nodes its book heard."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "market.log"
    cmd = [
        sys.executable, "-m", "inferchain.cli", "market", "start", "--port", str(port), "--free", "--json",
        "--database", f"sqlite:///{tmp_path / 'm.sqlite'}", "--bootstrap", nodes[0].addr, "--model", str(smollm2),
        "--gateway-domain", "gateway.test",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "INFERCHAIN_HOME"} | {"INFERCHAIN_HOME": str(tmp_path)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        url, reseller = f"http://127.0.0.1:{port}", Account.create()
        deadline = time.monotonic() + 90
        with httpx.Client(base_url=url, timeout=10) as http:
            while True:
                assert proc.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "the market never heard all three nodes"
                try:
                    if http.get("/health").json()["live_offers"] >= 3:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.3)
            n = http.get("/admin/nonce").json()
            now = time.time()
            msg = siwe.SignInMessage("gateway.test", reseller.address, "https://gateway.test", n["chain_id"],
                                     n["nonce"], now, now + 600)  # fmt: skip
            token = http.post("/admin/login", json={"message": msg.text(), "signature": siwe.sign(msg, reseller.key)})
            admin = {"authorization": f"Bearer {token.json()['token']}"}
            key = http.post("/admin/keys", json={"name": "c"}, headers=admin).json()["key"]
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)
        answer = client.chat.completions.create(model="SmolLM2-135M-Instruct", messages=MESSAGES, max_tokens=5,
                                                temperature=0)  # fmt: skip
        assert answer.usage is not None and answer.usage.completion_tokens >= 1
        assert answer.model_extra is not None and len(answer.model_extra["inferchain"]["route"]) == 3
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
