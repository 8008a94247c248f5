/**
 * TransferService handlers over a {@linkcode TransferManager}: register them on the agent's RPC
 * router with `r.service(TransferService, transferService(manager))`.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type FetchChunksRequestSchema,
  FetchChunksResponseSchema,
  PrepareResponseSchema,
  type TransferService,
  TransferStatusResponseSchema,
} from "../../proto/mod.ts";
import { RAW_SERVER_STREAMS, type RawServerStream } from "../rpc/mod.ts";
import type { TransferManager } from "./manager.ts";

/**
 * The TransferService implementation of one agent. FetchChunks also comes raw: plain gRPC
 * callers get each chunk written from the buffer it was read into (see chunk_frames.ts).
 */
export function transferService(m: TransferManager): ServiceImpl<typeof TransferService> {
  const fetchChunks: RawServerStream<typeof FetchChunksRequestSchema> = async function* (
    req,
    signal,
  ) {
    for await (const c of m.fetchChunks(req, signal)) yield c.envelope();
  };
  const impl: ServiceImpl<typeof TransferService> = {
    getManifest: (req) => m.getManifest(req),
    async *fetchChunks(req, ctx) {
      for await (const { segment, chunk, data } of m.fetchChunks(req, ctx.signal)) {
        yield create(FetchChunksResponseSchema, { segment, chunk, data });
      }
    },
    deploy: (req, ctx) => m.deploy(req, ctx.signal),
    prepare: async (req) => create(PrepareResponseSchema, { progress: await m.prepare(req) }),
    undeploy: (req) => m.undeploy(req),
    transferStatus: () =>
      create(TransferStatusResponseSchema, {
        nodeId: m.host.nodeId,
        models: m.status(),
        cacheDir: m.opts.cacheDir,
      }),
  };
  return Object.assign(impl, { [RAW_SERVER_STREAMS]: { fetchChunks } });
}
