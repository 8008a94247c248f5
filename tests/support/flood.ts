/**
 * The flood tests' two halves (tests/cluster/rpc/): a handler that waits until its client's
 * frames stop piling up, and a client that sends frames back to back and reads every answer.
 */
import { create } from "@bufbuild/protobuf";
import type { BidiCall } from "../../cluster/rpc/mod.ts";
import type { MessageQueue } from "../../cluster/rpc/mod.ts";
import { ActivationFrameSchema, ForwardResponseSchema } from "../../proto/mod.ts";

/**
 * Wait until `queue` stops growing (300 ms, then until two reads 150 ms apart agree, at most
 * ~8 s): HTTP/2 brings 1 MiB frames slowly, and a fixed wait could end before a bound is reached.
 */
export async function untilSteady(queue: MessageQueue<unknown>): Promise<void> {
  await new Promise((r) => setTimeout(r, 300));
  for (let last = -1, i = 0; queue.bytes !== last && i < 50; i++) {
    last = queue.bytes;
    await new Promise((r) => setTimeout(r, 150));
  }
}

/** Send `frames` frames of `bytes` data back to back, half-close, and read every answer's step. */
export async function floodAndRead(
  call: BidiCall<typeof ActivationFrameSchema, typeof ForwardResponseSchema>,
  frames: number,
  bytes: number,
): Promise<bigint[]> {
  const data = new Uint8Array(bytes);
  for (let i = 0; i < frames; i++) {
    call.send(create(ActivationFrameSchema, { step: BigInt(i), data }));
  }
  call.end();
  const got: bigint[] = [];
  for (let r = await call.receive(); r; r = await call.receive()) got.push(r.step);
  return got;
}
