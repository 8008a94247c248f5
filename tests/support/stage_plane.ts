/**
 * stories260K's layers as one stage behind a real TCP data plane that serves Forward streams: what
 * the pipeline tests of a stage's wire side start from.
 */
import { createReferenceBackend } from "../../kernels/reference/mod.ts";
import { openGGUF } from "../../model/gguf/mod.ts";
import { LlamaStage } from "../../model/llama.ts";
import {
  FORWARD_PREAMBLE,
  type ForwardContext,
  forwardProtocol,
  StageHost,
} from "../../cluster/pipeline/mod.ts";
import { startTcpPlane, type TcpPlane } from "../../cluster/rpc/mod.ts";
import { FIXTURES } from "./paths.ts";

/**
 * Layers [0, `to`) of stories260K on the reference backend as a StageHost, served over a data
 * plane on loopback whose Forward frames may hold `maxBytes`; the context is node "n0" at epoch 0
 * unless `ctx` says otherwise.
 */
export async function stageOnPlane(
  to: number,
  maxBytes: number,
  ctx: Partial<ForwardContext> = {},
): Promise<{ host: StageHost; plane: TcpPlane }> {
  const file = await openGGUF(`${FIXTURES}/models/stories260K.gguf`);
  const host = new StageHost(
    await LlamaStage.load(file, createReferenceBackend(), { from: 0, to }),
    "stories260K",
  );
  file.close();
  const plane = await startTcpPlane({
    host: "127.0.0.1",
    protocols: {
      [FORWARD_PREAMBLE]: forwardProtocol(
        { nodeId: "n0", host: () => host, epoch: () => 0n, ...ctx },
        maxBytes,
      ),
    },
  });
  return { host, plane };
}
