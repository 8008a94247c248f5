/**
 * A stage woken from idle by a frame lets the frames of the same I/O poll join its pass (an
 * immediate) only when another session could have sent one, or when clients stream from this
 * process: a lone session's pass on a stage that only computes starts at once. The turn before
 * a pass lets a token's queued HTTP/2 write reach the socket.
 */
import http2 from "node:http2";
import { EventLoopYield } from "../../../cluster/pipeline/event_loop.ts";
import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { LlamaStage } from "../../../model/llama.ts";
import { StageHost } from "../../../cluster/pipeline/mod.ts";
import { assertEquals } from "../../support/assert.ts";
import { FIXTURES } from "../../support/paths.ts";

async function firstAfterIdle(sessions: number, clientsStreaming = false): Promise<string> {
  const file = await openGGUF(`${FIXTURES}/models/stories260K.gguf`);
  const stage = await LlamaStage.load(file, createReferenceBackend(), { from: 0, to: 2 });
  file.close();
  const order: string[] = [];
  const host = new StageHost(stage, "s", {
    defaultContext: 16,
    onStep: () => order.push("pass"),
    clientsStreaming: () => clientsStreaming,
  });
  try {
    for (let i = 0; i < sessions; i++) host.open(`s${i}`);
    // Never run before: the host counts as idle, as a remote stage between frames is.
    setImmediate(() => order.push("immediate"));
    await host.step("s0", { tokens: Int32Array.of(1) });
    await new Promise((r) => setImmediate(r));
    return order[0];
  } finally {
    host.dispose();
  }
}

Deno.test("a lone session's frame after idle runs at once; with others open, an immediate first", async () => {
  assertEquals(await firstAfterIdle(1), "pass");
  assertEquals(await firstAfterIdle(2), "immediate");
});

Deno.test("a lone session's pass waits for an immediate while clients stream from the process", async () => {
  // A 3-agent head's client got each token a pass late (3.9 ms p50 on the 110M model): the
  // token's write had not reached the socket when the next pass began.
  assertEquals(await firstAfterIdle(1, true), "immediate");
});

/**
 * Bytes an HTTP/2 stream handed to its socket during each of 20 turns taken while a message goes
 * through a chain of async generators to `stream.write`, as Connect's response loop writes a
 * Generate answer.
 */
async function writtenDuringTurns(turn: (y: EventLoopYield) => Promise<void>): Promise<number[]> {
  const server = http2.createServer();
  const written: number[] = [];
  const done = Promise.withResolvers<void>();
  server.on("stream", async (stream) => {
    try {
      stream.respond({ ":status": 200 });
      const socket = stream.session!.socket;
      const y = new EventLoopYield(0);
      const tokens = async function* () {
        for (let i = 0; i < 20; i++) yield new Uint8Array(100).fill(65 + i);
      };
      const framed = async function* (it: AsyncIterable<Uint8Array>) {
        for await (const x of it) yield x;
      };
      const encoded = async function* (it: AsyncIterable<Uint8Array>) {
        for await (const x of it) {
          await null;
          yield x;
        }
      };
      const it = encoded(framed(tokens()))[Symbol.asyncIterator]();
      for (let i = 0; i < 20; i++) {
        const before = socket.bytesWritten;
        const writing = it.next().then((r) => void (r.done || stream.write(r.value)));
        await turn(y);
        written.push(socket.bytesWritten - before);
        await writing;
        // The next pass: synchronous compute, no I/O.
        const t = performance.now();
        while (performance.now() - t < 2) { /* compute */ }
      }
      stream.end();
      done.resolve();
    } catch (e) {
      done.reject(e);
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  const client = http2.connect(`http://127.0.0.1:${port}`);
  const req = client.request({ ":path": "/" });
  req.on("data", () => {});
  const ended = new Promise<void>((r) => req.on("end", r));
  try {
    await done.promise;
    await ended;
  } finally {
    // Each side's session is closed and gone before the next goes: the runtime's HTTP/2
    // sessions must not be left to be torn down with the test's worker.
    await new Promise<void>((r) => client.close(() => r()));
    await new Promise<void>((r) => server.close(() => r()));
  }
  return written;
}

Deno.test("the turn before a pass lets a streamed token's HTTP/2 write reach the socket", async () => {
  // An I/O poll alone (a turn without flush) left the write queued now and then.
  for (
    const [name, turn] of [
      ["after idle", (y: EventLoopYield) => y.afterIdle(false)],
      ["budget spent", (y: EventLoopYield) => y.turn(true)],
    ] as const
  ) {
    const written = await writtenDuringTurns(turn);
    assertEquals(written.filter((n) => n < 100), [], `${name}: bytes written per turn ${written}`);
  }
});
