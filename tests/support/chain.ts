/**
 * Stages of a chain served as agents serve them, for tests: each StageHost behind its own RPC
 * server (InferenceService.Forward) and, over "tcp", its own data plane, reached through
 * RemoteStageLinks that open the next stage themselves.
 */
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import { openGGUF } from "../../model/gguf/mod.ts";
import { LlamaStage } from "../../model/llama.ts";
import { FIXTURES } from "./paths.ts";
import {
  type ChainHop,
  FORWARD_PREAMBLE,
  forwardHandler,
  forwardProtocol,
  Head,
  type HeadOptions,
  type HeadRequest,
  type HeadResult,
  RemoteStageLink,
  REPLIES_PREAMBLE,
  repliesProtocol,
  ReplySinks,
  StageHost,
  type StageHostOptions,
  type StageLink,
} from "../../cluster/pipeline/mod.ts";
import {
  createRpcTransport,
  type RpcServer,
  type RpcTransport,
  startRpcServer,
  startTcpPlane,
  type TcpPlane,
} from "../../cluster/rpc/mod.ts";
import { InferenceService } from "../../proto/mod.ts";

/** A served chain: links to its stages (n0, n1, …), a way to kill one, and close. */
export interface ServedChain {
  links: StageLink[];
  /** Each stage's reply streams (over "tcp", the tail sends tokens straight to the head). */
  replies: ReplySinks[];
  /** Stage i's listeners go away (its connections reset). */
  kill(i: number): Promise<unknown>;
  close(): Promise<void>;
}

/**
 * Serve `stages` (node ids n0, n1, …) over `hop`; stage i cuts long prompts into
 * `chunkRows[i]`-row chunks (undefined: the default).
 */
export async function serveChain(
  stages: StageHost[],
  hop: "tcp" | "grpc",
  chunkRows: (number | undefined)[] = [],
  opts: {
    /** How long a reply stream waits for its session (repliesProtocol). */
    unclaimedMs?: number;
    /** Stage i's link to the next stage, as the test wants it (e.g. to fail it on cue). */
    wrapLink?: (i: number, link: StageLink) => StageLink;
  } = {},
): Promise<ServedChain> {
  const planes: TcpPlane[] = [];
  const servers: RpcServer[] = [];
  const transports = new Map<string, RpcTransport>();
  const endpoints = new Map<string, string>();
  const linkTo = (h: ChainHop): StageLink =>
    new RemoteStageLink(h.nodeId, h.from, h.to, transports.get(h.nodeId)!, {
      dataEndpoint: endpoints.get(h.nodeId),
    });
  const replies = stages.map(() => new ReplySinks());
  for (const [i, host] of stages.entries()) {
    const ctx = {
      nodeId: `n${i}`,
      host: () => host,
      epoch: () => 0n,
      linkTo: (h: ChainHop) => opts.wrapLink ? opts.wrapLink(i, linkTo(h)) : linkTo(h),
      chunkRows: chunkRows[i],
      replies: replies[i],
    };
    const server = await startRpcServer({
      port: 0,
      routes: (r) => r.service(InferenceService, { forward: forwardHandler(ctx) }),
    });
    servers.push(server);
    transports.set(`n${i}`, await createRpcTransport(`127.0.0.1:${server.port}`, { gzip: false }));
    if (hop === "tcp") {
      const plane = await startTcpPlane({
        host: "127.0.0.1",
        protocols: {
          [FORWARD_PREAMBLE]: forwardProtocol(ctx, 64 << 20),
          [REPLIES_PREAMBLE]: repliesProtocol(replies[i], 1024, opts.unclaimedMs),
        },
      });
      planes.push(plane);
      endpoints.set(`n${i}`, `127.0.0.1:${plane.port}`);
    }
  }
  return {
    links: stages.map((h, i) => linkTo({ nodeId: `n${i}`, from: h.range.from, to: h.range.to })),
    replies,
    kill: (i: number) => Promise.all([servers[i].close(0), planes[i]?.close()]),
    async close() {
      for (const t of transports.values()) t.close();
      await Promise.all([...servers.map((s) => s.close(100)), ...planes.map((p) => p.close())]);
    },
  };
}

/** Stages of stories260K over `ranges` on the reference backend (`opts(i)`: stage i's options). */
export async function stageHosts(
  ranges: [number, number][],
  opts: (i: number) => StageHostOptions = () => ({}),
): Promise<StageHost[]> {
  const file = await openGGUF(`${FIXTURES}/models/stories260K.gguf`);
  try {
    const out = [];
    for (const [i, [from, to]] of ranges.entries()) {
      const stage = await LlamaStage.load(file, createReferenceBackend(), { from, to });
      out.push(new StageHost(stage, "stories260K", opts(i)));
    }
    return out;
  } finally {
    file.close();
  }
}

/** Ids, log-probabilities (as float32: the wire's) and alternatives of a generation. */
export const summary = (r: HeadResult): unknown[] =>
  r.tokens.map((t) => [t.id, Math.fround(t.logprob), t.top.map((x) => x.id)]);

/** A head's generation over `links`, with the request fields a test varies. */
export function generateOver(
  links: StageLink[],
  req:
    & Pick<HeadRequest, "promptTokens" | "maxTokens" | "sampling" | "maxContext">
    & Partial<HeadRequest>,
  opts: HeadOptions = {},
): Promise<HeadResult> {
  return new Head({ chain: () => Promise.resolve(links) }, opts).generate({
    requestId: "test",
    isEog: () => false,
    ...req,
  });
}
