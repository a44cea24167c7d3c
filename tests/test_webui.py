"""The dApp in a real browser (Debian's chromium driven by Playwright) against a real paid market: a Hardhat devnet
with the contracts, three staked node processes announcing signed offers over libp2p, and `inferchain market start`
serving the pages. The browser's wallet is an injected EIP-1193 provider that forwards every request to the Hardhat
node, whose unlocked development accounts answer eth_sendTransaction, eth_signTypedData_v4 and personal_sign.

Flow: connect, approve + deposit, request and complete a withdrawal, see the network, get a quote and chat with a
streamed answer whose receipts the wallet countersigns, settle them on-chain from the history page, see the node's
earnings and claim them (and its epoch reward) as its operator; sign in as a reseller, authorise the paid gateway's
key, create an API key, see a customer's request in the usage per key, rotate and revoke the key. Screenshots
of every page (desktop and phone size) go to .artifacts/webui/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.market_process import market_process

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parent.parent / ".artifacts" / "webui"
PASSPHRASE = "webui test"
SPANS = [(0, 10), (10, 20), (20, 30)]
PRICE = "0.01"  # INFER per 1k tokens per layer: 1e16 wei, beyond a JavaScript number's exact integers
BUYER, OPERATORS, RESELLER, GATEWAY = 4, (1, 2, 3), 5, 6  # Hardhat development account indexes (0 deploys)
TIMEOUT_MS = 120_000

# The test wallet: an EIP-1193 provider that forwards to the Hardhat node. `eth_chainId` can be overridden to play a
# wallet on another network; `window.__testWallet.use(address)` switches the account as a wallet's UI would.
WALLET_JS = """
(() => {
  const RPC = %(rpc)s; const CHAIN = %(chain)s; let account = %(account)s; let id = 0;
  const handlers = {};
  async function rpc(method, params) {
    const res = await fetch(RPC, { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: ++id, method, params: params || [] }) });
    const body = await res.json();
    if (body.error) {
      const e = new Error(body.error.message); e.code = body.error.code; e.data = body.error.data; throw e;
    }
    return body.result;
  }
  window.ethereum = {
    async request({ method, params }) {
      if (method === "eth_requestAccounts" || method === "eth_accounts") return [account];
      if (method === "eth_chainId" && CHAIN) return CHAIN;
      if (method === "wallet_switchEthereumChain") {
        throw Object.assign(new Error("test wallet cannot switch"), { code: 4902 });
      }
      return rpc(method, params);
    },
    on(event, fn) { (handlers[event] = handlers[event] || []).push(fn); },
    removeListener(event, fn) { handlers[event] = (handlers[event] || []).filter((f) => f !== fn); },
  };
  window.__testWallet = { use(a) { account = a; (handlers.accountsChanged || []).forEach((f) => f([a])); } };
})();
"""


@pytest.fixture(scope="module")
def market(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Devnet + contracts, three registered and staked operators each running a paid node, and the market process
    with a paid gateway (its own key countersigns the receipts of resellers that authorise it)."""
    from inferchain.node.launch import start_node
    from inferchain.wallet import devnet
    from inferchain.wallet.chain import Chain
    from inferchain.wallet.deployment import ONE_TOKEN
    from inferchain.wallet.keystore import Keystore
    from inferchain.wallet.operator import Operator

    work = tmp_path_factory.mktemp("webui")
    home = work / "chain"
    devnet.up(home, accounts=GATEWAY + 1, fund=10_000 * ONE_TOKEN)
    nodes: list = []
    try:
        chain = Chain.open(home / "deployment.json")
        keys = devnet.devnet_accounts(GATEWAY + 1)
        env = {"INFERCHAIN_HOME": str(home), "INFERCHAIN_PASSPHRASE": PASSPHRASE, "INFERCHAIN_SCRYPT_N": "4096"}
        store = Keystore(home / "wallets")
        operators = []
        for i in OPERATORS:
            name = f"operator{i}"
            store.import_private_key(name, keys[i]["private_key"], PASSPHRASE)
            op = Operator(chain, store.unlock(name, PASSPHRASE))
            op.plan_register().run()
            op.plan_stake(150 * ONE_TOKEN).run()
            operators.append(op.address)
        store.import_private_key("gateway", keys[GATEWAY]["private_key"], PASSPHRASE)
        fast = ["--announce-every", "0.5", "--price", PRICE]
        first = ["--wallet", "operator1", "--region", "eu-west", *fast]
        seed = start_node(SPANS[0], work / "node0", smollm2, first, env=env)
        nodes.append(seed)
        seed.wait_ready(180)
        for i, span in enumerate(SPANS[1:], start=2):
            extra = ["--wallet", f"operator{i}", *fast, "--bootstrap", seed.addr]
            nodes.append(start_node(span, work / f"node{i - 1}", smollm2, extra, env=env))
        for node in nodes:
            node.wait_ready(180)

        args = [
            "--database", f"sqlite:///{work / 'market.sqlite'}", "--bootstrap", seed.addr, "--model", str(smollm2),
            "--deployment", str(home / "deployment.json"), "--gateway-wallet", "gateway", "--max-price-per-1k", "1",
            "--settle-every", "1",
        ]  # fmt: skip
        with market_process(args, work / "market.log", env, live_offers=len(SPANS)) as url:
            yield {
                "url": url,
                "chain": chain,
                "rpc": chain.deployment.rpc_url,
                "buyer": keys[BUYER]["address"],
                "buyer_key": keys[BUYER]["private_key"],
                "operators": operators,
                "reseller": keys[RESELLER],
                "gateway": keys[GATEWAY]["address"],
            }
    finally:
        for node in nodes:
            node.kill()
        devnet.down(home)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run scripts/setup.sh (it installs it)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _page(browser, market: dict, account: str, *, chain: str | None = None, phone: bool = False):
    viewport = {"width": 375, "height": 667} if phone else {"width": 1280, "height": 900}
    context = browser.new_context(viewport=viewport, base_url=market["url"], is_mobile=phone, has_touch=phone)
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(WALLET_JS % {"rpc": json.dumps(market["rpc"]), "chain": json.dumps(chain),
                                         "account": json.dumps(account)})  # fmt: skip
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.errors = errors  # type: ignore[attr-defined]
    return page


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _connect(page, path: str) -> None:
    page.goto(f"/app/#/{path}")
    page.get_by_role("button", name="Connect wallet").click()
    try:
        page.locator("#account").filter(has_text="0x").wait_for(timeout=30_000)
    except Exception as e:
        raise AssertionError(f"the wallet did not connect: {page.errors}\n{page.content()[:3000]}") from e


def _status(page, text: str) -> None:
    page.get_by_role("status").filter(has_text=text).first.wait_for()


def test_buyer_deposits_chats_settles_and_operator_claims(browser, market: dict) -> None:
    from playwright.sync_api import expect

    from inferchain.wallet.deployment import ONE_TOKEN
    from inferchain.wallet.devnet import rpc_request

    chain, buyer = market["chain"], market["buyer"]
    page = _page(browser, market, buyer)

    # Buyer: connect, approve + deposit, request a withdrawal and complete it once the delay has passed on-chain.
    _connect(page, "buyer")
    expect(page.locator("#network")).to_have_text(f"chain {chain.deployment.chain_id}")
    expect(page.locator("#chain-warning")).to_be_hidden()
    page.get_by_label("Amount (INFER)").first.fill("10")
    page.get_by_role("button", name="Deposit").click()
    _status(page, "Approve: confirmed")  # the fresh account had no allowance
    _status(page, "Deposit: confirmed")
    expect(page.locator("#escrow-balance")).to_have_text("10 INFER")
    assert chain.escrow_balance(buyer) == 10 * ONE_TOKEN
    page.locator("#withdraw-form").get_by_label("Amount (INFER)").fill("2")
    page.get_by_role("button", name="Request withdrawal").click()
    _status(page, "Withdrawal request: confirmed")
    expect(page.locator("#pending-withdrawal")).to_contain_text("Pending withdrawal of 2 INFER")
    expect(page.get_by_role("button", name="Withdraw now")).to_be_disabled()
    rpc_request(market["rpc"], "evm_increaseTime", [chain.deployment.params.withdraw_delay_s + 1])
    rpc_request(market["rpc"], "evm_mine")
    page.reload()
    page.get_by_role("button", name="Connect wallet").click()
    page.get_by_role("button", name="Withdraw now").click()
    _status(page, "Withdrawal: confirmed")
    expect(page.locator("#escrow-balance")).to_have_text("8 INFER")
    _shot(page, "buyer")

    # Network: one model, every layer served by one node, three staked nodes.
    page.goto("/app/#/network")
    expect(page.get_by_role("table", name="Live nodes (3)")).to_be_visible()
    expect(page.locator("main")).to_contain_text("every layer served")
    expect(page.locator("main")).to_contain_text("150 INFER")
    expect(page.locator("main")).to_contain_text("eu-west")  # the region operator1's signed offer states
    _shot(page, "network")

    # Chat: the quoted route first, then a streamed answer; the wallet countersigns one receipt per node.
    page.goto("/app/#/chat")
    expect(page.get_by_role("table", name="Nodes on the quoted route").locator("tbody tr")).to_have_count(3)
    expect(page.locator("#quote-total")).to_contain_text("0.3 INFER per 1k tokens")  # 30 layers x 0.01
    page.get_by_label("Max tokens").fill("6")
    page.get_by_label("Your message").fill("What is the capital of France?")
    page.get_by_role("button", name="Send").click()
    _status(page, "Answer complete.")
    answer = page.locator(".turn .answer").first
    expect(answer).to_have_attribute("aria-live", "polite")
    answer_text = answer.inner_text()
    assert answer_text.strip(), "no answer text streamed"
    expect(page.locator(".turn .route")).to_contain_text("Served by")
    expect(page.locator(".cost-line")).to_contain_text("3 receipts")
    page.get_by_text("Receipts (3)").click()
    _shot(page, "chat")
    assert page.errors == []  # type: ignore[attr-defined]

    # History: the chat with its receipts, settled from the wallet; the transaction pays the three nodes.
    page.goto("/app/#/history")
    expect(page.locator("#history")).to_contain_text("3 receipts not settled yet")
    history = httpx.get(f"{market['url']}/app/api/history/{buyer}", timeout=30).json()
    (chat,) = history["chats"]
    assert chat["answer"] == answer_text and len(chat["receipts"]) == 3
    assert sum(int(r["amount"]) for r in chat["receipts"]) == int(chat["cost"]) > 0
    before = chain.escrow_balance(buyer)
    page.get_by_role("button", name="Settle 3 receipts on-chain").click()
    _status(page, "Settlement: confirmed")
    expect(page.locator(".tx")).to_have_count(3)
    tx = page.locator(".tx").first.inner_text()
    assert tx.startswith("0x") and len(tx) == 66
    assert chain.escrow_balance(buyer) == before - int(chat["cost"])
    _shot(page, "history")

    # Operator: operator1's earnings from that settlement; it connects its wallet and claims them.
    node = market["operators"][0]
    earned = chain.earnings(node)
    assert earned > 0
    page.evaluate("a => window.__testWallet.use(a)", node)
    page.goto("/app/#/operator")
    expect(page.get_by_label("Node wallet")).to_have_value(node)
    expect(page.locator("#stake")).to_have_text("150 INFER")
    expect(page.locator("figure svg circle")).to_have_count(1)  # one settlement so far
    _shot(page, "operator")
    held = chain.token_balance(node)
    page.get_by_role("button", name="Claim earnings").click()
    _status(page, "Claim earnings: confirmed")
    expect(page.locator("#claimable")).to_have_text("0 INFER")
    assert chain.earnings(node) == 0 and chain.token_balance(node) == held + earned

    # Once the epoch of that settlement has ended, its share of the epoch's reward (the fees) can be claimed.
    pool = chain.contracts.reward_pool.functions
    epoch = pool.currentEpoch().call()
    rpc_request(market["rpc"], "evm_increaseTime", [chain.deployment.params.epoch_length_s])
    rpc_request(market["rpc"], "evm_mine")
    reward = pool.claimable(epoch, node).call()
    assert reward > 0
    page.get_by_role("button", name="Show").click()
    held = chain.token_balance(node)
    page.get_by_role("button", name="Claim rewards").click()
    _status(page, "Claim rewards: confirmed")
    assert chain.token_balance(node) == held + reward and pool.claimable(epoch, node).call() == 0


def test_paid_chats_need_the_buyers_signed_authorisation(market: dict) -> None:
    """Naming a buyer is not enough: the market starts a paid chat only under that wallet's signed ChatSession."""
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    buyer = Account.from_key(market["buyer_key"])
    chat = {"model": "SmolLM2-135M-Instruct", "buyer": buyer.address, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=market["url"], timeout=30) as http:
        refused = http.post("/app/api/chats", json=chat)
        assert refused.status_code == 401 and "authorisation" in refused.json()["detail"]
        grant = http.post("/app/api/chats/authorization", json={"buyer": buyer.address, "max_price_per_1k": 10**16})
        assert grant.status_code == 200
        typed = grant.json()["typed_data"]
        msg = typed["message"]
        fields = {"nonce": msg["nonce"], "max_price_per_1k": msg["maxPricePer1k"], "expiry": msg["expiry"],
                  "market": msg["market"]}  # fmt: skip
        for signer, cap, why in (
            (Account.create(), 10**16, "not the buyer"),  # someone else's wallet signed it
            (buyer, 10**16 + 1, "above the authorised"),  # a dearer chat than the wallet allowed
        ):
            signature = "0x" + bytes(signer.sign_message(encode_typed_data(full_message=typed)).signature).hex()
            body = {**chat, "max_price_per_1k": cap, "authorization": {**fields, "signature": signature}}
            answer = http.post("/app/api/chats", json=body)
            assert answer.status_code == 401 and why in answer.json()["detail"], answer.text
        # the buyer's own signature over a message the market did not issue (a raised cap) is refused too
        raised = {**typed, "message": {**msg, "maxPricePer1k": str(10**30)}}
        signature = "0x" + bytes(buyer.sign_message(encode_typed_data(full_message=raised)).signature).hex()
        body = {**chat, "authorization": {**fields, "max_price_per_1k": 10**30, "signature": signature}}
        answer = http.post("/app/api/chats", json=body)
        assert answer.status_code == 401 and "unknown authorisation" in answer.json()["detail"], answer.text


def test_reseller_authorises_the_gateway_and_manages_api_keys(browser, market: dict) -> None:
    import re

    import openai
    from eth_account import Account
    from playwright.sync_api import expect

    from inferchain.wallet.deployment import ONE_TOKEN

    chain, reseller, gateway = market["chain"], market["reseller"]["address"], market["gateway"]
    chain.deposit(Account.from_key(market["reseller"]["private_key"]), 50 * ONE_TOKEN)
    page = _page(browser, market, reseller)
    page.on("dialog", lambda d: d.accept())
    _connect(page, "reseller")
    page.get_by_role("button", name="Sign in with Ethereum").click()
    _status(page, "Signed in.")

    # The paid gateway countersigns for resellers that authorise its key on the escrow: done from the wallet here.
    expect(page.locator("#gateway-key")).to_contain_text(gateway)
    expect(page.locator("#gateway-authorized")).to_have_text("have not authorised")
    page.get_by_role("button", name="Authorise the gateway key").click()
    _status(page, "Authorise gateway key: confirmed")
    expect(page.locator("#gateway-authorized")).to_have_text("have authorised")
    assert chain.is_authorized_signer(reseller, gateway)

    page.get_by_label("Name").fill("customer-a")
    page.locator("#new-key-form").get_by_label("Tokens per day").fill("5000")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key code").inner_text()
    assert key.startswith("ick_")
    expect(page.get_by_role("table", name="API keys (1)")).to_contain_text("5000 tok/day")

    # A Web2 customer uses the key; its usage shows up per key.
    client = openai.OpenAI(base_url=market["url"] + "/v1", api_key=key, max_retries=0, timeout=180)
    answer = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0
    )
    assert answer.usage is not None
    used = answer.usage.prompt_tokens + answer.usage.completion_tokens
    page.goto("/app/#/network")
    page.goto("/app/#/reseller")  # the admin token stays in the tab's session storage
    expect(page.locator("#reseller")).to_contain_text(f"1 requests, {used} tokens")
    chart = page.locator("#reseller figure svg title").text_content() or ""
    assert re.search(rf"customer-a {used} tokens", chart), chart
    _shot(page, "reseller")

    with httpx.Client(base_url=market["url"], timeout=30) as http:
        assert http.get("/v1/models", headers={"authorization": f"Bearer {key}"}).status_code == 200
        page.get_by_role("button", name="Rotate key customer-a").click()
        _status(page, "Key rotated")
        rotated = page.locator("#new-key code").inner_text()
        assert rotated.startswith("ick_") and rotated != key
        assert http.get("/v1/models", headers={"authorization": f"Bearer {key}"}).status_code == 401
        assert http.get("/v1/models", headers={"authorization": f"Bearer {rotated}"}).status_code == 200
        page.get_by_role("button", name="Revoke key customer-a").click()
        _status(page, "Key revoked.")
        assert http.get("/v1/models", headers={"authorization": f"Bearer {rotated}"}).status_code == 401


def test_wrong_chain_is_flagged(browser, market: dict) -> None:
    from playwright.sync_api import expect

    page = _page(browser, market, market["buyer"], chain="0x1")
    _connect(page, "buyer")
    expect(page.get_by_role("alert")).to_contain_text("Wrong network: your wallet is on chain 1")
    expect(page.locator(".facts")).to_contain_text("on another network")  # no balances read from the wrong chain
    page.get_by_role("button", name="Deposit").click()
    _status(page, "switch to")
    _shot(page, "wrong-chain")


@pytest.mark.parametrize("path", ["buyer", "chat", "history", "network", "operator", "reseller"])
def test_pages_fit_a_phone(browser, market: dict, path: str) -> None:
    page = _page(browser, market, market["buyer"], phone=True)
    _connect(page, path)
    page.locator(f'[data-page="{path}"] h1').wait_for()
    page.wait_for_load_state("networkidle")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"{path} is {width} px wide at a 375 px viewport"
    _shot(page, f"phone-{path}")
    assert page.errors == []  # type: ignore[attr-defined]
