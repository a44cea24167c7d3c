// Reseller: sign in with the wallet (EIP-4361), then create, rotate and revoke API keys, set quotas, see usage per key.
import { getAddress } from "ethers";
import { api, getConfig } from "../api";
import { barChart } from "../chart";
import { add, errorText, field, h, setStatus, status, table } from "../dom";
import { infer, short, toWei, when } from "../format";
import { contract, personalSign, requireAccount, sendTx, wallet } from "../wallet";

interface Key {
  id: string; name: string; created_at: number; revoked_at: number | null;
  tokens_per_day: number | null; spend_per_month: number | null; requests_per_minute: number | null;
}
interface Usage {
  requests: number; prompt_tokens: number; completion_tokens: number; spend: number;
  rows: { key_id: string; status: string; prompt_tokens: number; completion_tokens: number; spend: number }[];
}

const STATEMENT = "Sign in to administer API keys on this inferchain gateway.";
const TOKEN_KEY = "inferchain.admin";

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export async function renderReseller(main: HTMLElement): Promise<void> {
  let token = sessionStorage.getItem(TOKEN_KEY);
  const body = h("div", { id: "reseller" });
  const st = status();
  main.append(h("h1", {}, "Reseller"), body, st);
  const report = (t: string, k: "info" | "ok" | "error" = "info") => setStatus(st, t, k);

  async function signIn(): Promise<void> {
    try {
      const address = getAddress(requireAccount());
      const n = await api<{ nonce: string; domain: string; chain_id: number }>("/admin/nonce");
      const now = Date.now();
      const message =
        `${n.domain} wants you to sign in with your Ethereum account:\n${address}\n\n${STATEMENT}\n\n` +
        `URI: ${location.origin}\nVersion: 1\nChain ID: ${n.chain_id}\nNonce: ${n.nonce}\n` +
        `Issued At: ${iso(now)}\nExpiration Time: ${iso(now + 3600_000)}`;
      report("Sign the sign-in message in your wallet…");
      const signature = await personalSign(message);
      const login = await api<{ token: string }>("/admin/login", { method: "POST", body: JSON.stringify({ message, signature }) });
      token = login.token;
      sessionStorage.setItem(TOKEN_KEY, token);
      report("Signed in.", "ok");
      await refresh();
    } catch (e) {
      report(errorText(e), "error");
    }
  }

  async function call<T>(path: string, init: RequestInit = {}): Promise<T> {
    return api<T>(path, { ...init, token: token ?? undefined });
  }

  const limitInputs = () => ({
    tokensPerDay: h("input", { type: "number", min: 0, placeholder: "no limit" }),
    spendPerMonth: h("input", { type: "text", inputmode: "decimal", placeholder: "no limit" }),
    requestsPerMinute: h("input", { type: "number", min: 0, placeholder: "no limit" }),
  });
  type Limits = ReturnType<typeof limitInputs>;
  const limitsBody = (l: Limits) => ({
    tokens_per_day: l.tokensPerDay.value ? Number(l.tokensPerDay.value) : null,
    spend_per_month: l.spendPerMonth.value ? toWei(l.spendPerMonth.value).toString() : null,
    requests_per_minute: l.requestsPerMinute.value ? Number(l.requestsPerMinute.value) : null,
  });
  const limitFields = (l: Limits) => [
    field("Tokens per day", l.tokensPerDay),
    field("Spend per month (INFER)", l.spendPerMonth),
    field("Requests per minute", l.requestsPerMinute),
  ];

  const gatewaySection = h("section", { id: "gateway-key", "aria-labelledby": "gw-h" });

  /** A paid gateway countersigns receipts for its resellers with its own key, which each reseller authorises. */
  async function gatewayKey(): Promise<void> {
    const cfg = await getConfig();
    gatewaySection.replaceChildren(h("h2", { id: "gw-h" }, "Gateway key"));
    if (!cfg.gateway_signer || !wallet.account) {
      gatewaySection.append(h("p", {}, "This gateway opens free sessions: there is no key to authorise."));
      return;
    }
    const escrow = await contract("escrow");
    const [authorized, deposit]: [boolean, bigint] = await Promise.all([
      escrow.isAuthorizedSigner(wallet.account, cfg.gateway_signer),
      escrow.balanceOf(wallet.account),
    ]);
    gatewaySection.append(
      h("p", {}, "Your customers' requests are paid from your escrow deposit (", infer(deposit),
        "; top it up on the Buyer page). The gateway countersigns their receipts with its key ",
        h("code", {}, cfg.gateway_signer), ", which you ", h("strong", { id: "gateway-authorized" }, authorized ? "have authorised" : "have not authorised"), "."),
      h("button", { type: "button", class: authorized ? "danger" : "", onclick: () => void authorize(cfg.gateway_signer!, !authorized) },
        authorized ? "Revoke the gateway key" : "Authorise the gateway key"),
    );
  }

  async function authorize(signer: string, on: boolean): Promise<void> {
    try {
      const escrow = await contract("escrow", true);
      await sendTx(on ? "Authorise gateway key" : "Revoke gateway key", () => escrow.setSignerAuthorization(signer, on), report);
      await gatewayKey();
    } catch (e) {
      report(errorText(e), "error");
    }
  }

  async function refresh(): Promise<void> {
    body.replaceChildren();
    if (!token) {
      body.append(
        h("p", {}, "Sign in with your wallet to manage your customers' API keys."),
        h("button", { type: "button", id: "sign-in", onclick: () => void signIn() }, "Sign in with Ethereum"),
      );
      return;
    }
    let keys: Key[], usage: Usage;
    try {
      [keys, usage] = await Promise.all([call<Key[]>("/admin/keys"), call<Usage>("/admin/usage")]);
      await gatewayKey();
    } catch (e) {
      token = null;
      sessionStorage.removeItem(TOKEN_KEY);
      report(`Signed out: ${errorText(e)}`, "error");
      await refresh();
      return;
    }
    const name = h("input", { type: "text", maxlength: 200, required: true, placeholder: "customer name" });
    const created = h("output", { id: "new-key", "aria-live": "polite" });
    const newLimits = limitInputs();
    const live = keys.filter((k) => !k.revoked_at);
    const editKey = h("select", {}, live.map((k) => h("option", { value: k.id }, `${k.name || k.id}`)));
    const editLimits = limitInputs();

    const perKey = new Map<string, number>();
    for (const r of usage.rows) if (r.status === "settled") perKey.set(r.key_id, (perKey.get(r.key_id) ?? 0) + r.prompt_tokens + r.completion_tokens);

    add(
      body,
      gatewaySection,
      h("section", { "aria-labelledby": "new-h" },
        h("h2", { id: "new-h" }, "New API key"),
        h("form", { id: "new-key-form", onsubmit: (e: Event) => { e.preventDefault(); void create(); } },
          field("Name", name), h("div", { class: "row" }, limitFields(newLimits)), h("button", { type: "submit" }, "Create key")),
        created,
      ),
      table(`API keys (${keys.length})`, ["name", "id", "created", "quotas", "state", ""],
        keys.map((k) => [
          k.name, h("span", { class: "mono" }, k.id), when(k.created_at),
          [k.tokens_per_day !== null ? `${k.tokens_per_day} tok/day` : "", k.spend_per_month !== null ? `${infer(k.spend_per_month)}/month` : "",
            k.requests_per_minute !== null ? `${k.requests_per_minute} req/min` : ""].filter(Boolean).join(", ") || "none",
          k.revoked_at ? `revoked ${when(k.revoked_at)}` : "active",
          k.revoked_at ? "" : h("span", { class: "row" },
            h("button", { type: "button", class: "secondary", "aria-label": `Rotate key ${k.name || k.id}`, onclick: () => void rotate(k) }, "Rotate"),
            h("button", { type: "button", class: "danger", "aria-label": `Revoke key ${k.name || k.id}`, onclick: () => void revoke(k) }, "Revoke")),
        ])),
      live.length
        ? h("section", { "aria-labelledby": "quota-h" },
            h("h2", { id: "quota-h" }, "Quotas"),
            h("form", { onsubmit: (e: Event) => { e.preventDefault(); void setLimits(); } },
              field("Key", editKey), h("div", { class: "row" }, limitFields(editLimits)), h("button", { type: "submit" }, "Save quotas")))
        : null,
      h("section", { "aria-labelledby": "usage-h" },
        h("h2", { id: "usage-h" }, "Usage per key"),
        h("p", {}, `${usage.requests} requests, ${usage.prompt_tokens + usage.completion_tokens} tokens, ${infer(usage.spend)} spent.`),
        h("figure", {},
          barChart("Tokens per key", keys.map((k) => k.name || short(k.id)), keys.map((k) => perKey.get(k.id) ?? 0), "tokens"),
          h("figcaption", {}, "Tokens served per key (settled requests)")),
      ),
    );

    async function create(): Promise<void> {
      try {
        const k = await call<Key & { key: string }>("/admin/keys", { method: "POST", body: JSON.stringify({ name: name.value, ...limitsBody(newLimits) }) });
        await refresh();
        body.querySelector("#new-key")?.replaceChildren(`New key for ${k.name} (shown once): `, h("code", { class: "secret" }, k.key));
        report("Key created.", "ok");
      } catch (e) {
        report(errorText(e), "error");
      }
    }

    async function rotate(k: Key): Promise<void> {
      try {
        const r = await call<Key & { key: string }>(`/admin/keys/${k.id}/rotate`, { method: "POST" });
        await refresh();
        body.querySelector("#new-key")?.replaceChildren(`Rotated key for ${r.name} (shown once): `, h("code", { class: "secret" }, r.key));
        report("Key rotated; the old secret no longer works.", "ok");
      } catch (e) {
        report(errorText(e), "error");
      }
    }

    async function revoke(k: Key): Promise<void> {
      if (!confirm(`Revoke key ${k.name || k.id}? Its customers lose access at once.`)) return;
      try {
        await call(`/admin/keys/${k.id}`, { method: "DELETE" });
        report("Key revoked.", "ok");
        await refresh();
      } catch (e) {
        report(errorText(e), "error");
      }
    }

    async function setLimits(): Promise<void> {
      try {
        await call(`/admin/keys/${editKey.value}/limits`, { method: "PUT", body: JSON.stringify(limitsBody(editLimits)) });
        report("Quotas saved.", "ok");
        await refresh();
      } catch (e) {
        report(errorText(e), "error");
      }
    }
  }

  await refresh();
}
