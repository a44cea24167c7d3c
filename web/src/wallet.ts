// The browser wallet (EIP-1193 `window.ethereum`): connection, chain check, contracts, typed-data signing.
import { BrowserProvider, Contract, type Eip1193Provider, type JsonRpcSigner } from "ethers";
import { getConfig } from "./api";

declare global {
  interface Window {
    ethereum?: Eip1193Provider & {
      on?: (event: string, handler: (...args: unknown[]) => void) => void;
    };
  }
}

export const ABI = {
  token: [
    "function balanceOf(address) view returns (uint256)",
    "function allowance(address owner, address spender) view returns (uint256)",
    "function approve(address spender, uint256 amount) returns (bool)",
  ],
  escrow: [
    "function balanceOf(address) view returns (uint256)",
    "function withdrawals(address) view returns (uint256 amount, uint64 availableAt)",
    "function deposit(uint256 amount)",
    "function requestWithdrawal(uint256 amount)",
    "function cancelWithdrawal()",
    "function withdraw() returns (uint256)",
    "function earnings(address) view returns (uint256)",
    "function isAuthorizedSigner(address buyer, address signer) view returns (bool)",
    "function setSignerAuthorization(address signer, bool authorized)",
    "function claimEarnings() returns (uint256)",
    "function settleBatch((bytes32 sessionId,address buyer,address node,bytes32 modelId,uint32 spanStart,uint32 spanEnd,uint64 tokensIn,uint64 tokensOut,uint256 pricePer1k,bytes32 activationCommitment,uint64 expiry)[] receipts, bytes[] nodeSigs, bytes[] buyerSigs)",
  ],
  rewards: ["function claim(uint256[] epochs) returns (uint256)"],
};

export interface WalletState {
  account: string | null;
  chainId: number | null;
  expectedChainId: number | null;
}

export const wallet: WalletState = { account: null, chainId: null, expectedChainId: null };
const listeners = new Set<() => void>();

export function onWalletChange(fn: () => void): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function changed(): void {
  for (const fn of listeners) fn();
}

export function hasWallet(): boolean {
  return typeof window.ethereum !== "undefined";
}

function ethereum(): NonNullable<Window["ethereum"]> {
  if (!window.ethereum) throw new Error("No browser wallet found: install one (e.g. MetaMask) and reload.");
  return window.ethereum;
}

export async function connect(): Promise<void> {
  const eth = ethereum();
  const accounts = (await eth.request({ method: "eth_requestAccounts" })) as string[];
  wallet.account = accounts[0] ?? null;
  wallet.chainId = Number(await eth.request({ method: "eth_chainId" }));
  wallet.expectedChainId = (await getConfig()).chain_id;
  changed();
}

export function watchWallet(): void {
  const eth = window.ethereum;
  eth?.on?.("accountsChanged", (accounts) => {
    wallet.account = (accounts as string[])[0] ?? null;
    changed();
  });
  eth?.on?.("chainChanged", (id) => {
    wallet.chainId = Number(id);
    changed();
  });
}

export function wrongChain(): boolean {
  return wallet.chainId !== null && wallet.expectedChainId !== null && wallet.chainId !== wallet.expectedChainId;
}

export async function switchChain(): Promise<void> {
  const id = wallet.expectedChainId;
  if (id === null) return;
  await ethereum().request({ method: "wallet_switchEthereumChain", params: [{ chainId: "0x" + id.toString(16) }] });
  wallet.chainId = Number(await ethereum().request({ method: "eth_chainId" }));
  changed();
}

export function requireAccount(): string {
  if (!wallet.account) throw new Error("Connect your wallet first.");
  if (wrongChain()) throw new Error(`Your wallet is on chain ${wallet.chainId}; switch to ${wallet.expectedChainId}.`);
  return wallet.account;
}

const POLL_MS = 1000; // how often ethers asks the wallet for a pending transaction's receipt

function provider(): BrowserProvider {
  const p = new BrowserProvider(ethereum());
  p.pollingInterval = POLL_MS;
  return p;
}

export async function signer(): Promise<JsonRpcSigner> {
  requireAccount();
  return provider().getSigner(wallet.account!);
}

/** The chain's clock (the latest block's timestamp), which decides when delayed withdrawals open. */
export async function chainTime(): Promise<number> {
  const block = await provider().getBlock("latest");
  return block ? block.timestamp : Math.floor(Date.now() / 1000);
}

export type ContractName = "token" | "escrow" | "rewards";

export async function contract(name: ContractName, write = false): Promise<Contract> {
  const cfg = await getConfig();
  if (!cfg.addresses) throw new Error("This market runs without a chain (free swarm).");
  const address = { token: cfg.addresses.token, escrow: cfg.addresses.escrow, rewards: cfg.addresses.reward_pool }[name];
  const runner = write ? await signer() : provider();
  return new Contract(address, ABI[name], runner);
}

/** EIP-712 signature by the connected account (eth_signTypedData_v4). */
export async function signTypedData(typedData: unknown): Promise<string> {
  const account = requireAccount();
  return (await ethereum().request({
    method: "eth_signTypedData_v4",
    params: [account, JSON.stringify(typedData)],
  })) as string;
}

/** EIP-191 signature of a text by the connected account (personal_sign). */
export async function personalSign(text: string): Promise<string> {
  const account = requireAccount();
  const hex = "0x" + Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("");
  return (await ethereum().request({ method: "personal_sign", params: [hex, account] })) as string;
}

/** Send a transaction and report it pending (with its hash), then confirmed. */
export async function sendTx(
  label: string,
  send: () => Promise<{ hash: string; wait: () => Promise<unknown> }>,
  report: (text: string, kind?: "info" | "ok" | "error") => void,
): Promise<string> {
  // Each state is reported as it is reached: asked in the wallet, pending with its hash, confirmed.
  report(`${label}: confirm in your wallet…`);
  const tx = await send();
  report(`${label}: pending (tx ${tx.hash})`);
  await tx.wait();
  report(`${label}: confirmed (tx ${tx.hash})`, "ok");
  return tx.hash;
}
