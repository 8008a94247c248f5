/** bench/lib/pass_stats.ts: batch sizes over a window from two /metrics scrapes. */
import { parsePassScrape, passStats } from "../../bench/lib/pass_stats.ts";
import { assertEquals } from "../support/assert.ts";

/** A scrape of an agent whose passes ran these rows and sequences (its label set included). */
function exposition(passes: { rows: number; sequences: number }[]): string {
  const bounds = [1, 2, 4, 8, 16, 32];
  const lines = bounds.map((b) =>
    `distributed_llm_stage_pass_rows_bucket{le="${b}",node="a"} ${
      passes.filter((p) => p.rows <= b).length
    }`
  );
  lines.push(`distributed_llm_stage_pass_rows_bucket{le="+Inf",node="a"} ${passes.length}`);
  lines.push(
    `distributed_llm_stage_pass_rows_sum{node="a"} ${passes.reduce((a, p) => a + p.rows, 0)}`,
  );
  lines.push(`distributed_llm_stage_pass_rows_count{node="a"} ${passes.length}`);
  lines.push(
    `distributed_llm_stage_pass_sequences_sum{node="a"} ${
      passes.reduce((a, p) => a + p.sequences, 0)
    }`,
  );
  lines.push("# HELP unrelated_total x", "unrelated_total 5");
  return lines.join("\n") + "\n";
}

Deno.test("pass stats: the window's passes, mean rows and sequences, p50 / p90 bucket bounds", () => {
  const early = [{ rows: 30, sequences: 1 }];
  const window = [
    ...Array.from({ length: 8 }, () => ({ rows: 3, sequences: 3 })),
    { rows: 16, sequences: 16 },
    { rows: 20, sequences: 2 },
  ];
  const before = parsePassScrape(exposition(early));
  const after = parsePassScrape(exposition([...early, ...window]));
  assertEquals(passStats(before, after), {
    passes: 10,
    rows_per_pass_mean: 6,
    rows_per_pass_p50: 4,
    rows_per_pass_p90: 16,
    sequences_per_pass_mean: 4.2,
  });
});

Deno.test("pass stats: none without both scrapes or without passes in the window", () => {
  const s = parsePassScrape(exposition([{ rows: 1, sequences: 1 }]));
  assertEquals(passStats(undefined, s), null);
  assertEquals(passStats(s, s), null);
  assertEquals(parsePassScrape("garbage\n{}\n").passes, 0);
});
