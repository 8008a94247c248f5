/** Deploy progress on a terminal: redrawn lines never wrap (each node's line is one row). */
import { create } from "@bufbuild/protobuf";
import { DeployResponseSchema, TransferProgressSchema, TransferState } from "../../proto/mod.ts";
import { progressLine, TransferProgressView } from "../../cli/progress.ts";
import { formatBytes } from "../../cli/format.ts";
import { assert } from "../support/assert.ts";

Deno.test("tty progress lines fit the terminal, so the redraw moves up one row per node", () => {
  let out = "";
  const view = new TransferProgressView({ mode: "tty", write: (s) => out += s, columns: () => 60 });
  const node = (nodeId: string) =>
    create(TransferProgressSchema, {
      nodeId,
      model: "a-rather-long-model-file-name-q4_k_m.gguf@4920000000",
      state: TransferState.FETCHING,
      bytesDone: 1_000_000_000n,
      bytesTotal: 1_726_000_000n,
      bytesPerSecond: 180e6,
      etaSeconds: 4,
      fromLayer: 12,
      toLayer: 26,
      detail: "fetching from a, c",
    });
  for (let i = 0; i < 2; i++) {
    view.update(
      create(DeployResponseSchema, { model: "m", nodes: [node("node-b"), node("node-c")] }),
    );
  }
  // Before, lines of ~92 columns wrapped on an 80-column terminal and each redraw garbled.
  for (const line of out.split("\n").filter(Boolean)) {
    // deno-lint-ignore no-control-regex -- the ANSI escapes the view writes
    const text = line.replace(/\x1b\[[0-9]*[A-Za-z]/g, "");
    assert([...text].length < 60, `${[...text].length} columns: ${text}`);
  }
});

Deno.test("tty progress on a terminal that reports 0 columns keeps the whole line", () => {
  let out = "";
  const view = new TransferProgressView({ mode: "tty", write: (s) => out += s, columns: () => 0 });
  view.update(create(DeployResponseSchema, {
    model: "m",
    nodes: [create(TransferProgressSchema, {
      nodeId: "a",
      model: "stories260K.gguf",
      state: TransferState.LOADED,
      bytesDone: 1_185_376n,
      bytesTotal: 1_185_376n,
      fromLayer: 0,
      toLayer: 2,
    })],
  }));
  // Before, `script`'s 0×0 pty cut every line to 20 columns: "a    [██████████████".
  assert(out.includes("100% 1.19 MB/1.19 MB loaded [0,2)"), JSON.stringify(out));
});

Deno.test("a stalled fetch says so: no 1e-64 B/s and an ETA of 1e70 s (hunt 4, F6)", () => {
  const line = (bytesPerSecond: number, etaSeconds: number, done = 5_000_000n) =>
    progressLine(create(TransferProgressSchema, {
      nodeId: "b",
      state: TransferState.FETCHING,
      bytesDone: done,
      bytesTotal: 10_000_000n,
      bytesPerSecond,
      etaSeconds,
    }));
  const stalled = line(9.59606361650947e-65, 2.185429446707681e70);
  assert(stalled.endsWith(" stalled"), stalled);
  assert(!/e[+-]\d/.test(stalled), stalled);
  assert(line(2e6, 3).endsWith(" 2.00 MB/s ETA 3.0 s"), line(2e6, 3));
  assert(!line(0, 0, 0n).includes("stalled"), "nothing fetched yet: not stalled");
  assert(formatBytes(0.4) === "0 B" && formatBytes(512.6) === "513 B", formatBytes(512.6));
});
