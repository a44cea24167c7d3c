// A tiny element builder: every text goes in through textContent, never as HTML.
type Attrs = Record<string, string | number | boolean | undefined | ((ev: Event) => void)>;
type Child = Node | string | number | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") el.addEventListener(name.replace(/^on/, ""), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  add(el, ...children);
  return el;
}

export function field(label: string, input: HTMLElement, hint?: string): HTMLElement {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  const hintEl = hint ? h("small", { id: `${id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hintEl);
}

export function table(caption: string, head: string[], rows: Child[][]): HTMLElement {
  return h(
    "div",
    { class: "scroll", role: "region", "aria-label": caption, tabindex: 0 },
    h(
      "table",
      {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))),
    ),
  );
}

/** A status line that screen readers announce when it changes. */
export function status(): HTMLElement {
  return h("p", { class: "status", role: "status", "aria-live": "polite" });
}

export function setStatus(el: HTMLElement, text: string, kind: "info" | "ok" | "error" = "info"): void {
  el.textContent = text;
  el.dataset.kind = kind;
}

export function errorText(e: unknown): string {
  if (e && typeof e === "object") {
    const o = e as { shortMessage?: string; message?: string; info?: { error?: { message?: string } } };
    return o.info?.error?.message ?? o.shortMessage ?? o.message ?? String(e);
  }
  return String(e);
}

/** `parent.append` that skips null, undefined and false (optional parts of a page). */
export function add(parent: Element, ...children: (Child | Child[])[]): void {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : String(child));
  }
}

/** A live list of transaction steps (approve, deposit, ...): each keeps its own line, updated in place. */
export function steps(): { el: HTMLElement; report: (label: string) => (text: string, kind?: "info" | "ok" | "error") => void; clear: () => void } {
  const el = h("ul", { class: "steps", role: "status", "aria-live": "polite" });
  return {
    el,
    report: (label) => (text, kind = "info") => {
      let line = [...el.children].find((li) => (li as HTMLElement).dataset.step === label) as HTMLElement | undefined;
      if (!line) {
        line = h("li", { "data-step": label });
        el.append(line);
      }
      setStatus(line, text, kind);
    },
    clear: () => el.replaceChildren(),
  };
}
