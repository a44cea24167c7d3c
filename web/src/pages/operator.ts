// Operator: a node wallet's stake, earnings over time, pending receipts, claimable earnings and epoch rewards.
import { api } from "../api";
import { stepPlot } from "../chart";
import { errorText, field, h, setStatus, status, table } from "../dom";
import { infer, short, when } from "../format";
import { contract, sendTx, wallet } from "../wallet";

interface Operator {
  address: string; registered: boolean; stake: string; unbonding: string; jailed_until: number; slashed: boolean;
  routable: boolean; earnings: string; current_epoch: number; rewards: { epoch: number; amount: string }[];
  earnings_series: { time: number; earned: string; tx: string }[];
  pending_receipts: { key: string; amount: string; receipt: Record<string, string | number> }[];
}

export async function renderOperator(main: HTMLElement): Promise<void> {
  const address = h("input", { type: "text", value: wallet.account ?? "", placeholder: "0x…", autocomplete: "off", spellcheck: "false" });
  const body = h("div", { id: "operator" });
  const claimStatus = status();
  main.append(
    h("h1", {}, "Operator"),
    h("form", { class: "row", onsubmit: (e: Event) => { e.preventDefault(); void load(); } },
      field("Node wallet", address), h("button", { type: "submit" }, "Show")),
    body,
    claimStatus,
  );

  async function load(): Promise<void> {
    body.replaceChildren();
    if (!address.value.trim()) {
      body.append(h("p", {}, "Connect the node's wallet or enter its address."));
      return;
    }
    let op: Operator;
    try {
      op = await api<Operator>(`/app/api/operators/${address.value.trim()}`);
    } catch (e) {
      body.append(h("p", { role: "alert" }, errorText(e)));
      return;
    }
    const own = wallet.account?.toLowerCase() === op.address.toLowerCase();
    const claimable = op.rewards.filter((r) => BigInt(r.amount) > 0n);
    const rewardTotal = claimable.reduce((s, r) => s + BigInt(r.amount), 0n);
    const standing = !op.registered ? "not registered" : op.slashed ? "slashed" : op.routable ? "routable" : "not routable";
    body.append(
      h("dl", { class: "facts" },
        h("dt", {}, "Standing"), h("dd", {}, standing),
        h("dt", {}, "Stake"), h("dd", { id: "stake" }, infer(op.stake)),
        h("dt", {}, "Unbonding"), h("dd", {}, infer(op.unbonding)),
        op.jailed_until > Date.now() / 1000 ? [h("dt", {}, "Jailed until"), h("dd", {}, when(op.jailed_until))] : null,
        h("dt", {}, "Claimable earnings"), h("dd", { id: "claimable" }, infer(op.earnings)),
        h("dt", {}, "Claimable rewards"), h("dd", {}, `${infer(rewardTotal)} (${claimable.length} ended epochs; now epoch ${op.current_epoch})`),
      ),
      h("div", { class: "row" },
        h("button", { type: "button", id: "claim", disabled: !own || BigInt(op.earnings) === 0n, onclick: () => void claim() }, "Claim earnings"),
        h("button", { type: "button", disabled: !own || claimable.length === 0, onclick: () => void claimRewards(claimable.map((r) => r.epoch)) }, "Claim rewards"),
        own ? null : h("small", {}, "Connect this wallet to claim."),
      ),
      h("figure", {},
        stepPlot("Settled earnings over time", op.earnings_series.map((p) => ({ t: p.time, v: Number(BigInt(p.earned)) / 1e18 })), (v) => `${v.toFixed(4)} INFER`),
        h("figcaption", {}, "Settled earnings (after the protocol fee), cumulative")),
      table(`Pending receipts (${op.pending_receipts.length}, countersigned here, not settled)`, ["key", "layers", "tokens", "amount"],
        op.pending_receipts.map((r) => [short(r.key, 8), `${r.receipt.span_start}–${Number(r.receipt.span_end) - 1}`,
          Number(r.receipt.tokens_in) + Number(r.receipt.tokens_out), infer(r.amount)])),
    );
  }

  async function claim(): Promise<void> {
    try {
      const escrow = await contract("escrow", true);
      await sendTx("Claim earnings", () => escrow.claimEarnings(), (t, k) => setStatus(claimStatus, t, k));
      await load();
    } catch (e) {
      setStatus(claimStatus, errorText(e), "error");
    }
  }

  async function claimRewards(epochs: number[]): Promise<void> {
    try {
      const pool = await contract("rewards", true);
      await sendTx("Claim rewards", () => pool.claim(epochs), (t, k) => setStatus(claimStatus, t, k));
      await load();
    } catch (e) {
      setStatus(claimStatus, errorText(e), "error");
    }
  }

  await load();
}
