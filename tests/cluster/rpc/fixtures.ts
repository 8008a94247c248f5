/**
 * A loopback agent with DiscoveryService and NodeService over a static membership of four
 * nodes (a: local, b: alive, c: suspect, d: dead), plus certificates made by our own PKI.
 */
import * as http2 from "node:http2";
import { Buffer } from "node:buffer";
import type { ConnectRouter } from "@connectrpc/connect";
import {
  discoveryService,
  measureResources,
  MetricsSampler,
  nodeService,
  StaticMembership,
} from "../../../cluster/discovery/mod.ts";
import { type RpcServer, startRpcServer } from "../../../cluster/rpc/mod.ts";
import { initCertificates, type TlsFiles } from "../../../cluster/tls/mod.ts";
import { DiscoveryService, NodeService, NodeState } from "../../../proto/mod.ts";

/** Paths of a certificate directory made by initCertificates for nodes a and b. */
export interface TestCerts {
  /** The directory. */
  dir: string;
  /** Files for node "a" (the server). */
  node: TlsFiles;
  /** Files for llmctl (a client). */
  client: TlsFiles;
}

/** Make a CA + certificates for nodes a, b and llmctl in a temp dir. */
export async function makeCerts(): Promise<TestCerts> {
  const dir = await Deno.makeTempDir({ prefix: "dllm-certs-" });
  await initCertificates({ dir, nodes: ["a", "b"] });
  return {
    dir,
    node: { cert: `${dir}/a.crt`, key: `${dir}/a.key`, ca: `${dir}/ca.crt` },
    client: { cert: `${dir}/llmctl.crt`, key: `${dir}/llmctl.key`, ca: `${dir}/ca.crt` },
  };
}

/** The membership the test agent answers from. */
export function testMembership(): StaticMembership {
  return new StaticMembership({
    clusterName: "test",
    local: {
      id: "a",
      addresses: ["127.0.0.1"],
      rpcPort: 7950,
      gossipPort: 7946,
      version: "0.0.0-test",
      resources: measureResources(),
      hosted: { model: "stories260K", fromLayer: 0, toLayer: 3, totalLayers: 5 },
    },
    peers: [
      {
        id: "b",
        addresses: ["127.0.0.2"],
        rpcPort: 7950,
        resources: { cpuCores: 4, memoryTotalBytes: 8n << 30n, memoryBudgetBytes: 2n << 30n },
        hosted: { model: "stories260K", fromLayer: 3, toLayer: 5, totalLayers: 5 },
      },
      { id: "c", addresses: ["127.0.0.3"], state: NodeState.SUSPECT },
      { id: "d", addresses: ["127.0.0.4"], state: NodeState.DEAD },
    ],
  });
}

/** Routes of the test agent over `view`, plus any extra registrations. */
export function testRoutes(view: StaticMembership, extra?: (r: ConnectRouter) => void) {
  const sampler = new MetricsSampler(view.local().id);
  return (r: ConnectRouter) => {
    r.service(DiscoveryService, discoveryService(view));
    r.service(
      NodeService,
      nodeService({ view, resources: () => measureResources(), metrics: () => sampler.sample() }),
    );
    extra?.(r);
  };
}

/** Start the test agent on an ephemeral loopback port. */
export async function startTestAgent(
  opts: {
    tls?: TlsFiles;
    view?: StaticMembership;
    extra?: (r: ConnectRouter) => void;
    host?: string;
  } = {},
): Promise<{ server: RpcServer; view: StaticMembership }> {
  const view = opts.view ?? testMembership();
  const server = await startRpcServer({
    port: 0,
    host: opts.host,
    tls: opts.tls,
    routes: testRoutes(view, opts.extra),
  });
  return { server, view };
}

/** What a raw HTTP/2 call saw: the HTTP status, headers, trailers and the status they carry. */
export interface RawCall {
  httpStatus: number;
  headers: Record<string, unknown>;
  trailers: Record<string, unknown>;
  /** grpc-status from the trailers, or from the headers of a trailers-only answer. */
  grpcStatus?: string;
  grpcMessage?: string;
  /** Milliseconds from the request to the stream's close. */
  ms: number;
  /** The response body, with `collect`. */
  body?: Uint8Array;
}

/**
 * One POST on a fresh HTTP/2 connection to `port`, as any gRPC client would send it (override
 * headers with `headers`): `body` is written and the request half ended unless `keepOpen`.
 */
export async function rawCall(
  port: number,
  path: string,
  body: Uint8Array,
  opts: {
    headers?: Record<string, string>;
    keepOpen?: boolean;
    timeoutMs?: number;
    collect?: boolean;
  } = {},
): Promise<RawCall> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on("error", () => {});
  const started = performance.now();
  try {
    return await new Promise<RawCall>((resolve, reject) => {
      const req = session.request({
        ":method": "POST",
        ":path": path,
        "content-type": "application/grpc",
        te: "trailers",
        ...opts.headers,
      });
      const out: RawCall = { httpStatus: 0, headers: {}, trailers: {}, ms: 0 };
      const take = (h: Record<string, unknown>) => {
        if (typeof h["grpc-status"] === "string") out.grpcStatus = h["grpc-status"];
        if (typeof h["grpc-message"] === "string") {
          out.grpcMessage = decodeURIComponent(h["grpc-message"]);
        }
      };
      const timer = setTimeout(() => {
        req.close();
        reject(new Error(`${path}: no end within ${opts.timeoutMs ?? 10_000} ms`));
      }, opts.timeoutMs ?? 10_000);
      req.on("response", (h) => {
        out.httpStatus = Number(h[":status"]);
        out.headers = { ...h };
        take(h);
      });
      req.on("trailers", (h) => {
        out.trailers = { ...h };
        take(h);
      });
      const chunks: Uint8Array[] = [];
      req.on("data", (c: Uint8Array) => opts.collect && chunks.push(c));
      req.on("error", () => {});
      req.on("close", () => {
        clearTimeout(timer);
        out.ms = performance.now() - started;
        if (opts.collect) out.body = new Uint8Array(Buffer.concat(chunks));
        resolve(out);
      });
      if (opts.keepOpen) req.write(body);
      else req.end(body);
      if (!opts.collect) req.resume();
    });
  } finally {
    session.close();
  }
}

/** `body` in a gRPC envelope (uncompressed). */
export function enveloped(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + body.byteLength);
  new DataView(out.buffer).setUint32(1, body.byteLength);
  out.set(body, 5);
  return out;
}
