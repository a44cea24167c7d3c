// The dApp shell: header wallet status, chain warning, and hash routing between the pages.
import "./style.css";
import { getConfig } from "./api";
import { errorText, h } from "./dom";
import { short } from "./format";
import { renderBuyer } from "./pages/buyer";
import { renderChat } from "./pages/chat";
import { renderHistory } from "./pages/history";
import { renderNetwork } from "./pages/network";
import { renderOperator } from "./pages/operator";
import { renderReseller } from "./pages/reseller";
import { connect, hasWallet, onWalletChange, switchChain, wallet, watchWallet, wrongChain } from "./wallet";

const PAGES: Record<string, { title: string; render: (main: HTMLElement) => Promise<void> }> = {
  buyer: { title: "Buyer", render: renderBuyer },
  chat: { title: "Chat", render: renderChat },
  history: { title: "History", render: renderHistory },
  network: { title: "Network", render: renderNetwork },
  operator: { title: "Operator", render: renderOperator },
  reseller: { title: "Reseller", render: renderReseller },
};

const main = document.getElementById("main")!;
const connectButton = document.getElementById("connect") as HTMLButtonElement;
const accountEl = document.getElementById("account")!;
const networkEl = document.getElementById("network")!;
const warning = document.getElementById("chain-warning")!;

function pageName(): string {
  const name = location.hash.replace(/^#\/?/, "");
  return name in PAGES ? name : "buyer";
}

let rendering = 0;
async function route(): Promise<void> {
  const name = pageName();
  const ticket = ++rendering;
  document.title = `${PAGES[name].title} · inferchain`;
  for (const a of document.querySelectorAll<HTMLAnchorElement>("nav a")) {
    if (a.getAttribute("href") === `#/${name}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const page = h("div", { class: "page", "data-page": name });
  main.replaceChildren(page);
  try {
    await PAGES[name].render(page);
  } catch (e) {
    if (ticket === rendering) page.append(h("p", { role: "alert" }, errorText(e)));
  }
}

async function showWallet(): Promise<void> {
  const cfg = await getConfig();
  accountEl.textContent = wallet.account ? short(wallet.account, 4) : "";
  accountEl.title = wallet.account ?? "";
  connectButton.hidden = wallet.account !== null;
  networkEl.textContent = wallet.chainId !== null ? `chain ${wallet.chainId}` : "";
  warning.hidden = !wrongChain();
  warning.replaceChildren();
  if (wrongChain()) {
    warning.append(
      `Wrong network: your wallet is on chain ${wallet.chainId}, this market settles on chain ${cfg.chain_id}. `,
      h("button", { type: "button", onclick: () => void switchChain().catch((e) => alert(errorText(e))) }, "Switch network"),
    );
  }
}

connectButton.addEventListener("click", async () => {
  try {
    await connect();
  } catch (e) {
    warning.hidden = false;
    warning.textContent = errorText(e);
  }
});
if (!hasWallet()) connectButton.title = "No browser wallet found";
watchWallet();
onWalletChange(() => {
  void showWallet();
  void route();
});
window.addEventListener("hashchange", () => void route());
void showWallet();
void route();
