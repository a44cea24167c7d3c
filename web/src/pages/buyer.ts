// Buyer: wallet balance, escrow deposit (approve when the allowance is short) and delayed withdrawal.
import { getConfig } from "../api";
import { errorText, field, h, setStatus, status, steps } from "../dom";
import { infer, toWei, when } from "../format";
import { chainTime, contract, sendTx, wallet, wrongChain } from "../wallet";

export async function renderBuyer(main: HTMLElement): Promise<void> {
  const cfg = await getConfig();
  const balances = h("dl", { class: "facts", "aria-label": "Balances" });
  const depositAmount = h("input", { type: "text", inputmode: "decimal", value: "10", required: true, autocomplete: "off" });
  const withdrawAmount = h("input", { type: "text", inputmode: "decimal", value: "1", required: true, autocomplete: "off" });
  const depositSteps = steps();
  const depositStatus = status();
  const withdrawStatus = status();
  const pending = h("div", { id: "pending-withdrawal" });
  main.append(
    h("h1", {}, "Buyer"),
    h("section", { "aria-labelledby": "bal-h" }, h("h2", { id: "bal-h" }, "Balances"), balances),
    h(
      "section",
      { "aria-labelledby": "dep-h" },
      h("h2", { id: "dep-h" }, "Deposit into escrow"),
      h(
        "form",
        { id: "deposit-form", onsubmit: (e: Event) => { e.preventDefault(); void deposit(); } },
        field("Amount (INFER)", depositAmount),
        h("button", { type: "submit" }, "Deposit"),
      ),
      depositSteps.el,
      depositStatus,
    ),
    h(
      "section",
      { "aria-labelledby": "wd-h" },
      h("h2", { id: "wd-h" }, "Withdraw"),
      h("p", {}, `Withdrawals wait ${cfg.withdraw_delay_s ?? "?"} s: during the delay the deposit still pays receipts you countersigned.`),
      h(
        "form",
        { id: "withdraw-form", onsubmit: (e: Event) => { e.preventDefault(); void requestWithdrawal(); } },
        field("Amount (INFER)", withdrawAmount),
        h("button", { type: "submit" }, "Request withdrawal"),
      ),
      pending,
      withdrawStatus,
    ),
  );

  async function refresh(): Promise<void> {
    balances.replaceChildren();
    pending.replaceChildren();
    if (!wallet.account || wrongChain()) {
      balances.append(h("dt", {}, "Wallet"), h("dd", {}, wallet.account ? "on another network" : "not connected"));
      return;
    }
    const token = await contract("token");
    const escrow = await contract("escrow");
    const [held, deposited, allowance, wd] = await Promise.all([
      token.balanceOf(wallet.account),
      escrow.balanceOf(wallet.account),
      token.allowance(wallet.account, cfg.addresses!.escrow),
      escrow.withdrawals(wallet.account),
    ]);
    balances.append(
      h("dt", {}, "In wallet"), h("dd", { id: "wallet-balance" }, infer(held)),
      h("dt", {}, "In escrow"), h("dd", { id: "escrow-balance" }, infer(deposited)),
      h("dt", {}, "Escrow allowance"), h("dd", {}, infer(allowance)),
    );
    if (wd.amount > 0n) {
      const ready = Number(wd.availableAt) <= (await chainTime());
      pending.append(
        h("p", {}, `Pending withdrawal of ${infer(wd.amount)}, available ${when(Number(wd.availableAt))}${ready ? " (ready)" : ""}.`),
        h("button", { type: "button", disabled: !ready, onclick: () => void withdraw() }, "Withdraw now"),
        " ",
        h("button", { type: "button", class: "secondary", onclick: () => void cancelWithdrawal() }, "Cancel withdrawal"),
      );
    }
  }

  const report = (el: HTMLElement) => (text: string, kind: "info" | "ok" | "error" = "info") => setStatus(el, text, kind);

  async function deposit(): Promise<void> {
    try {
      depositSteps.clear();
      setStatus(depositStatus, "");
      const amount = toWei(depositAmount.value);
      if (amount <= 0n) throw new Error("Enter an amount above zero.");
      const token = await contract("token", true);
      const escrow = await contract("escrow", true);
      const allowance: bigint = await token.allowance(wallet.account, cfg.addresses!.escrow);
      if (allowance < amount) {
        await sendTx("Approve", () => token.approve(cfg.addresses!.escrow, amount), depositSteps.report("Approve"));
      }
      await sendTx("Deposit", () => escrow.deposit(amount), depositSteps.report("Deposit"));
      await refresh();
    } catch (e) {
      setStatus(depositStatus, errorText(e), "error");
    }
  }

  async function requestWithdrawal(): Promise<void> {
    try {
      const amount = toWei(withdrawAmount.value);
      const escrow = await contract("escrow", true);
      await sendTx("Withdrawal request", () => escrow.requestWithdrawal(amount), report(withdrawStatus));
      await refresh();
    } catch (e) {
      setStatus(withdrawStatus, errorText(e), "error");
    }
  }

  async function withdraw(): Promise<void> {
    try {
      const escrow = await contract("escrow", true);
      await sendTx("Withdrawal", () => escrow.withdraw(), report(withdrawStatus));
      await refresh();
    } catch (e) {
      setStatus(withdrawStatus, errorText(e), "error");
    }
  }

  async function cancelWithdrawal(): Promise<void> {
    try {
      const escrow = await contract("escrow", true);
      await sendTx("Cancel withdrawal", () => escrow.cancelWithdrawal(), report(withdrawStatus));
      await refresh();
    } catch (e) {
      setStatus(withdrawStatus, errorText(e), "error");
    }
  }

  await refresh();
}
