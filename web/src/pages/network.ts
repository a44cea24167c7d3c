// Network: models, how many nodes serve each layer, and every live node with its price, throughput, load and stake.
import { api, getConfig } from "../api";
import { barChart } from "../chart";
import { h, table } from "../dom";
import { infer, short } from "../format";

interface NetworkNode {
  node_id: string; model_id: string; start: number; end: number; wallet: string | null; price_per_1k: string;
  tokens_per_s: number | null; load: number | null; free_slots: number; max_slots: number; stake: string | null; region: string;
}
interface Network { models: { id: string; layers: number; coverage: number[] }[]; nodes: NetworkNode[] }

export async function renderNetwork(main: HTMLElement): Promise<void> {
  const [cfg, net] = await Promise.all([getConfig(), api<Network>("/app/api/network")]);
  const names = new Map(cfg.models.map((m) => [m.id, m.name]));
  main.append(h("h1", {}, "Network"));
  for (const m of net.models) {
    const uncovered = m.coverage.filter((c) => c === 0).length;
    main.append(
      h("section", { class: "model", "aria-label": `Model ${names.get(m.id) ?? m.id}` },
        h("h2", {}, names.get(m.id) ?? short(m.id)),
        h("p", { class: "meta mono" }, m.id),
        h("p", {}, `${m.layers} layers; ${uncovered ? `${uncovered} layers not served` : "every layer served"}.`),
        h("figure", {},
          barChart("Nodes serving each layer", m.coverage.map((_, i) => String(i)), m.coverage, "nodes"),
          h("figcaption", {}, "Nodes serving each layer (x: layer, y: nodes with free slots)")),
      ),
    );
  }
  main.append(
    table(`Live nodes (${net.nodes.length})`, ["node", "model", "layers", "price / 1k / layer", "tokens/s", "load", "stake", "region"],
      net.nodes.map((n) => [
        h("span", { class: "mono", title: n.node_id }, short(n.node_id)),
        names.get(n.model_id) ?? short(n.model_id),
        `${n.start}–${n.end - 1}`,
        infer(n.price_per_1k),
        n.tokens_per_s ?? "?",
        n.load === null ? "?" : `${Math.round(n.load * 100)}% (${n.max_slots - n.free_slots}/${n.max_slots})`,
        n.stake === null ? "unstaked (free)" : infer(n.stake, 2),
        n.region,
      ])),
  );
}
