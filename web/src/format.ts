import { formatUnits, parseUnits } from "ethers";

export const DECIMALS = 18;

/** Token wei as INFER with up to `digits` decimals. */
export function infer(wei: bigint | string | number, digits = 6): string {
  const text = formatUnits(BigInt(wei), DECIMALS);
  const [whole, frac = ""] = text.split(".");
  const cut = frac.slice(0, digits).replace(/0+$/, "");
  return `${whole}${cut ? "." + cut : ""} INFER`;
}

export function toWei(amount: string): bigint {
  return parseUnits(amount.trim() || "0", DECIMALS);
}

export function short(id: string, keep = 6): string {
  return id.length <= keep * 2 + 3 ? id : `${id.slice(0, keep)}…${id.slice(-keep)}`;
}

export function when(unixSeconds: number): string {
  return new Date(unixSeconds * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}
