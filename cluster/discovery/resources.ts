/**
 * Measured resources and load of this machine: memory from `Deno.systemMemoryInfo()`, cores
 * from `navigator.hardwareConcurrency`, load from `Deno.loadavg()`, CPU busy from the kernel's
 * per-core times. Nothing here is configured except the memory budget, which is policy.
 *
 * @module
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import os from "node:os";
import {
  type AdapterInfoSchema,
  type NodeMetrics,
  NodeMetricsSchema,
  type ResourceInfo,
  ResourceInfoSchema,
} from "../../proto/mod.ts";

/** What the agent knows beyond the machine: its budget, adapters and layer bookkeeping. */
export interface ResourceOptions {
  /** Memory budget for weights and KV caches, bytes; default: memory available at start. */
  memoryBudgetBytes?: number;
  /** Compute adapters, best first (from the kernel backend's selection). */
  adapters?: MessageInitShape<typeof AdapterInfoSchema>[];
  /** Compute threads the backend uses; default: all cores. */
  threads?: number;
  /** Bytes one layer of the current model needs (weights + KV cache); enables max_layers. */
  bytesPerLayer?: () => number;
  /** Layers hosted right now. */
  usedLayers?: () => number;
}

/** Logical CPU cores (at least 1). */
export function cpuCores(): number {
  return Math.max(1, navigator.hardwareConcurrency || os.cpus().length || 1);
}

/** The 1, 5 and 15 minute load averages (zeros where the system has none). */
export function loadavg(): [number, number, number] {
  try {
    const [a, b, c] = Deno.loadavg();
    return [a, b, c];
  } catch {
    return [0, 0, 0]; // Windows has no load average
  }
}

/** Sample the machine's resources now. */
export function measureResources(opts: ResourceOptions = {}): ResourceInfo {
  const mem = Deno.systemMemoryInfo();
  const budget = opts.memoryBudgetBytes ?? mem.available;
  const perLayer = opts.bytesPerLayer?.() ?? 0;
  return create(ResourceInfoSchema, {
    cpuCores: cpuCores(),
    memoryTotalBytes: BigInt(mem.total),
    memoryAvailableBytes: BigInt(mem.available),
    memoryBudgetBytes: BigInt(Math.max(0, Math.floor(budget))),
    adapters: opts.adapters ?? [],
    maxLayers: perLayer > 0 ? Math.floor(budget / perLayer) : 0,
    usedLayers: opts.usedLayers?.() ?? 0,
    loadAverage1m: loadavg()[0],
    threads: opts.threads ?? cpuCores(),
  });
}

/** Counters the agent keeps that a metrics sample reports. */
export interface WorkCounters {
  /** Sessions (KV caches) open here. */
  activeSessions: number;
  /** Client requests this node heads now. */
  activeRequests: number;
  /** Tokens generated as a head, since start. */
  tokensGeneratedTotal: number;
  /** Activation frames processed as a stage, since start. */
  framesProcessedTotal: number;
}

function cpuTimes(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const c of os.cpus()) {
    const t = c.times;
    const sum = t.user + t.nice + t.sys + t.idle + t.irq;
    total += sum;
    busy += sum - t.idle;
  }
  return { busy, total };
}

/**
 * Takes {@linkcode NodeMetrics} samples. CPU percent and tokens per second are rates, so each
 * sample is measured against the previous one (the first against the sampler's creation).
 */
export class MetricsSampler {
  #nodeId: string;
  #counters: () => WorkCounters;
  #startedAt: number;
  #prevCpu = cpuTimes();
  #prevTokens = 0;
  #prevAt = performance.now();

  /**
   * Sample for `nodeId`, reading the agent's work `counters` (zeros when omitted); uptime
   * counts from `startedAt` (ms since the epoch).
   */
  constructor(nodeId: string, counters?: () => WorkCounters, startedAt = Date.now()) {
    this.#nodeId = nodeId;
    this.#counters = counters ??
      (() => ({
        activeSessions: 0,
        activeRequests: 0,
        tokensGeneratedTotal: 0,
        framesProcessedTotal: 0,
      }));
    this.#startedAt = startedAt;
    this.#prevTokens = this.#counters().tokensGeneratedTotal;
  }

  /** Take a sample now. */
  sample(): NodeMetrics {
    const cpu = cpuTimes();
    const dBusy = cpu.busy - this.#prevCpu.busy;
    const dTotal = cpu.total - this.#prevCpu.total;
    this.#prevCpu = cpu;
    const now = performance.now();
    const c = this.#counters();
    const seconds = (now - this.#prevAt) / 1000;
    const tps = seconds > 0 ? (c.tokensGeneratedTotal - this.#prevTokens) / seconds : 0;
    this.#prevAt = now;
    this.#prevTokens = c.tokensGeneratedTotal;
    const mem = Deno.systemMemoryInfo();
    const [l1, l5, l15] = loadavg();
    return create(NodeMetricsSchema, {
      nodeId: this.#nodeId,
      timestampUnixMs: BigInt(Date.now()),
      cpuPercent: dTotal > 0 ? Math.min(100, Math.max(0, (100 * dBusy) / dTotal)) : 0,
      loadAverage1m: l1,
      loadAverage5m: l5,
      loadAverage15m: l15,
      memoryTotalBytes: BigInt(mem.total),
      memoryAvailableBytes: BigInt(mem.available),
      processResidentBytes: BigInt(Deno.memoryUsage().rss),
      uptimeSeconds: (Date.now() - this.#startedAt) / 1000,
      activeSessions: c.activeSessions,
      activeRequests: c.activeRequests,
      tokensGeneratedTotal: BigInt(c.tokensGeneratedTotal),
      tokensPerSecond: tps,
      framesProcessedTotal: BigInt(c.framesProcessedTotal),
    });
  }
}
