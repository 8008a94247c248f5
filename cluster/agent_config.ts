/**
 * Agent configuration: every setting with its default, and the merge of flags > env (`DLLM_*`) >
 * config file > defaults that DESIGN.md promises. Parsing errors name the setting and its source.
 */
import { hostname } from "node:os";
import { bytesOf, hostSetting, MAX_DURATION_MS, parseBytes, seedList } from "./setting_values.ts";

import { defaultCacheDir } from "./transfer/mod.ts";
import { parseReplicaCount, type ReplicaCount } from "./placement/mod.ts";
import { isLoopback } from "./rpc/server.ts";

export { hostSetting, parseBytes, seedList };

/** Everything an agent needs to start. */
export interface AgentConfig {
  /** Unique id in the cluster (default: the host name). */
  nodeId: string;
  /** Address every listener binds to; loopback unless TLS or --insecure-bind-all. */
  bind: string;
  /** Address peers use to reach this agent (default: the bind address). */
  advertiseAddress: string;
  rpcPort: number;
  /**
   * Port of the TCP data plane (model chunks and stage-to-stage activations over plain TCP;
   * only without TLS); 0: any free port. Peers that cannot reach it use the RPC port.
   */
  dataPort: number;
  gossipPort: number;
  metricsPort: number;
  httpPort: number;
  /** Gossip seeds: host:port, or DNS names resolving to many agents (k8s headless Service). */
  seeds: string[];
  /** Find peers by UDP multicast on the LAN (opt-in). */
  discover: boolean;
  /** GGUF model this agent serves layers of (a local path). */
  model?: string;
  /** Bytes this agent may use for weights and KV caches. */
  memoryBudget: number;
  backend: string;
  threads?: number;
  /** Positions per session (KV cache size). */
  contextSize: number;
  /** Concurrent sessions per stage. */
  maxSessions: number;
  /** Most tokens in one forward pass (prompt chunks, batched decode rows); sizes the scratch. */
  batchSize: number;
  /**
   * Prompt rows per chunk: a stage hands each chunk to the next while it runs the following
   * one (a long prompt's chunks overlap across stages), and while other sessions are open a
   * pass runs at most this many of a prompt's rows beside their decodes (fewer when the stage's
   * pass times say so). 0: prompts run whole.
   */
  prefillChunk: number;
  /** Concurrent generations this agent heads (default: maxSessions); beyond, requests queue. */
  maxRequests: number;
  /** Requests waiting for a generation slot; beyond, HTTP 429 / RESOURCE_EXHAUSTED. */
  queueSize: number;
  /** Bearer key the HTTP API requires (none: open, like the loopback-bound RPC port). */
  apiKey?: string;
  /** A file holding the API key (kept out of the process list, unlike --api-key). */
  apiKeyFile?: string;
  /** A file holding the gossip keys, comma- or line-separated (unlike --gossip-keys). */
  gossipKeysFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  /** The HTTP API's certificate (PEM chain): with apiTlsKey, the API serves HTTPS. */
  apiTlsCert?: string;
  /** The HTTP API's private key (PEM). */
  apiTlsKey?: string;
  /**
   * The name every peer's certificate carries, where agents share one certificate (k8s); unset:
   * each peer's certificate names its node id (or the address this agent dials).
   */
  tlsPeerName?: string;
  insecureBindAll: boolean;
  /** Base64 AES-256 keys for gossip; the first encrypts, all decrypt. */
  gossipKeys: string[];
  /** Gossip timing preset. */
  gossipPreset: "lan" | "wan" | "local";
  /**
   * The cluster this agent belongs to: carried in every gossip packet, so agents of another
   * name never merge with it, even when given its address as a seed.
   */
  clusterName: string;
  /** Log verbosity. */
  logLevel: "debug" | "info" | "warn" | "error";
  /** Model cache root (cluster/transfer): `<cacheDir>/<sha256>/…`. */
  cacheDir: string;
  /** Bytes/s this agent fetches model chunks at, at most; 0 = unlimited. */
  transferRateLimit: number;
  /** Bytes of prefix KV cache of this agent's stage (any range of layers); 0 = off. */
  prefixCache: number;
  /**
   * This node's speed for placement, GFLOP/s (`--speed`); undefined: measured by the start-up
   * calibration. Identical nodes given one value split a model by its work alone, where agents
   * calibrating at once on a shared host measure each other (27–78 GFLOP/s apart on 2 cores).
   */
  speed?: number;
  /**
   * Disjoint pipelines to form when the budgets hold the model several times: a count, or
   * "auto" (as many as fit, each as short as possible). The cluster runs the fewest any member
   * asks for. Default 1: one pipeline over every agent, as before replicas existed.
   */
  replicas: ReplicaCount;
  /** How long SIGTERM lets generations in flight finish before cutting them off, ms. */
  shutdownGrace: number;
  /**
   * How long `llmctl nodes list --all` and `cluster status` keep listing a member after it died
   * or left, ms (gossip itself forgets it within a minute). 0: only as long as gossip keeps it.
   */
  departedRetention: number;
  /** HTTP API: a connection must send a request's headers within this many ms (slow-loris). */
  httpHeaderTimeout: number;
  /** HTTP API: a request's body must arrive within this many ms (408 otherwise). */
  httpBodyTimeout: number;
  /** HTTP API: most open connections; beyond, new ones get 503 with Retry-After. */
  httpMaxConnections: number;
  /** HTTP API: origins browsers may call it from ("*" for any); none by default. */
  corsOrigin: string[];
}

/** A setting has a bad value; the message names the setting and where it came from. */
export class AgentConfigError extends Error {
  override name = "AgentConfigError";
}

/** Where a raw setting came from, for error messages. */
type Source = "flag" | "env" | "config file" | "default";

/** Raw settings as strings/values from one source, keyed by camelCase setting name. */
export type RawSettings = Partial<Record<keyof AgentConfig, unknown>>;

const ENV: Record<keyof AgentConfig, string> = {
  nodeId: "DLLM_NODE_ID",
  bind: "DLLM_BIND",
  advertiseAddress: "DLLM_ADVERTISE_ADDRESS",
  rpcPort: "DLLM_RPC_PORT",
  dataPort: "DLLM_DATA_PORT",
  gossipPort: "DLLM_GOSSIP_PORT",
  metricsPort: "DLLM_METRICS_PORT",
  httpPort: "DLLM_HTTP_PORT",
  seeds: "DLLM_SEEDS",
  discover: "DLLM_DISCOVER",
  model: "DLLM_MODEL",
  memoryBudget: "DLLM_MEMORY_BUDGET",
  backend: "DLLM_BACKEND",
  threads: "DLLM_THREADS",
  contextSize: "DLLM_CONTEXT_SIZE",
  maxSessions: "DLLM_MAX_SESSIONS",
  prefillChunk: "DLLM_PREFILL_CHUNK",
  batchSize: "DLLM_BATCH_SIZE",
  maxRequests: "DLLM_MAX_REQUESTS",
  queueSize: "DLLM_QUEUE_SIZE",
  apiKey: "DLLM_API_KEY",
  apiKeyFile: "DLLM_API_KEY_FILE",
  gossipKeysFile: "DLLM_GOSSIP_KEYS_FILE",
  tlsCert: "DLLM_TLS_CERT",
  tlsKey: "DLLM_TLS_KEY",
  tlsCa: "DLLM_TLS_CA",
  apiTlsCert: "DLLM_API_TLS_CERT",
  apiTlsKey: "DLLM_API_TLS_KEY",
  tlsPeerName: "DLLM_TLS_PEER_NAME",
  insecureBindAll: "DLLM_INSECURE_BIND_ALL",
  gossipKeys: "DLLM_GOSSIP_KEYS",
  gossipPreset: "DLLM_GOSSIP_PRESET",
  clusterName: "DLLM_CLUSTER_NAME",
  logLevel: "DLLM_LOG_LEVEL",
  cacheDir: "DLLM_CACHE_DIR",
  transferRateLimit: "DLLM_TRANSFER_RATE_LIMIT",
  prefixCache: "DLLM_PREFIX_CACHE",
  speed: "DLLM_SPEED",
  replicas: "DLLM_REPLICAS",
  shutdownGrace: "DLLM_SHUTDOWN_GRACE",
  departedRetention: "DLLM_DEPARTED_RETENTION",
  httpHeaderTimeout: "DLLM_HTTP_HEADER_TIMEOUT",
  httpBodyTimeout: "DLLM_HTTP_BODY_TIMEOUT",
  httpMaxConnections: "DLLM_HTTP_MAX_CONNECTIONS",
  corsOrigin: "DLLM_CORS_ORIGIN",
};

/** Settings whose empty value is refused, not taken as unset. */
const SECRETS = new Set<keyof AgentConfig>(["apiKey", "gossipKeys"]);

/** Read the `DLLM_*` variables that are set. */
export function settingsFromEnv(env: Record<string, string | undefined>): RawSettings {
  const out: RawSettings = {};
  for (const [key, name] of Object.entries(ENV) as [keyof AgentConfig, string][]) {
    const v = env[name];
    // An empty variable is unset, except a secret's: DLLM_API_KEY="$UNSET" must not open the API,
    // nor DLLM_GOSSIP_KEYS="$UNSET" turn encryption off.
    if (v !== undefined && (v !== "" || SECRETS.has(key))) out[key] = v;
  }
  return out;
}

/** Read a JSON config file whose keys are the setting names (camelCase or kebab-case). */
export async function settingsFromFile(path: string): Promise<RawSettings> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new AgentConfigError(`cannot read config file ${path}: ${(e as Error).message}`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new AgentConfigError(`config file ${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    throw new AgentConfigError(`config file ${path} must hold a JSON object`);
  }
  const out: RawSettings = {};
  for (const [k, v] of Object.entries(obj)) {
    const key = k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()) as keyof AgentConfig;
    // (own keys only: "toString" or "__proto__" is no setting either)
    if (!Object.hasOwn(ENV, key)) {
      throw new AgentConfigError(`config file ${path}: unknown setting "${k}"`);
    }
    if (out[key] !== undefined) {
      throw new AgentConfigError(`config file ${path}: "${k}" sets ${key} a second time`);
    }
    out[key] = v;
  }
  return out;
}

/** Merge sources (first wins) over the defaults and validate every value. */
export function resolveConfig(sources: [Source, RawSettings][]): AgentConfig {
  const pick = (key: keyof AgentConfig): [unknown, Source] => {
    for (const [src, s] of sources) if (s[key] !== undefined) return [s[key], src];
    return [undefined, "default"];
  };
  const fail = (key: keyof AgentConfig, src: Source, why: string): never => {
    const where = src === "env"
      ? `${ENV[key]}`
      : src === "flag"
      ? `--${kebab(key)}`
      : `${key} (${src})`;
    throw new AgentConfigError(`${where}: ${why}`);
  };
  const str = (key: keyof AgentConfig, dflt?: string): string | undefined => {
    const [v, src] = pick(key);
    if (v === undefined) return dflt;
    if (typeof v !== "string") {
      // A secret's value is never echoed, not even a malformed one.
      const got = key === "apiKey" ? "" : `, got ${JSON.stringify(v)}`;
      fail(key, src, `expected text${got}`);
    }
    return v as string;
  };
  const int = (key: keyof AgentConfig, dflt: number | undefined, min: number, max: number) => {
    const [v, src] = pick(key);
    if (v === undefined) return dflt;
    // Number("") is 0: an empty --rpc-port must not mean "any free port"; nor may "0x7d0" or
    // "1e1" (Number's other spellings) pass for a port or a count.
    const n = typeof v === "number" ? v : /^\s*\d+\s*$/.test(String(v)) ? Number(v) : NaN;
    if (!Number.isInteger(n) || n < min || n > max) {
      fail(key, src, `expected an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
    }
    return n;
  };
  const bool = (key: keyof AgentConfig): boolean => {
    const [v, src] = pick(key);
    if (v === undefined) return false;
    if (typeof v === "boolean") return v;
    if (typeof v === "string" && /^(1|true|yes|on)$/i.test(v)) return true;
    if (typeof v === "string" && /^(0|false|no|off)$/i.test(v)) return false;
    return fail(key, src, `expected true or false, got ${JSON.stringify(v)}`);
  };
  const list = (key: keyof AgentConfig): string[] => {
    const [v, src] = pick(key);
    if (v === undefined) return [];
    // Entries trimmed and empty ones dropped, from a config file's array as from a flag's text.
    if (Array.isArray(v) && v.every((x) => typeof x === "string")) {
      return (v as string[]).map((s) => s.trim()).filter(Boolean);
    }
    if (typeof v === "string") return v.split(",").map((s) => s.trim()).filter(Boolean);
    // Keys are never echoed, not even a malformed list of them.
    const got = key === "gossipKeys" ? "" : `, got ${JSON.stringify(v)}`;
    return fail(key, src, `expected a comma-separated list${got}`);
  };
  const oneOf = <T extends string>(key: keyof AgentConfig, dflt: T, choices: readonly T[]): T => {
    const v = str(key, dflt) as T;
    if (!choices.includes(v)) {
      fail(key, pick(key)[1], `expected one of ${choices.join(", ")}, got "${v}"`);
    }
    return v;
  };

  // An IP address or a host name ("" was refused as "refusing to gossip in plaintext on :",
  // which named no cause).
  const bind = hostSetting(
    str("bind", "127.0.0.1")!,
    "an address to listen on",
    (why) => fail("bind", pick("bind")[1], why),
  )!;
  const [budgetRaw, budgetSrc] = pick("memoryBudget");
  let memoryBudget: number;
  if (budgetRaw === undefined) {
    // Default: 80% of the memory available now, leaving room for the runtime and the OS.
    memoryBudget = Math.floor(Deno.systemMemoryInfo().available * 0.8);
  } else {
    try {
      memoryBudget = bytesOf(budgetRaw);
    } catch (e) {
      memoryBudget = fail("memoryBudget", budgetSrc, (e as Error).message);
    }
    if (!(memoryBudget > 0)) fail("memoryBudget", budgetSrc, "must be more than 0 bytes");
  }
  const maxSessions = int("maxSessions", 64, 1, 100000)!;
  const cfg: AgentConfig = {
    nodeId: str("nodeId", hostname())!,
    bind,
    advertiseAddress: hostSetting(
      str("advertiseAddress"),
      "a host peers can reach",
      (why) => fail("advertiseAddress", pick("advertiseAddress")[1], why),
    ) ??
      (bind === "0.0.0.0" || bind === "::" ? interfaceAddress(bind) : bind),
    rpcPort: int("rpcPort", 7950, 0, 65535)!,
    dataPort: int("dataPort", 0, 0, 65535)!,
    gossipPort: int("gossipPort", 7946, 0, 65535)!,
    metricsPort: int("metricsPort", 9090, 0, 65535)!,
    httpPort: int("httpPort", 8080, 0, 65535)!,
    seeds: seedList(list("seeds"), (why) => fail("seeds", pick("seeds")[1], why)),
    discover: bool("discover"),
    model: str("model"),
    memoryBudget,
    backend: oneOf("backend", "auto", ["auto", "wasm", "webgpu", "reference"] as const),
    threads: int("threads", undefined, 1, 1024),
    contextSize: int("contextSize", 2048, 16, 1 << 20)!,
    maxSessions,
    prefillChunk: int("prefillChunk", 64, 0, 1 << 20)!,
    // 128 rows keep CPU prefill at full speed (each pass is compute-bound well before that) while
    // the activation scratch stays small: 512 cost 66 MB on a 1.1B model, against 17 MB.
    batchSize: int("batchSize", 128, 1, 8192)!,
    // A head never runs more generations than a stage of the same configuration holds sessions.
    maxRequests: int("maxRequests", maxSessions, 1, 100000)!,
    queueSize: int("queueSize", 256, 0, 1000000)!,
    apiKey: str("apiKey"),
    tlsCert: str("tlsCert"),
    tlsKey: str("tlsKey"),
    tlsCa: str("tlsCa"),
    apiTlsCert: str("apiTlsCert"),
    apiTlsKey: str("apiTlsKey"),
    tlsPeerName: str("tlsPeerName"),
    insecureBindAll: bool("insecureBindAll"),
    gossipKeys: list("gossipKeys"),
    gossipPreset: oneOf("gossipPreset", "lan", ["lan", "wan", "local"] as const),
    clusterName: str("clusterName", "default")!,
    logLevel: oneOf("logLevel", "info", ["debug", "info", "warn", "error"] as const),
    cacheDir: str("cacheDir", defaultCacheDir())!,
    transferRateLimit: 0,
    prefixCache: 0,
    replicas: 1,
    shutdownGrace: 10_000,
    departedRetention: 600_000,
    httpHeaderTimeout: 10_000,
    httpBodyTimeout: 30_000,
    // Far above what a head serves at once (--max-requests + --queue-size), far below what
    // exhausts file descriptors.
    httpMaxConnections: int("httpMaxConnections", 1024, 1, 1000000)!,
    corsOrigin: list("corsOrigin"),
  };
  // Secrets from files: the process list shows every flag to every local user.
  const secretFile = (key: "apiKeyFile" | "gossipKeysFile", of: "apiKey" | "gossipKeys") => {
    const path = str(key);
    if (path === undefined) return undefined;
    if (pick(of)[0] !== undefined) {
      fail(key, pick(key)[1], `give --${kebab(of)} or --${kebab(key)}, not both`);
    }
    try {
      return Deno.readTextFileSync(path).trim();
    } catch (e) {
      return fail(key, pick(key)[1], `cannot read ${path}: ${(e as Error).message}`);
    }
  };
  const keyFromFile = secretFile("apiKeyFile", "apiKey");
  if (keyFromFile !== undefined) cfg.apiKey = keyFromFile;
  const keysFromFile = secretFile("gossipKeysFile", "gossipKeys");
  if (keysFromFile !== undefined) {
    cfg.gossipKeys = keysFromFile.split(/[,\s]+/).filter(Boolean);
  }
  // As an empty API key: a key file (or --gossip-keys "$UNSET") that holds no key is a mistake,
  // not "gossip in plaintext" (before, it meant that silently on loopback, and off loopback the
  // refusal said to set --gossip-keys, which had been set).
  if (cfg.gossipKeys.length === 0) {
    const key = keysFromFile === undefined ? "gossipKeys" : "gossipKeysFile";
    const [raw, src] = pick(key);
    if (raw !== undefined) {
      fail(
        key,
        src,
        `${key === "gossipKeysFile" ? `${raw} ` : ""}is empty: it holds no gossip key, and ` +
          `none would mean gossip in plaintext; give the base64 keys (comma- or ` +
          `line-separated), or leave it out to gossip in plaintext on loopback`,
      );
    }
  }
  if (cfg.apiKey === "") {
    const key = keyFromFile === undefined ? "apiKey" : "apiKeyFile";
    fail(
      key,
      pick(key)[1],
      "is empty; an empty key would open the API to everyone (leave it out to run without one)",
    );
  }
  const [speedRaw, speedSrc] = pick("speed");
  if (speedRaw !== undefined) {
    const n = typeof speedRaw === "number" ? speedRaw : Number(String(speedRaw).trim() || NaN);
    if (!(Number.isFinite(n) && n > 0 && n <= 1e9)) {
      fail("speed", speedSrc, `expected GFLOP/s above 0, got ${JSON.stringify(speedRaw)}`);
    }
    cfg.speed = n;
  }
  // Durations: seconds by default ("10", "2.5s"), or with "ms", "m" or "h".
  const duration = (key: keyof AgentConfig, dflt: number, min = 1): number => {
    const [raw, src] = pick(key);
    if (raw === undefined) return dflt;
    const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(String(raw).trim());
    if (!m) return fail(key, src, `expected a duration like 10s, 500ms or 10m, got "${raw}"`);
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "s"]!;
    const ms = Math.round(Number(m[1]) * unit);
    // A timer takes at most 2^31 − 1 ms: 600h was run as 1 ms (every connection cut at once);
    // and 0 meant "off" for one timeout and "at once" for another.
    if (ms < min || ms > MAX_DURATION_MS) {
      return fail(key, src, `expected a duration from ${min}ms to 596h (24 days), got "${raw}"`);
    }
    return ms;
  };
  // 0: no grace, and dead members forgotten at once (the HTTP timeouts take no 0: it meant
  // "off" for one of them and "at once" for the other)
  cfg.shutdownGrace = duration("shutdownGrace", 10_000, 0);
  cfg.departedRetention = duration("departedRetention", 600_000, 0);
  cfg.httpHeaderTimeout = duration("httpHeaderTimeout", 10_000);
  cfg.httpBodyTimeout = duration("httpBodyTimeout", 30_000);

  const [rateRaw, rateSrc] = pick("transferRateLimit");
  if (rateRaw !== undefined) {
    try {
      cfg.transferRateLimit = typeof rateRaw === "number"
        ? bytesOf(rateRaw)
        : parseBytes(String(rateRaw).replace(/\/s$/i, ""));
    } catch (e) {
      fail("transferRateLimit", rateSrc, `${(e as Error).message} (bytes per second, e.g. 50MB)`);
    }
  }
  const [prefixRaw, prefixSrc] = pick("prefixCache");
  if (prefixRaw !== undefined) {
    try {
      cfg.prefixCache = bytesOf(prefixRaw);
    } catch (e) {
      fail("prefixCache", prefixSrc, `${(e as Error).message} (bytes, e.g. 512MiB; 0 = off)`);
    }
    if (!(cfg.prefixCache >= 0) || cfg.prefixCache > cfg.memoryBudget) {
      fail("prefixCache", prefixSrc, "must be between 0 and the memory budget");
    }
  }
  const [replicasRaw, replicasSrc] = pick("replicas");
  if (replicasRaw !== undefined) {
    try {
      cfg.replicas = parseReplicaCount(String(replicasRaw));
    } catch (e) {
      fail("replicas", replicasSrc, (e as Error).message);
    }
    if (cfg.replicas !== "auto" && cfg.replicas > 0xffff) {
      fail("replicas", replicasSrc, "must be at most 65535");
    }
  }
  if (!/^[A-Za-z0-9._-]{1,63}$/.test(cfg.nodeId)) {
    fail(
      "nodeId",
      pick("nodeId")[1],
      `"${cfg.nodeId}" must be 1–63 letters, digits, '.', '_' or '-'`,
    );
  }
  // The name travels in every gossip packet's header (one length byte) and in logs: kept to the
  // characters of a node id, so it never needs quoting or escaping.
  if (!/^[A-Za-z0-9._-]{1,63}$/.test(cfg.clusterName)) {
    fail(
      "clusterName",
      pick("clusterName")[1],
      `"${cfg.clusterName}" must be 1–63 letters, digits, '.', '_' or '-'`,
    );
  }
  const tls = [cfg.tlsCert, cfg.tlsKey, cfg.tlsCa].filter(Boolean).length;
  if (tls !== 0 && tls !== 3) {
    throw new AgentConfigError("TLS needs all three of --tls-cert, --tls-key and --tls-ca");
  }
  if (!cfg.apiTlsCert !== !cfg.apiTlsKey) {
    throw new AgentConfigError(
      "HTTPS for the API needs both --api-tls-cert and --api-tls-key (a certificate and its key)",
    );
  }
  for (const [i, k] of cfg.gossipKeys.entries()) {
    let bytes: Uint8Array;
    try {
      bytes = Uint8Array.from(atob(k), (c) => c.charCodeAt(0));
    } catch {
      throw new AgentConfigError(`gossip key ${i + 1} is not base64`);
    }
    if (bytes.length !== 32) {
      throw new AgentConfigError(
        `gossip key ${i + 1} is ${bytes.length} bytes; AES-256 needs 32 (base64 of 32 bytes)`,
      );
    }
  }
  // Gossip carries the cluster's view (who serves what, where): on a reachable address without a
  // key, any host that can send a datagram could rewrite it (as RPC refuses plaintext there).
  if (cfg.gossipKeys.length === 0 && !cfg.insecureBindAll && !isLoopback(cfg.bind)) {
    throw new AgentConfigError(
      `refusing to gossip in plaintext on ${cfg.bind}: every machine that can reach it could ` +
        `rewrite the cluster's view. Set --gossip-keys (a base64 32-byte key, e.g. from ` +
        `\`openssl rand -base64 32\`, the same on every agent), or pass --insecure-bind-all if ` +
        `this network is trusted, or bind to 127.0.0.1.`,
    );
  }
  return cfg;
}

function kebab(s: string): string {
  return s.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase());
}

/**
 * The address peers reach an agent bound to every interface at: the first address of a
 * non-loopback interface (IPv4 first; IPv6 too for "::"). Before, such an agent advertised
 * 127.0.0.1, and peers on other hosts dialled themselves. Throws when there is none.
 */
export function interfaceAddress(
  bind: "0.0.0.0" | "::",
  interfaces: readonly Deno.NetworkInterfaceInfo[] = Deno.networkInterfaces(),
): string {
  const usable = interfaces.filter((i) =>
    !/^127\./.test(i.address) && i.address !== "::1" && !/^fe80:/i.test(i.address) &&
    !/^169\.254\./.test(i.address)
  );
  const pick = usable.find((i) => i.family === "IPv4") ??
    (bind === "::" ? usable.find((i) => i.family === "IPv6") : undefined);
  if (!pick) {
    throw new AgentConfigError(
      `--bind ${bind} listens on every interface, but none has an address peers could reach; ` +
        `give --advertise-address`,
    );
  }
  return pick.address;
}
