/**
 * Time between streamed tokens of one completion through an agent's OpenAI API, alone and while
 * another client sends long prompts back to back: what a running chat sees when new users
 * arrive (issue 19: at most 3× its own time between tokens). `bench api --prompt-load N` runs it.
 *
 * @module
 */

/** Where and how to reach the API. */
export interface ApiTarget {
  base: string;
  headers: Record<string, string>;
  model: string;
}

/** Gaps in ms between the streamed chunks that carry text, after the first. */
export async function streamGaps(t: ApiTarget, prompt: string, maxTokens: number) {
  const res = await fetch(`${t.base}/v1/completions`, {
    method: "POST",
    headers: t.headers,
    body: JSON.stringify({
      model: t.model,
      prompt,
      max_tokens: maxTokens,
      temperature: 0,
      stream: true,
      // Every token a chunk of its own: text alone may hold one back (an unfinished UTF-8
      // character, a possible stop sequence), which would read as a burst.
      logprobs: 1,
    }),
  });
  if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const gaps: number[] = [];
  let last = 0;
  let buf = "";
  const decoder = new TextDecoder();
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk, { stream: true });
    for (let i = buf.indexOf("\n\n"); i >= 0; i = buf.indexOf("\n\n")) {
      const event = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
      const now = performance.now();
      if (last) gaps.push(now - last);
      last = now;
    }
  }
  return gaps;
}

/** One greedy token for `prompt`; the answer's usage object. Throws on an HTTP error. */
async function oneToken(t: ApiTarget, prompt: string): Promise<{ prompt_tokens: number }> {
  const res = await fetch(`${t.base}/v1/completions`, {
    method: "POST",
    headers: t.headers,
    body: JSON.stringify({ model: t.model, prompt, max_tokens: 1, temperature: 0 }),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${JSON.stringify(body)}`);
  return body.usage;
}

/** Long prompts with one token each, back to back until `stop` resolves. */
export async function promptLoad(
  t: ApiTarget,
  prompt: string,
  stop: Promise<unknown>,
): Promise<{ prompts: number; promptTokens: number }> {
  let done = false;
  stop.finally(() => (done = true));
  let prompts = 0;
  let promptTokens = 0;
  while (!done) {
    promptTokens = (await oneToken(t, prompt)).prompt_tokens;
    prompts++;
  }
  return { prompts, promptTokens };
}

/** p-th percentile of sorted values (NaN for none); `bench api` reads its latencies with it. */
export function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** Gap statistics (ms): p50, p90, p99, max. */
export function gapStats(gaps: number[]) {
  const s = [...gaps].sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 10) / 10;
  return { p50: r(pct(s, 50)), p90: r(pct(s, 90)), p99: r(pct(s, 99)), max: r(s.at(-1) ?? NaN) };
}

/**
 * One stream of `tokens` tokens alone, then one while long prompts arrive: their gap statistics
 * and the ratios of the loaded p90 and max to the lone ones.
 */
export async function interference(t: ApiTarget, loadTokens: number, tokens: number) {
  const short = "Once upon a time";
  // A long prompt of about `loadTokens` tokens: the sentence's own count says how many.
  const sentence = "Once upon a time there was a little robot who wanted to learn to paint.";
  const per = Math.max(1, (await oneToken(t, sentence)).prompt_tokens);
  const longPrompt = Array(Math.max(1, Math.round(loadTokens / per))).fill(sentence).join(" ");
  await streamGaps(t, short, 8); // warm-up
  const alone = gapStats(await streamGaps(t, short, tokens));
  const stream = streamGaps(t, short, tokens);
  const load = promptLoad(t, longPrompt, stream);
  const loaded = gapStats(await stream);
  const { prompts, promptTokens } = await load;
  return {
    stream_tokens: tokens,
    load_prompt_tokens: promptTokens,
    load_prompts_during_stream: prompts,
    gap_ms_alone: alone,
    gap_ms_while_prompts_arrive: loaded,
    // Like for like: the agent flushes a token late now and then (two arrive together after
    // a longer gap, alone too), so p50 alone understates a gap and p90 is the fair reading.
    p90_loaded_vs_p90_alone: Math.round((loaded.p90 / alone.p90) * 100) / 100,
    max_loaded_vs_max_alone: Math.round((loaded.max / alone.max) * 100) / 100,
  };
}
