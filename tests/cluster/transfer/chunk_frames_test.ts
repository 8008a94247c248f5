/**
 * FetchChunksResponse messages framed in place (cluster/transfer/chunk_frames.ts) are the bytes
 * toBinary and a gRPC envelope give, for zero fields and multi-byte varints alike, and live in
 * the pool's buffers.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { FetchChunksResponseSchema } from "../../../proto/mod.ts";
import { CHUNK_HEADROOM, ChunkFrames } from "../../../cluster/transfer/chunk_frames.ts";
import { assertEquals, assertThrows } from "../../support/assert.ts";

/** What Connect's gRPC path writes for one message. */
function reference(segment: number, chunk: number, data: Uint8Array): Uint8Array {
  const body = toBinary(
    FetchChunksResponseSchema,
    create(FetchChunksResponseSchema, {
      segment,
      chunk,
      data,
    }),
  );
  const out = new Uint8Array(5 + body.length);
  new DataView(out.buffer).setUint32(1, body.length);
  out.set(body, 5);
  return out;
}

Deno.test("chunk frames are toBinary's bytes in a gRPC envelope, built in the pool's buffers", () => {
  const frames = new ChunkFrames(300, 2);
  const cases: [number, number, number][] = [
    [0, 0, 300],
    [1, 0, 1],
    [0, 5, 299],
    [127, 128, 128],
    [70000, 2 ** 31, 17],
    [0xffff_ffff, 0xffff_ffff, 300],
    [3, 4, 0],
  ];
  const buffers = new Set<ArrayBufferLike>();
  for (const [i, [segment, chunk, n]] of cases.entries()) {
    const data = frames.data(i).subarray(0, n);
    for (let j = 0; j < n; j++) data[j] = (j * 31 + i) & 255;
    const frame = frames.frame(i, segment, chunk, n);
    assertEquals(
      frame,
      reference(segment, chunk, data),
      `segment ${segment} chunk ${chunk} n ${n}`,
    );
    assertEquals(frame.buffer, data.buffer, "framed where the chunk was read, not copied");
    buffers.add(frame.buffer);
  }
  assertEquals(buffers.size, 2);
  assertEquals(frames.data(0).length, 300);
  assertThrows(() => frames.frame(0, 0, 0, 301), RangeError, "does not fit");
  assertThrows(() => frames.frame(0, -1, 0, 1), RangeError, "not a uint32");
  assertThrows(() => new ChunkFrames(0), RangeError);
  assertEquals(CHUNK_HEADROOM >= 5 + 3 * 6, true);
});
