// History: the connected buyer's chats, their receipts and the transactions that settled them; settle the rest.
import { api } from "../api";
import { add, errorText, h, setStatus, status, table } from "../dom";
import { infer, short, when } from "../format";
import { contract, sendTx, wallet } from "../wallet";

interface Settlement { tx: string; block: number; time: number }
interface HistoryReceipt {
  key: string;
  node: string;
  amount: string;
  receipt: Record<string, string | number>;
  node_sig: string;
  buyer_sig: string;
  settlement: Settlement | null;
}
interface HistoryChat {
  id: string;
  prompt: string;
  answer: string;
  cost: string;
  created_at: number;
  prompt_tokens: number;
  completion_tokens: number;
  receipt_errors: string[];
  receipts: HistoryReceipt[];
}

export async function renderHistory(main: HTMLElement): Promise<void> {
  const list = h("div", { id: "history" });
  const settleStatus = status();
  main.append(h("h1", {}, "History"), list, settleStatus);

  async function refresh(): Promise<void> {
    list.replaceChildren();
    if (!wallet.account) {
      list.append(h("p", {}, "Connect your wallet to see your sessions."));
      return;
    }
    const data = await api<{ chats: HistoryChat[] }>(`/app/api/history/${wallet.account}`);
    const open = data.chats.flatMap((c) => c.receipts.filter((r) => !r.settlement));
    add(
      list,
      h("p", {}, `${data.chats.length} sessions; ${open.length} receipts not settled yet.`),
      open.length
        ? h("button", { type: "button", id: "settle", onclick: () => void settle(open) }, `Settle ${open.length} receipts on-chain`)
        : null,
    );
    for (const c of data.chats) {
      list.append(
        h("article", { class: "session" },
          h("h2", {}, c.prompt.length > 80 ? c.prompt.slice(0, 80) + "…" : c.prompt),
          h("p", { class: "meta" }, `${when(c.created_at)} · ${c.prompt_tokens}+${c.completion_tokens} tokens · cost ${infer(c.cost)}`),
          h("p", { class: "answer" }, c.answer),
          c.receipt_errors.length ? h("p", { role: "alert" }, c.receipt_errors.join("; ")) : null,
          table("Receipts", ["node", "layers", "amount", "settled in tx"],
            c.receipts.map((r) => [
              short(r.node), `${r.receipt.span_start}–${Number(r.receipt.span_end) - 1}`, infer(r.amount),
              r.settlement ? h("span", { class: "mono tx" }, r.settlement.tx) : "not settled",
            ])),
        ),
      );
    }
  }

  async function settle(receipts: HistoryReceipt[]): Promise<void> {
    try {
      const escrow = await contract("escrow", true);
      // Grouped by node then buyer: consecutive receipts share storage writes (docs/contracts.md).
      const sorted = [...receipts].sort((a, b) => a.node.localeCompare(b.node));
      const structs = sorted.map((r) => {
        const x = r.receipt;
        return [x.session_id, x.buyer, x.node, x.model_id, x.span_start, x.span_end, x.tokens_in, x.tokens_out,
          BigInt(x.price_per_1k), x.activation_commitment, x.expiry];
      });
      await sendTx(
        "Settlement",
        () => escrow.settleBatch(structs, sorted.map((r) => r.node_sig), sorted.map((r) => r.buyer_sig)),
        (text, kind) => setStatus(settleStatus, text, kind),
      );
      await refresh();
    } catch (e) {
      setStatus(settleStatus, errorText(e), "error");
    }
  }

  await refresh();
}
