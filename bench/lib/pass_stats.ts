/**
 * Batch sizes of an agent's passes over a window, from two scrapes of its /metrics: the
 * `distributed_llm_stage_pass_rows` and `…_pass_sequences` histograms (cluster/telemetry/metrics.ts).
 * `bench api` prints them per client count, so a batching gain (or its absence) can be read
 * against how many rows and sequences each pass really ran.
 */

/** One scrape of the pass histograms, summed over label sets. */
export interface PassScrape {
  /** Cumulative bucket counts of rows per pass, by upper bound (`le`). */
  rowBuckets: Map<number, number>;
  rowsSum: number;
  passes: number;
  sequencesSum: number;
}

/** Batch sizes over a window. */
export interface PassStats {
  passes: number;
  rows_per_pass_mean: number;
  /** Bucket bounds (powers of two) that the median and p90 pass reach. */
  rows_per_pass_p50: number;
  rows_per_pass_p90: number;
  sequences_per_pass_mean: number;
}

/** Parse the pass histograms out of a Prometheus text exposition. */
export function parsePassScrape(text: string): PassScrape {
  const out: PassScrape = { rowBuckets: new Map(), rowsSum: 0, passes: 0, sequencesSum: 0 };
  for (const line of text.split("\n")) {
    const m =
      /^(distributed_llm_stage_pass_(?:rows|sequences)_(?:bucket|sum|count))(\{[^}]*\})? (\S+)$/
        .exec(line);
    if (!m) continue;
    const [, name, labels = "", raw] = m;
    const v = Number(raw);
    if (!Number.isFinite(v)) continue;
    if (name === "distributed_llm_stage_pass_rows_bucket") {
      const le = /le="([^"]+)"/.exec(labels)?.[1];
      const bound = le === "+Inf" ? Infinity : Number(le);
      if (le === undefined || Number.isNaN(bound)) continue;
      out.rowBuckets.set(bound, (out.rowBuckets.get(bound) ?? 0) + v);
    } else if (name === "distributed_llm_stage_pass_rows_sum") out.rowsSum += v;
    else if (name === "distributed_llm_stage_pass_rows_count") out.passes += v;
    else if (name === "distributed_llm_stage_pass_sequences_sum") out.sequencesSum += v;
  }
  return out;
}

/** Scrape `url` (an agent's /metrics); undefined when it cannot be read. */
export async function scrapePasses(url: string): Promise<PassScrape | undefined> {
  try {
    const res = await fetch(url);
    if (!res.ok) {
      await res.body?.cancel();
      return undefined;
    }
    return parsePassScrape(await res.text());
  } catch {
    return undefined;
  }
}

/** The passes between two scrapes; null when either is missing or none ran. */
export function passStats(before?: PassScrape, after?: PassScrape): PassStats | null {
  if (!before || !after) return null;
  const passes = after.passes - before.passes;
  if (passes <= 0) return null;
  const bounds = [...after.rowBuckets.keys()].sort((a, b) => a - b);
  /** The smallest bucket bound holding at least fraction q of the window's passes. */
  const reach = (q: number) => {
    for (const b of bounds) {
      const n = (after.rowBuckets.get(b) ?? 0) - (before.rowBuckets.get(b) ?? 0);
      if (n >= q * passes) return b;
    }
    return Infinity;
  };
  const r2 = (x: number) => Math.round(x * 100) / 100;
  return {
    passes,
    rows_per_pass_mean: r2((after.rowsSum - before.rowsSum) / passes),
    rows_per_pass_p50: reach(0.5),
    rows_per_pass_p90: reach(0.9),
    sequences_per_pass_mean: r2((after.sequencesSum - before.sequencesSum) / passes),
  };
}
