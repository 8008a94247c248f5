/**
 * TransferService handlers over a {@linkcode TransferManager}: register them on the agent's RPC
 * router with `r.service(TransferService, transferService(manager))`.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  FetchChunksResponseSchema,
  PrepareResponseSchema,
  type TransferService,
  TransferStatusResponseSchema,
} from "../../proto/mod.ts";
import type { TransferManager } from "./manager.ts";

/** The TransferService implementation of one agent. */
export function transferService(m: TransferManager): ServiceImpl<typeof TransferService> {
  return {
    getManifest: (req) => m.getManifest(req),
    async *fetchChunks(req, ctx) {
      for await (const c of m.fetchChunks(req, ctx.signal)) {
        yield create(FetchChunksResponseSchema, c);
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
}
