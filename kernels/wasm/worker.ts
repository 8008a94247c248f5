/// <reference lib="deno.worker" />
/**
 * A worker of the WASM backend's pool. It instantiates the kernels over every arena's shared
 * memory, then loops: wait for the control block's `SEQ` to move (spin for `SPIN_US` µs
 * after its last job, then `Atomics.wait`), join the job if it is still open and run its share (see jobs.ts).
 *
 * Messages: `{type: "init", bytes, ctrl, thread, memories}` once, then `{type: "arena", memory}`
 * for each arena added later (the main thread sends `OP_RELOAD` so the loop yields to take it).
 */
import { instantiate, type Kernels } from "./kernels.ts";
import {
  ACK,
  ACTIVE,
  ARGS,
  CLOSED,
  ERROR,
  OP,
  OP_RELOAD,
  OP_STOP,
  runJob,
  SEQ,
  SLEEPS,
  spinWhile,
} from "./jobs.ts";

let module: WebAssembly.Module | undefined;
let ctrl: Int32Array;
let f32: Float32Array;
let thread = 0;
const arenas: Kernels[] = [];
let seen = 0;

/** Acknowledge control op `seq` (new arenas taken, or stopping). */
function ack(seq: number): void {
  Atomics.store(ctrl, ACK + thread, seq);
  Atomics.notify(ctrl, ACK + thread);
}

function loop(): void {
  for (;;) {
    if (!spinWhile(ctrl, SEQ, seen, performance.now())) {
      while (Atomics.load(ctrl, SEQ) === seen) {
        Atomics.add(ctrl, SLEEPS, 1);
        Atomics.wait(ctrl, SEQ, seen);
      }
    }
    let s = Atomics.load(ctrl, SEQ);
    let op = Atomics.load(ctrl, OP);
    while (Atomics.load(ctrl, SEQ) !== s) {
      s = Atomics.load(ctrl, SEQ);
      op = Atomics.load(ctrl, OP);
    }
    seen = s;
    if (op === OP_STOP) {
      ack(s);
      self.close();
      return;
    }
    if (op === OP_RELOAD) {
      // Wait (asynchronously) until every arena's memory has arrived, then acknowledge.
      if (arenas.length >= Atomics.load(ctrl, ARGS)) {
        ack(s);
        continue;
      }
      return; // onmessage resumes the loop
    }
    Atomics.add(ctrl, ACTIVE, 1);
    if (Atomics.load(ctrl, SEQ) === s && Atomics.load(ctrl, CLOSED) !== s) {
      try {
        runJob(ctrl, f32, arenas, thread);
      } catch (e) {
        console.error(`wasm worker ${thread}:`, e);
        Atomics.store(ctrl, ERROR, 1);
      }
    }
    Atomics.sub(ctrl, ACTIVE, 1);
    Atomics.notify(ctrl, ACTIVE);
  }
}

self.onmessage = (e: MessageEvent) => {
  const m = e.data;
  if (m.type === "init") {
    module = new WebAssembly.Module(m.bytes);
    ctrl = new Int32Array(m.ctrl);
    f32 = new Float32Array(m.ctrl);
    thread = m.thread;
    seen = Atomics.load(ctrl, SEQ);
    for (const mem of m.memories) arenas.push(instantiate(module, mem));
    self.postMessage({ type: "ready" });
    loop();
  } else if (m.type === "arena") {
    try {
      arenas.push(instantiate(module!, m.memory));
    } catch (e) {
      // Say so through the control block: the main thread is blocked waiting for this
      // worker's acknowledgement, and an error event would reach it only after its 30 s bound.
      console.error(`wasm worker ${thread}: cannot take a new memory:`, e);
      Atomics.store(ctrl, ERROR, 1);
      ack(Atomics.load(ctrl, SEQ));
      return; // this worker is done; the pool refuses further work
    }
    // A RELOAD that was waiting for this memory: acknowledge it and go back to work (if the
    // RELOAD has not been published yet, loop() meets it and acknowledges then).
    if (
      Atomics.load(ctrl, OP) === OP_RELOAD && Atomics.load(ctrl, SEQ) === seen &&
      arenas.length >= Atomics.load(ctrl, ARGS)
    ) {
      ack(seen);
      loop();
    }
  }
};
