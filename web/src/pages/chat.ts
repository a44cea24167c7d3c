// Chat: pick a model and caps, see the quoted route, stream the answer, countersign each node's receipt in the wallet.
import { api, ApiError, getConfig } from "../api";
import { add, errorText, field, h, setStatus, status, table } from "../dom";
import { infer, short, toWei } from "../format";
import { requireAccount, signTypedData } from "../wallet";

interface Hop { node_id: string; start: number; end: number; price_per_1k: number; latency_ms: number }
interface Quote { hops: Hop[]; price_per_1k: number; est_latency_ms: number }
interface ReceiptEvent {
  key: string;
  amount: string;
  receipt: { node: string; span_start: number; span_end: number; tokens_in: number; tokens_out: number; price_per_1k: string };
}
type ChatEvent =
  | { type: "chat"; id: string }
  | { type: "route"; hops: { node: string; start: number; end: number }[] }
  | { type: "token"; text: string }
  | { type: "sign"; request_id: string; typed_data: unknown }
  | ({ type: "receipt" } & ReceiptEvent)
  | { type: "done"; cost: string; prompt_tokens: number; completion_tokens: number; receipts: number; receipt_errors: string[] }
  | { type: "error"; kind: string; message: string };

const conversation: { role: "user" | "assistant"; content: string }[] = [];

// The wallet's signed ChatSession (inferchain/marketplace/webui/authorization.py): a paid market starts chats for a
// wallet only with it. Signed once per wallet and price cap, for as long as the market lets it last (an hour).
interface Signed { nonce: string; max_price_per_1k: string; expiry: number; market: string; signature: string }
interface Authorization { buyer: string; cap: string; signed: Signed }
interface Grant {
  typed_data: { message: { nonce: string; maxPricePer1k: string; expiry: number; market: string } };
  expiry: number;
}
let authorization: Authorization | null = null;

async function authorize(buyer: string, cap: string | undefined): Promise<Authorization> {
  const want = cap ?? "uncapped";
  const a = authorization;
  if (a && a.buyer === buyer && a.cap === want && a.signed.expiry > Date.now() / 1000 + 60) return a;
  const grant = await api<Grant>("/app/api/chats/authorization", {
    method: "POST",
    body: JSON.stringify({ buyer, max_price_per_1k: cap }),
  });
  const signature = await signTypedData(grant.typed_data);
  const msg = grant.typed_data.message;
  const signed = { nonce: msg.nonce, max_price_per_1k: msg.maxPricePer1k, expiry: msg.expiry, market: msg.market, signature };
  authorization = { buyer, cap: want, signed };
  return authorization;
}

export async function renderChat(main: HTMLElement): Promise<void> {
  const cfg = await getConfig();
  const models = cfg.models.filter((m) => m.chat);
  const model = h("select", { required: true }, models.map((m) => h("option", { value: m.id }, `${m.name} (${m.layers} layers)`)));
  const maxPrice = h("input", { type: "text", inputmode: "decimal", value: "1", autocomplete: "off" });
  const maxLatency = h("input", { type: "number", min: 0, step: 1, value: "", placeholder: "no cap" });
  const objective = h("select", {}, h("option", { value: "latency" }, "least latency"), h("option", { value: "price" }, "least price"));
  const maxTokens = h("input", { type: "number", min: 1, max: 512, value: "24" });
  const prompt = h("textarea", { rows: 3, required: true, placeholder: "Ask something…" });
  const quoteBox = h("section", { id: "quote", "aria-labelledby": "quote-h", "aria-live": "polite" });
  const transcript = h("section", { id: "transcript", "aria-label": "Conversation" });
  const sendStatus = status();
  const send = h("button", { type: "submit" }, "Send");

  add(
    main,
    h("h1", {}, "Chat"),
    models.length === 0 ? h("p", { role: "alert" }, "This market serves no models for chat.") : null,
    h(
      "form",
      { id: "chat-form", onsubmit: (e: Event) => { e.preventDefault(); void ask(); } },
      h(
        "fieldset",
        { class: "row" },
        h("legend", {}, "Route"),
        field("Model", model),
        field("Max price (INFER per 1k tokens, whole route)", maxPrice),
        field("Max latency (ms per token)", maxLatency),
        field("Optimise for", objective),
        field("Max tokens", maxTokens),
      ),
      quoteBox,
      field("Your message", prompt),
      send,
      sendStatus,
    ),
    transcript,
  );

  function quoteBody(): Record<string, unknown> {
    const body: Record<string, unknown> = { model: model.value, objective: objective.value };
    if (maxPrice.value.trim()) body.max_price_per_1k = toWei(maxPrice.value).toString();
    if (maxLatency.value.trim()) body.max_latency_ms = Number(maxLatency.value);
    return body;
  }

  async function quote(): Promise<Quote | null> {
    quoteBox.replaceChildren(h("h2", { id: "quote-h" }, "Quoted route"));
    try {
      const q = await api<Quote>("/v1/quotes", { method: "POST", body: JSON.stringify(quoteBody()) });
      quoteBox.append(
        table(
          "Nodes on the quoted route",
          ["node", "layers", "price / 1k", "latency"],
          q.hops.map((hop) => [short(hop.node_id), `${hop.start}–${hop.end - 1}`, infer(BigInt(Math.round(hop.price_per_1k))), `${hop.latency_ms.toFixed(1)} ms`]),
        ),
        h("p", { id: "quote-total" }, `Route price ${infer(BigInt(Math.round(q.price_per_1k)))} per 1k tokens; est. latency ${q.est_latency_ms.toFixed(1)} ms per token.`),
      );
      return q;
    } catch (e) {
      const text = e instanceof ApiError && e.status === 503 ? `No route: ${e.message}` : errorText(e);
      quoteBox.append(h("p", { role: "alert" }, text));
      return null;
    }
  }

  for (const input of [model, maxPrice, maxLatency, objective]) input.addEventListener("change", () => void quote());

  async function ask(): Promise<void> {
    let buyer: string | null = null;
    try {
      if (cfg.chain_id !== null) buyer = requireAccount();
      if (!prompt.value.trim()) throw new Error("Write a message first.");
    } catch (e) {
      setStatus(sendStatus, errorText(e), "error");
      return;
    }
    if (!(await quote())) {
      setStatus(sendStatus, "No route under these caps: raise them or wait for nodes.", "error");
      return;
    }
    const text = prompt.value.trim();
    conversation.push({ role: "user", content: text });
    prompt.value = "";
    send.disabled = true;
    const turn = new Turn(transcript, text);
    setStatus(sendStatus, "Sending…");
    try {
      const route = quoteBody();
      const body = { ...route, buyer, messages: conversation, max_tokens: Number(maxTokens.value) };
      const post = async (): Promise<Response> => {
        let signed: Authorization | null = null;
        if (buyer) {
          setStatus(sendStatus, "Authorise this market to chat for your wallet: sign in your wallet…");
          signed = await authorize(buyer, route.max_price_per_1k as string | undefined);
          setStatus(sendStatus, "Sending…");
        }
        const auth = signed ? signed.signed : undefined;
        return fetch("/app/api/chats", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ ...body, authorization: auth }),
        });
      };
      let res = await post();
      if (res.status === 401 && buyer) {  // the market restarted or the authorisation expired: sign once more
        authorization = null;
        res = await post();
      }
      if (!res.ok || !res.body) throw new Error(`chat refused: ${(await res.json().catch(() => null))?.detail ?? res.status}`);
      let chatId = "";
      for await (const event of ndjson(res.body)) {
        if (event.type === "chat") chatId = event.id;
        else if (event.type === "sign") {
          setStatus(sendStatus, "Countersign the node's receipt in your wallet…");
          const signature = await signTypedData(event.typed_data);
          await api(`/app/api/chats/${chatId}/signatures`, {
            method: "POST",
            body: JSON.stringify({ request_id: event.request_id, signature }),
          });
          setStatus(sendStatus, "Receipt countersigned.");
        } else turn.apply(event);
      }
      conversation.push({ role: "assistant", content: turn.answerText() });
      setStatus(sendStatus, "Answer complete.", "ok");
    } catch (e) {
      conversation.pop();
      setStatus(sendStatus, errorText(e), "error");
    } finally {
      send.disabled = false;
    }
  }

  await quote();
}

async function* ndjson(body: ReadableStream<Uint8Array>): AsyncGenerator<ChatEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let nl: number;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl).trim();
      buffer = buffer.slice(nl + 1);
      if (line) yield JSON.parse(line) as ChatEvent;
    }
  }
}

/** One question and its streamed answer, with the route, cost and receipts behind it. */
class Turn {
  private answer: HTMLElement;
  private route: HTMLElement;
  private footer: HTMLElement;
  private receipts: ReceiptEvent[] = [];

  constructor(parent: HTMLElement, question: string) {
    this.answer = h("div", { class: "answer", "aria-live": "polite", "aria-busy": "true" });
    this.route = h("p", { class: "route" });
    this.footer = h("div", { class: "cost" });
    parent.append(
      h("article", { class: "turn" },
        h("p", { class: "question" }, h("strong", {}, "You: "), question),
        this.route,
        this.answer,
        this.footer,
      ),
    );
  }

  answerText(): string {
    return this.answer.textContent ?? "";
  }

  apply(event: ChatEvent): void {
    if (event.type === "route") {
      this.route.textContent = "Served by " + event.hops.map((hop) => `${short(hop.node)} [${hop.start}–${hop.end - 1}]`).join(" → ");
    } else if (event.type === "token") {
      this.answer.append(event.text);
    } else if (event.type === "receipt") {
      this.receipts.push(event);
    } else if (event.type === "done") {
      this.answer.setAttribute("aria-busy", "false");
      add(
        this.footer,
        h("p", { class: "cost-line" }, `Cost ${infer(event.cost)} · ${event.prompt_tokens} prompt + ${event.completion_tokens} answer tokens · ${event.receipts} receipts`),
        event.receipt_errors.length ? h("p", { role: "alert" }, event.receipt_errors.join("; ")) : null,
        this.receipts.length
          ? h("details", { class: "receipts" },
              h("summary", {}, `Receipts (${this.receipts.length})`),
              table("Receipts behind this answer", ["node", "layers", "tokens", "price / 1k / layer", "amount", "key"],
                this.receipts.map((r) => [
                  short(r.receipt.node), `${r.receipt.span_start}–${r.receipt.span_end - 1}`,
                  r.receipt.tokens_in + r.receipt.tokens_out, infer(r.receipt.price_per_1k), infer(r.amount), short(r.key, 8),
                ])),
            )
          : null,
      );
    } else if (event.type === "error") {
      this.answer.setAttribute("aria-busy", "false");
      this.footer.append(h("p", { role: "alert" }, `${event.kind}: ${event.message}`));
      throw new Error(event.message);
    }
  }
}
