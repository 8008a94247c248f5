/**
 * Pipeline benchmark: decode speed through 1 agent vs 3 agents on loopback, and the latency
 * each hop adds (round trip head → stage → head minus the stage's own compute time).
 *
 * ```sh
 * deno task bench pipeline                        # the generated 110M Q8_0 model
 * deno task bench pipeline --model models/stories260K.gguf --tokens 64 --backend reference
 * ```
 *
 * The bench process is the head: it starts real agent processes, reads the placement they
 * agreed on over gossip, and drives their stages over gRPC exactly as a head agent does
 * (cluster/pipeline Head + RemoteStageLink), timing every hop. Prints one JSON object.
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import {
  Head,
  RemoteStageLink,
  type SessionLink,
  type StageLink,
} from "../cluster/pipeline/mod.ts";
import { createRpcTransport, type RpcTransport } from "../cluster/rpc/mod.ts";
import {
  splitModelArgs,
  startLocalCluster,
  stopLocalAgents,
  waitForPlacement,
} from "../cli/local_cluster.ts";
import { generatedModel } from "./lib/models.ts";

const CONTEXT = 512;
const SESSIONS = 2;

/** Wraps a link to time each step: wall time minus the stage's reported compute time. */
class TimedLink implements StageLink {
  constructor(private readonly inner: StageLink, private readonly hops: number[]) {}
  get nodeId() {
    return this.inner.nodeId;
  }
  get from() {
    return this.inner.from;
  }
  get to() {
    return this.inner.to;
  }
  async openSession(id: string, ctx: number): Promise<SessionLink> {
    const s = await this.inner.openSession(id, ctx);
    return {
      step: async (frame) => {
        const t0 = performance.now();
        const out = await s.step(frame);
        // Decode frames only: prefill hops carry the whole prompt.
        if (frame.tokens.length === 1) this.hops.push(performance.now() - t0 - out.computeMs);
        return out;
      },
      close: (r) => s.close(r),
    };
  }
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
}

async function run(
  model: string,
  nAgents: number,
  opts: { tokens: number; backend: string; threads?: number },
) {
  const { args } = await splitModelArgs({
    model,
    agents: nAgents,
    contextSize: CONTEXT,
    maxSessions: SESSIONS,
    backend: opts.backend,
    threads: opts.threads,
  });
  const ids = Array.from({ length: nAgents }, (_, i) => `bench-${i}`);
  const agents = await startLocalCluster(ids, { args, startTimeoutMs: 120_000 });
  const transports: RpcTransport[] = [];
  try {
    const first = await createRpcTransport(`127.0.0.1:${agents[0].rpcPort}`);
    transports.push(first);
    const info = await waitForPlacement(first, nAgents, 120_000);
    const port = new Map(info.nodes.map((n) => [n.id, n.rpcPort]));
    const hops: number[] = [];
    const links: StageLink[] = [];
    for (const s of info.placement!.stages) {
      // As agents do between stages: activations do not compress, so no gzip on the hop.
      const t = await createRpcTransport(`127.0.0.1:${port.get(s.nodeId)}`, { gzip: false });
      transports.push(t);
      links.push(
        new TimedLink(
          new RemoteStageLink(s.nodeId, s.fromLayer, s.toLayer, t, {
            model: info.placement!.model,
            epoch: 0n,
          }),
          hops,
        ),
      );
    }
    const head = new Head({ chain: () => Promise.resolve(links) });
    const prompt = Array.from({ length: 16 }, (_, i) => 1 + ((i * 37) % 500));
    const request = (n: number) =>
      head.generate({
        requestId: crypto.randomUUID(),
        promptTokens: prompt,
        maxTokens: n,
        sampling: { temperature: 0 },
        isEog: () => false,
        maxContext: CONTEXT,
      });
    await request(4); // warm-up: JIT, connections, buffers
    hops.length = 0;
    const r = await request(opts.tokens);
    return {
      agents: nAgents,
      stages: info.placement!.stages.map((s) => `${s.nodeId}:[${s.fromLayer},${s.toLayer})`),
      decode_tokens_per_second: (r.tokens.length - 1) / (r.decodeMs / 1000),
      time_to_first_token_ms: r.timeToFirstTokenMs,
      hop_ms_p50: hops.length ? quantile(hops, 0.5) : 0,
      hop_ms_p99: hops.length ? quantile(hops, 0.99) : 0,
      hops_measured: hops.length,
    };
  } finally {
    for (const t of transports) t.close();
    await stopLocalAgents(agents);
  }
}

if (import.meta.main) {
  const opts = new Command("bench pipeline")
    .option("--model <path>", "GGUF model (default: the generated 110M Q8_0 model)")
    .option("--tokens <n>", "tokens to decode", "64")
    .option("--backend <name>", "agent backend", "auto")
    .option("--threads <n>", "threads per agent")
    .parse(Deno.args, { from: "user" })
    .opts();
  const model = opts.model ?? await generatedModel("q8_0");
  const cfg = {
    tokens: Number(opts.tokens),
    backend: opts.backend,
    threads: opts.threads ? Number(opts.threads) : undefined,
  };
  const one = await run(model, 1, cfg);
  const three = await run(model, 3, cfg);
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  console.log(JSON.stringify({
    bench: "pipeline",
    model: model.split("/").pop(),
    backend: opts.backend,
    tokens: cfg.tokens,
    one_agent_decode_tokens_per_second: r3(one.decode_tokens_per_second),
    three_agents_decode_tokens_per_second: r3(three.decode_tokens_per_second),
    ratio: r3(three.decode_tokens_per_second / one.decode_tokens_per_second),
    hop_ms_p50: r3(three.hop_ms_p50),
    hop_ms_p99: r3(three.hop_ms_p99),
    single_agent_hop_ms_p50: r3(one.hop_ms_p50),
    stages: three.stages,
  }));
}
