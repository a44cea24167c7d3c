// The market's JSON API (same origin as the pages).
export interface ModelInfo { id: string; name: string; layers: number; chat: boolean }
export interface Config {
  chain_id: number | null;
  addresses: { token: string; escrow: string; staking: string; reward_pool: string } | null;
  withdraw_delay_s: number | null;
  chat: boolean;
  gateway_signer: string | null;
  models: ModelInfo[];
}

export class ApiError extends Error {
  constructor(public status: number, message: string, public body: unknown) {
    super(message);
  }
}

function describe(status: number, body: unknown): string {
  if (body && typeof body === "object") {
    const o = body as { detail?: unknown; reason?: string; error?: { message?: string } };
    if (o.reason) return o.reason;
    if (o.error?.message) return o.error.message;
    if (typeof o.detail === "string") return o.detail;
    if (o.detail) return JSON.stringify(o.detail);
  }
  return `HTTP ${status}`;
}

export async function api<T>(path: string, init: RequestInit & { token?: string } = {}): Promise<T> {
  const headers = new Headers(init.headers);
  if (init.body && !headers.has("content-type")) headers.set("content-type", "application/json");
  if (init.token) headers.set("authorization", `Bearer ${init.token}`);
  const res = await fetch(path, { ...init, headers });
  const text = await res.text();
  const body = text ? JSON.parse(text) : null;
  if (!res.ok) throw new ApiError(res.status, describe(res.status, body), body);
  return body as T;
}

let config: Promise<Config> | null = null;
export function getConfig(): Promise<Config> {
  config ??= api<Config>("/app/api/config");
  return config;
}
