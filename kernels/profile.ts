/**
 * Per-op timing of any Backend: a wrapper that times every call (the ops are synchronous on the
 * CPU backends, so a call's wall time is the op's time, thread hand-offs included) and groups
 * them by op and, for matmuls, by weight (`matmul attn_q`, `matmul output`, …). The CPU bench
 * prints the breakdown of one decode step and one prefill (`bench cpu --profile`), so where the
 * milliseconds go stays visible release to release.
 */
import type { Backend, Weight } from "./backend.ts";
import { typeName } from "./quant/types.ts";

/** Time and calls of one op group. */
export interface OpTime {
  op: string;
  calls: number;
  ms: number;
}

/** A backend whose calls are timed, and the accumulated times. */
export interface ProfiledBackend {
  readonly backend: Backend;
  /** Times since the last reset, largest first. */
  report(): OpTime[];
  /** Forget what was measured so far. */
  reset(): void;
  /** Whether calls are timed (default true); when false they go straight through. */
  enabled: boolean;
}

const TIMED = [
  "embed",
  "rmsNorm",
  "matmul",
  "matmulMany",
  "addBias",
  "rope",
  "storeKV",
  "attention",
  "attentionMany",
  "swiglu",
  "geglu",
  "add",
  "scale",
  "copyRows",
  "sumRowGroups",
  "topCandidates",
  "topCandidatesInto",
  "embedAt",
  "write",
] as const;

/** Group name of a matmul: the weights' names without their layer prefix, and their types. */
function matmulKey(ws: Weight[]): string {
  const names = ws.map((w) => w.name.replace(/^blk\.\d+\./, "").replace(/\.weight$/, ""));
  const types = [...new Set(ws.map((w) => typeName(w.type)))];
  return `matmul ${names.join("+")} (${types.join("/")})`;
}

/** Wrap `inner` so that each op call is timed; `inner` itself is unchanged. */
export function profileBackend(inner: Backend): ProfiledBackend {
  const times = new Map<string, OpTime>();
  const prof: ProfiledBackend = {
    backend: inner,
    report: () => [...times.values()].sort((a, b) => b.ms - a.ms),
    reset: () => times.clear(),
    enabled: true,
  };
  const note = (op: string, ms: number) => {
    const t = times.get(op);
    if (t) {
      t.calls++;
      t.ms += ms;
    } else times.set(op, { op, calls: 1, ms });
  };
  const wrapped: Record<string, unknown> = {};
  for (const op of TIMED) {
    if (!inner[op]) continue; // an optional op this backend lacks stays absent
    const fn = (inner[op] as (...a: unknown[]) => unknown).bind(inner);
    wrapped[op] = (...args: unknown[]) => {
      if (!prof.enabled) return fn(...args);
      const t0 = performance.now();
      const r = fn(...args);
      const key = op === "matmul"
        ? matmulKey([args[0] as Weight])
        : op === "matmulMany"
        ? matmulKey(args[0] as Weight[])
        : op;
      note(key, performance.now() - t0);
      return r;
    };
  }
  (prof as { backend: Backend }).backend = new Proxy(inner, {
    get(target, prop, receiver) {
      if (typeof prop === "string" && prop in wrapped) return wrapped[prop];
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return prof;
}
