/**
 * `deno task agent` — start one agent: parse flags, env (DLLM_*) and an optional JSON config
 * file (flags > env > file > defaults), build an Agent, run it until SIGINT/SIGTERM.
 */
import { Command } from "@commander-js/extra-typings";
import { Agent, type AgentLogger } from "../cluster/agent.ts";
import {
  AgentConfigError,
  parseBytes,
  type RawSettings,
  resolveConfig,
  settingsFromEnv,
  settingsFromFile,
} from "../cluster/agent_config.ts";
import { boundMessage } from "../cluster/rpc/mod.ts";
import { joinHostPort } from "../cluster/gossip/mod.ts";
import { TlsConfigError } from "../cluster/tls/mod.ts";
import { DEFAULT_MODEL } from "./common.ts";
import { HubError, isHubReference, type PullEvent, pullModel } from "../cluster/hub/mod.ts";
import { VERSION } from "./version.ts";

/** Build the agent command line. */
export function agentProgram() {
  return new Command("agent")
    .description("run a distributed-llm agent: joins the cluster, hosts layers, answers requests")
    .version(VERSION, "-V, --version")
    .option("--config <file>", "JSON config file (keys are the flag names)")
    .option("--node-id <id>", "unique node id (default: host name)")
    .option("--bind <addr>", "address to listen on (default 127.0.0.1)")
    .option(
      "--advertise-address <addr>",
      "address peers reach this agent at (default: --bind; for 0.0.0.0 or ::, the first non-loopback interface's)",
    )
    .option("--rpc-port <port>", "gRPC/Connect port (default 7950)")
    .option(
      "--data-port <port>",
      "model chunks and activations over plain TCP, without TLS only (default 0: any free port)",
    )
    .option("--gossip-port <port>", "gossip UDP+TCP port (default 7946)")
    .option("--metrics-port <port>", "Prometheus metrics port (default 9090)")
    .option("--http-port <port>", "OpenAI-compatible HTTP port (default 8080)")
    .option("--seeds <list>", "comma-separated host:port of agents to join (or a DNS name)")
    .option(
      "--discover",
      "find agents of this cluster by UDP multicast on the LAN (239.255.79.46:7947) and join them",
    )
    .option(
      "--model <path>",
      `GGUF model to serve: a path, or hf:owner/repo:QUANT / hf:owner/repo/file.gguf pulled from ` +
        `the Hugging Face Hub into --cache-dir first (default: ${DEFAULT_MODEL})`,
    )
    .option("--no-model", "serve no model (gossip and routing only)")
    .option(
      "--memory-budget <size>",
      "bytes for weights and KV cache, e.g. 4GiB (default: DLLM_MEMORY_LIMIT x " +
        "DLLM_MEMORY_LIMIT_FRACTION when set, else 80% of free)",
    )
    .option("--backend <name>", "auto, wasm, webgpu or reference (default auto)")
    .option("--threads <n>", "CPU threads (default: all cores)")
    .option("--context-size <n>", "positions per session (default 2048)")
    .option(
      "--max-sessions <n>",
      "most concurrent sessions per stage, fewer while their KV caches fill the budget (default 64)",
    )
    .option("--batch-size <n>", "most tokens per forward pass (default 128)")
    .option(
      "--prefill-chunk <rows>",
      "prompt rows per chunk down a chain and per pass beside other decodes; 0: whole (default 64)",
    )
    .option("--max-requests <n>", "concurrent generations this head runs (default: --max-sessions)")
    .option("--queue-size <n>", "requests waiting for a slot before HTTP 429 (default 256)")
    .option(
      "--api-key <key>",
      "bearer key the HTTP API requires (default: none; visible in the process list, see --api-key-file)",
    )
    .option("--api-key-file <file>", "read the API key from a file (or DLLM_API_KEY)")
    .option("--tls-cert <file>", "this node's certificate (turns on mTLS with --tls-key/--tls-ca)")
    .option("--tls-key <file>", "this node's private key")
    .option("--tls-ca <file>", "CA that signs every node and client")
    .option(
      "--tls-peer-name <name>",
      "the name every peer's certificate carries, when agents share one (default: its node id)",
    )
    .option(
      "--api-tls-cert <file>",
      "certificate (PEM chain) for the HTTP API: it serves HTTPS (with --api-tls-key)",
    )
    .option("--api-tls-key <file>", "the HTTP API certificate's private key")
    .option("--insecure-bind-all", "allow a non-loopback bind without TLS")
    .option("--gossip-keys <list>", "base64 AES-256 keys; the first encrypts, all decrypt")
    .option(
      "--gossip-keys-file <file>",
      "read the gossip keys from a file, comma- or line-separated (or DLLM_GOSSIP_KEYS)",
    )
    .option("--gossip-preset <name>", "lan, wan or local timings (default lan)")
    .option(
      "--cluster-name <name>",
      'cluster name: agents join only agents of the same name (default "default")',
    )
    .option("--log-level <level>", "debug, info, warn or error (default info)")
    .option(
      "--cache-dir <dir>",
      "model cache for deployed models (default ~/.cache/distributed-llm)",
    )
    .option(
      "--transfer-rate-limit <rate>",
      "most bytes/s this agent fetches model chunks at, e.g. 50MB (default unlimited)",
    )
    .option(
      "--prefix-cache <bytes>",
      "KV of this agent's layers for recently served prompt prefixes, kept for reuse, e.g. " +
        "512MiB (default 0: off; every stage of a chain needs it for a chain to reuse a prefix)",
    )
    .option(
      "--speed <gflops>",
      "this node's speed for placement instead of the start-up calibration, e.g. 80; give " +
        "identical nodes one value (default: measured)",
    )
    .option(
      "--replicas <n>",
      'disjoint pipelines when the budgets hold the model several times: a count or "auto" ' +
        "(as many as fit); the cluster runs the fewest any agent asks for (default 1)",
    )
    .option(
      "--shutdown-grace <duration>",
      "on SIGTERM, how long generations in flight may finish, e.g. 10s or 500ms (default 10s)",
    )
    .option(
      "--departed-retention <duration>",
      "how long `llmctl nodes list --all` and `cluster status` keep listing a member after it " +
        "died or left, e.g. 10m or 1h (default 10m; 0: as long as gossip keeps it)",
    )
    .option(
      "--http-header-timeout <duration>",
      "HTTP API: time a connection has to send a request's headers (default 10s)",
    )
    .option("--http-body-timeout <duration>", "HTTP API: time to receive a body (default 30s)")
    .option("--http-max-connections <n>", "HTTP API: most open connections (default 1024)")
    .option(
      "--cors-origin <list>",
      'HTTP API: comma-separated origins browsers may call it from, or "*" (default none)',
    );
}

/** Share of the container's memory limit the budget takes by default: the rest is the runtime. */
export const DEFAULT_MEMORY_LIMIT_FRACTION = 0.75;

/**
 * The default memory budget from the container's memory limit: `DLLM_MEMORY_LIMIT` (bytes, set
 * by Kubernetes' downward API from `limits.memory`) × `DLLM_MEMORY_LIMIT_FRACTION` (default
 * 0.75). Undefined without a limit. A budget derived from the limit follows it when the VPA
 * resizes the pod, so the two cannot contradict (a fixed budget above the limit is an OOM kill).
 */
export function budgetFromMemoryLimit(env: Record<string, string>): number | undefined {
  const raw = env.DLLM_MEMORY_LIMIT;
  if (raw === undefined || raw.trim() === "") return undefined;
  let limit: number;
  try {
    limit = parseBytes(raw);
  } catch (e) {
    throw new AgentConfigError(`DLLM_MEMORY_LIMIT: ${(e as Error).message}`);
  }
  const fraction = Number(env.DLLM_MEMORY_LIMIT_FRACTION ?? DEFAULT_MEMORY_LIMIT_FRACTION);
  if (!(fraction > 0 && fraction <= 1)) {
    throw new AgentConfigError(
      `DLLM_MEMORY_LIMIT_FRACTION must be more than 0 and at most 1, got ` +
        `${env.DLLM_MEMORY_LIMIT_FRACTION}`,
    );
  }
  const budget = Math.floor(limit * fraction);
  if (!(budget > 0)) throw new AgentConfigError(`DLLM_MEMORY_LIMIT ${raw} leaves no memory budget`);
  return budget;
}

/** JSON-lines logger on stderr; never prints secrets (keys are not logged anywhere). */
function logger(level: string): AgentLogger {
  const order = ["debug", "info", "warn", "error"];
  const min = order.indexOf(level);
  return (lvl, msg, fields) => {
    if (order.indexOf(lvl) < min) return;
    // Every string is bounded: a field may quote a file or a request (a 1 MB metadata key).
    const bounded = Object.fromEntries(
      Object.entries(fields ?? {}).map((
        [k, v],
      ) => [k, typeof v === "string" ? boundMessage(v) : v]),
    );
    console.error(
      JSON.stringify({
        t: new Date().toISOString(),
        level: lvl,
        msg: boundMessage(msg),
        ...bounded,
      }),
    );
  };
}

/**
 * Pull the `hf:` model an agent was given into its cache (cluster/hub), logging what it does:
 * the file and commit chosen, bytes every 5 s, retries, and a fallback to the cache when the
 * Hub is unreachable. Returns the local path.
 */
async function pullForAgent(ref: string, cacheDir: string, log: AgentLogger): Promise<string> {
  let lastAt = 0;
  const onEvent = (e: PullEvent) => {
    if (e.event === "resolved") {
      log("info", e.cached ? "model found in the cache" : "pulling the model from the Hub", {
        ref: e.ref,
        file: e.file,
        commit: e.commit,
        bytes: e.size,
      });
    } else if (e.event === "progress") {
      const now = Date.now();
      if (now - lastAt < 5000 && e.bytes_done < e.bytes_total) return;
      lastAt = now;
      log("info", "model download", {
        file: e.file,
        bytesDone: e.bytes_done,
        bytesTotal: e.bytes_total,
      });
    } else if (e.event === "retry") {
      log("warn", "model download retry", {
        file: e.file,
        attempt: e.attempt,
        delayMs: e.delay_ms,
        error: e.error,
      });
    } else {log("warn", "the Hub is not used; serving the cached model", {
        ref: e.ref,
        reason: e.reason,
      });}
  };
  return (await pullModel(ref, { cacheDir, env: Deno.env.toObject(), onEvent })).path;
}

/** Parse, start, and wait for a signal. */
export async function main(args: string[]): Promise<number> {
  const program = agentProgram().exitOverride();
  let opts;
  try {
    opts = program.parse(args, { from: "user" }).opts();
  } catch (e) {
    return (e as { exitCode?: number }).exitCode === 0 ? 0 : 2;
  }
  const flags: RawSettings = {};
  for (const [k, v] of Object.entries(opts)) {
    if (k === "config" || v === undefined) continue;
    if (k === "model") {
      if (v !== false) flags.model = v;
      continue;
    }
    (flags as Record<string, unknown>)[k] = v;
  }
  // A rejection nobody handled is a bug, but one peer's bad certificate must not end the agent
  // serving everyone else: log it (tests fail on this line) and keep running.
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    const reason = e.reason as Error;
    logger("debug")("error", "unhandled promise rejection", {
      error: String(reason?.message ?? reason).slice(0, 1024),
      stack: String(reason?.stack ?? "").slice(0, 2048),
    });
  });
  let agent: Agent;
  try {
    // (an empty --config "" is a missing file, not no file: an unset variable in a script)
    const file = opts.config !== undefined ? await settingsFromFile(opts.config) : {};
    const envVars = Deno.env.toObject();
    const env = settingsFromEnv(envVars);
    // The limit-derived default only where no budget was given: a malformed
    // DLLM_MEMORY_LIMIT_FRACTION must not stop an agent told --memory-budget.
    const given = [flags, env, file].some((s) => s.memoryBudget !== undefined);
    const budget = given ? undefined : budgetFromMemoryLimit(envVars);
    const cfg = resolveConfig([["flag", flags], ["env", env], ["config file", file], [
      "default",
      {
        ...(opts.model === false ? {} : { model: DEFAULT_MODEL }),
        ...(budget === undefined ? {} : { memoryBudget: budget }),
      },
    ]]);
    if (opts.model === false) delete cfg.model;
    const modelRef = cfg.model && isHubReference(cfg.model) ? cfg.model : undefined;
    if (modelRef) cfg.model = await pullForAgent(modelRef, cfg.cacheDir, logger(cfg.logLevel));
    // The agent filters by its own level, which ClusterService can change at run time.
    agent = await Agent.start(cfg, logger("debug"));
    // Always printed, whatever the log level: tools (demo, tests) wait for this line to learn
    // the ports the agent bound.
    logger("info")("info", "agent started", {
      node: cfg.nodeId,
      rpc: joinHostPort(cfg.bind, agent.rpcPort),
      gossip: agent.gossipAddr,
      metrics: joinHostPort(cfg.bind, agent.metricsPort),
      http: joinHostPort(cfg.bind, agent.httpPort),
      model: cfg.model ?? null,
      ...(modelRef ? { model_ref: modelRef } : {}),
      tls: Boolean(cfg.tlsCert),
      api_tls: Boolean(cfg.apiTlsCert),
    });
  } catch (e) {
    // Wrong settings (and TLS files that cannot serve, a malformed hf: reference) are usage
    // errors: exit 2.
    if (
      e instanceof AgentConfigError || e instanceof TlsConfigError ||
      (e instanceof HubError && e.kind === "usage")
    ) {
      console.error(`agent: ${boundMessage(e.message)}`);
      return 2;
    }
    console.error(`agent: ${boundMessage((e as Error).message ?? String(e))}`);
    if (Deno.env.get("DLLM_DEBUG")) console.error((e as Error).stack);
    return 1;
  }
  const stopped = new Promise<number>((resolve) => {
    const stop = () => {
      agent.stop().finally(() => resolve(0));
    };
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
    // The agent cannot go on (its node id stayed another live member's): stop, say why, exit 1.
    agent.fatal.then((e) => {
      agent.stop().finally(() => {
        console.error(`agent: ${boundMessage(e.message)}`);
        resolve(1);
      });
    });
  });
  return await stopped;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
