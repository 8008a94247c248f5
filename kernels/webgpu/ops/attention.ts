/**
 * Causal attention over the KV cache as ggml computes it without flash attention: scores
 * (attention.wgsl `scores`), causal softmax in place (softmax.wgsl), then the weighted sum of
 * values (attention.wgsl `pv`). Long prefills run in row chunks so the score scratch buffer
 * stays under its cap.
 *
 * @module
 */
import { checkKVRange } from "../../checks.ts";
import type { Backend } from "../../backend.ts";
import { asBuf, asKV, need } from "../handles.ts";
import { compose } from "../shaders.ts";
import { grid, type OpContext, WG } from "./context.ts";

/** Record attention of `rows` query rows (from row `rowOffset`) at positions `pos0..`. */
export function encodeAttention(
  ctx: OpContext,
  ...[q, cache, layer, out, pos0, rows, params, rowOffset = 0]: Parameters<Backend["attention"]>
): void {
  const c = asKV(cache);
  const qb = asBuf(q);
  const o = asBuf(out);
  const { nHeads, nKVHeads, headDim } = params;
  if (nHeads % nKVHeads !== 0 || nKVHeads * headDim !== c.kvDim) {
    throw new RangeError(
      `attention: ${nHeads} heads / ${nKVHeads} KV heads × ${headDim} do not fit a cache of ` +
        `kvDim ${c.kvDim}`,
    );
  }
  checkKVRange("attention", c, layer, pos0, rows);
  const qDim = nHeads * headDim;
  need(qb, (rowOffset + rows) * qDim, "attention q", rowOffset * qDim);
  need(o, (rowOffset + rows) * qDim, "attention out", rowOffset * qDim);
  if (rows === 0) return;
  const { enc } = ctx;
  const defines = c.type === "f16" ? ["KV_F16"] : [];
  const bindings = [[0, "uniform"], [1, "storage"], [2, "storage"], [3, "storage"]] as const;
  // On CPU-run adapters, the f32 cache's variant with 16-byte loads (same sums, same bits).
  const cpu = ctx.info.cpuKernels && c.type === "f32" && headDim % 4 === 0 &&
    c.strideWords % 4 === 0;
  const file = cpu ? "attention_cpu" : "attention";
  const cacheBinding = [[0, "uniform"], [1, "storage"], [2, "read"], [3, "storage"]] as const;
  const scores = enc.pipe(
    `attn_scores:${c.type}${cpu ? ":cpu" : ""}`,
    () => compose(file, { defines }),
    cpu ? cacheBinding : bindings,
    "scores",
  );
  const pv = enc.pipe(
    `attn_pv:${c.type}${cpu ? ":cpu" : ""}`,
    () => compose(file, { defines }),
    cpu ? cacheBinding : bindings,
    "pv",
  );
  const pvGroups = cpu ? Math.ceil(headDim / 4 / 16) : Math.ceil(headDim / WG);
  const softmax = enc.pipe(
    "softmax",
    () => compose("softmax"),
    [[0, "uniform"], [1, "storage"]],
  );
  // Scores of a chunk of query rows live in one scratch buffer [rows × heads × (pos0 + rows)];
  // long prefills run in as many row chunks as it takes to keep that under the cap.
  const scratchCap = Math.min(ctx.info.attentionScratchBytes, ctx.gpu.maxBind);
  const rowBytes = nHeads * (pos0 + rows) * 4;
  const chunk = Math.max(1, Math.min(rows, Math.floor(scratchCap / rowBytes)));
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const n = Math.min(chunk, rows - r0);
    const p0 = pos0 + r0;
    const nMax = p0 + n;
    const s = ctx.gpu.scratch("attention scores", n * nHeads * nMax * 4);
    const prm = enc.params();
    prm.u.set([n, nHeads, nKVHeads, headDim, p0, rowOffset + r0, c.strideWords, nMax]);
    prm.f[8] = params.scale;
    prm.u[9] = params.window ?? 0;
    enc.dispatch(scores, prm.slot, [qb.res, c.k[layer], s], Math.ceil(nMax / WG), nHeads, n);
    const sm = enc.params();
    sm.u.set([n * nHeads, nHeads, nMax, p0, params.window ?? 0]);
    const [gx, gy] = grid(n * nHeads);
    enc.dispatch(softmax, sm.slot, [s], gx, gy);
    enc.dispatch(pv, prm.slot, [o.res, c.v[layer], s], pvGroups, nHeads, n);
  }
  o.version++;
}
