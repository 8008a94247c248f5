/**
 * `llmctl generate`: tokenize a prompt, generate text, stream it (or print one JSON object).
 *
 * Without `--endpoint` (or DLLM_ENDPOINT) the model runs here, in this process, through the same
 * head and tail sampler an agent runs (cluster/pipeline Engine: a chain of one in-process
 * stage). With it, the agent at the endpoint heads the request through the cluster's chain
 * (InferenceService.Generate) and tokens stream back as they are sampled. Defaults: one object,
 * model/sampling_defaults.ts.
 */
import {
  FinishReason,
  type GenerateResponse,
  type GenerateUsage,
  type Placement,
} from "../../proto/mod.ts";
import { topPOf } from "../../model/sampler.ts";
import { CliError, connect, endpointGiven, type GlobalOptions, streamCut } from "../client.ts";
import {
  abortOnSigint,
  ExitCode,
  Interrupted,
  intOption,
  numberOption,
  printJson,
  writeOut,
} from "../common.ts";
import {
  clusterModelName,
  modelCommandBase,
  openEngine,
  refuseLocalOptions,
} from "./model_options.ts";
import { SAMPLING_DEFAULTS as D } from "../../model/sampling_defaults.ts";

/** Build the `generate` command. */
export function generateCommand() {
  return modelCommandBase("generate")
    .description(
      "generate text from a prompt: with a local model, or through the cluster with --endpoint",
    )
    .option("-p, --prompt <text>", "prompt text", "")
    .option("-n, --max-tokens <n>", "tokens to generate", intOption(1, 2 ** 31 - 1), 128)
    .option("--temperature <t>", "0 = greedy", numberOption(0, 100), D.temperature)
    .option("--top-k <k>", "keep the k most likely tokens (0 = off)", intOption(0, 2 ** 20), D.topK)
    .option(
      "--top-p <p>",
      "nucleus sampling mass (1 = off, 0 = the most probable token only)",
      numberOption(0, 1),
      D.topP,
    )
    .option(
      "--min-p <p>",
      "drop tokens below p × the top probability",
      numberOption(0, 1),
      D.minP,
    )
    .option(
      "--repeat-penalty <x>",
      "penalty for recent tokens (1 = off)",
      numberOption(0.01, 100),
      D.repeatPenalty,
    )
    .option("--seed <n>", "RNG seed (same seed, same output)", intOption(0, 2 ** 32 - 1))
    .option("--ignore-eos", "keep generating past end-of-sequence tokens (local model only)")
    .option("--json", "print one JSON object instead of streaming text")
    .addHelpText(
      "after",
      `
Local:   llmctl generate -p "Once upon a time" -n 64
Cluster: llmctl generate --endpoint 10.0.0.5:7950 -p "Once upon a time" -n 64
--json prints {"model","prompt_tokens","tokens","text","finish_reason","timings":{...}}; through
the cluster prompt_tokens (the ids) is omitted, since the head tokenizes, and
"prompt_token_count", "endpoint", "placement" and "recoveries" are added.`,
    )
    .action(async (opts, cmd) => {
      const g = cmd.optsWithGlobals() as GlobalOptions;
      if (endpointGiven(g)) {
        refuseLocalOptions(cmd);
        await generateRemote(opts, g, cmd.getOptionValueSource("model") === "cli");
        return;
      }
      const engine = await openEngine(opts);
      // Ctrl-C ends the generation between tokens: what came is printed with its figures, and
      // llmctl exits 130, as through an agent (and as llama.cpp's tools do).
      const abort = new AbortController();
      const stopListening = abortOnSigint(abort);
      try {
        // Like llama.cpp, echo the prompt so the streamed continuation reads as one text: once
        // it is known to fit, so a prompt the model refuses (too long for the context) leaves
        // only the error, not the prompt and the error on one line.
        const t0 = performance.now();
        const result = await engine.generate({
          prompt: opts.prompt,
          maxTokens: opts.maxTokens,
          stopAtEog: !opts.ignoreEos,
          sampler: {
            temperature: opts.temperature,
            topK: opts.topK,
            topP: topPOf(opts.topP),
            minP: opts.minP,
            repeatPenalty: opts.repeatPenalty,
            seed: opts.seed,
          },
          onStart: opts.json ? undefined : () => writeOut(opts.prompt),
          onToken: opts.json ? undefined : (_id, text) => writeOut(text),
          signal: abort.signal,
        });
        const decodeTps = result.tokens.length > 0 && result.decodeMs > 0
          ? result.tokens.length / (result.decodeMs / 1000)
          : 0;
        if (opts.json) {
          printJson({
            model: opts.model,
            prompt_tokens: result.promptTokens,
            tokens: result.tokens,
            text: result.text,
            finish_reason: result.finishReason,
            timings: {
              prompt_ms: round(result.promptMs),
              decode_ms: round(result.decodeMs),
              decode_tokens_per_second: round(decodeTps),
            },
          });
        } else if (result.finishReason === "cancelled" && result.tokens.length === 0) {
          writeOut("\n");
          console.error(cancelledEarly(performance.now() - t0));
        } else {
          writeOut("\n");
          console.error(
            `${result.promptTokens.length} prompt tokens in ${round(result.promptMs)} ms, ` +
              `${result.tokens.length} tokens at ${
                round(decodeTps)
              } tokens/s (${engine.stage.backend.name})` +
              (result.finishReason === "cancelled" ? ", cancelled" : ""),
          );
        }
      } finally {
        stopListening();
        engine.close();
      }
      if (abort.signal.aborted) throw new Interrupted();
    });
}

interface RemoteOptions {
  model: string;
  prompt: string;
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  seed?: number;
  ignoreEos?: true;
  json?: true;
}

/** "stop", "length", "stop" (sequence) or "cancelled", as the local JSON says it. */
export function finishName(r: FinishReason): string {
  return r === FinishReason.LENGTH ? "length" : r === FinishReason.CANCELLED ? "cancelled" : "stop";
}

async function generateRemote(opts: RemoteOptions, g: GlobalOptions, modelGiven: boolean) {
  if (opts.ignoreEos) {
    throw new CliError(
      "--ignore-eos works only with a local model (drop --endpoint / DLLM_ENDPOINT)",
      ExitCode.usage,
    );
  }
  const agent = await connect(g);
  const abort = new AbortController();
  const stopListening = abortOnSigint(abort);
  const t0 = performance.now();
  let firstAt = 0;
  const tokens: number[] = [];
  let text = "";
  let placement: Placement | undefined;
  let finish = FinishReason.UNSPECIFIED;
  let usage: GenerateUsage | undefined;
  // The prompt is echoed with the first answer: echoed before it, an agent's refusal (no
  // placement, unknown model) printed after the prompt on the same line, and stdout held a
  // prompt that nothing continued.
  let echoed = opts.json === true;
  /** One message of the stream: echo, count, print. */
  const take = (m: GenerateResponse): void => {
    if (!echoed) {
      echoed = true;
      writeOut(opts.prompt);
    }
    if (m.placement) placement = m.placement;
    if (m.finishReason) {
      finish = m.finishReason;
      usage = m.usage;
    } else {
      if (tokens.length === 0) firstAt = performance.now();
      tokens.push(m.tokenId);
    }
    text += m.text;
    if (!opts.json && m.text) writeOut(m.text);
  };
  try {
    await agent.ready(abort.signal);
    await agent.call(async (c) => {
      const stream = c.inference.generate({
        model: modelGiven ? clusterModelName(opts.model) : "",
        prompt: opts.prompt,
        maxTokens: opts.maxTokens,
        sampler: {
          temperature: opts.temperature,
          topK: opts.topK,
          topP: topPOf(opts.topP),
          minP: opts.minP,
          repeatPenalty: opts.repeatPenalty,
          seed: opts.seed === undefined ? undefined : BigInt(opts.seed),
        },
      }, { signal: abort.signal });
      let received = 0;
      try {
        for await (const m of stream) {
          received++;
          take(m);
        }
      } catch (e) {
        // Keepalive PINGs unanswered after 1100 tokens read as "no agent at …, start one".
        throw (abort.signal.aborted ? undefined : streamCut(e, c.endpoint, received)) ?? e;
      }
    });
  } catch (e) {
    if (abort.signal.aborted) finish = FinishReason.CANCELLED;
    else {
      // A failure mid-stream starts its message on a line of its own.
      if (echoed && !opts.json) writeOut("\n");
      throw e;
    }
  } finally {
    stopListening();
    agent.close();
  }
  const end = performance.now();
  // One clock for all three figures: the agent's when it sent them (the rate it measured, and
  // the decode time that rate implies), else this client's. The decode time was this client's
  // beside the agent's rate (16 tokens in 19.4 ms "at 952 tokens/s").
  const agentDecodeMs = usage && usage.completionTokens > 1 && usage.decodeTokensPerSecond > 0
    ? (usage.completionTokens - 1) / usage.decodeTokensPerSecond * 1000
    : undefined;
  const promptMs = usage?.timeToFirstTokenMs ?? (firstAt ? firstAt - t0 : end - t0);
  const decodeMs = agentDecodeMs ?? (usage ? 0 : firstAt ? end - firstAt : 0);
  const tps = usage?.decodeTokensPerSecond ??
    (tokens.length > 1 ? (tokens.length - 1) / (decodeMs / 1000) : 0);
  if (opts.json) {
    printJson({
      model: placement?.model ?? (modelGiven ? clusterModelName(opts.model) : ""),
      prompt_token_count: usage?.promptTokens ?? null,
      tokens,
      text,
      finish_reason: finishName(finish),
      timings: {
        prompt_ms: round(promptMs),
        decode_ms: round(decodeMs),
        decode_tokens_per_second: round(tps),
      },
      endpoint: agent.endpoint,
      placement: (placement?.stages ?? []).map((s) => ({
        node: s.nodeId,
        from: s.fromLayer,
        to: s.toLayer,
      })),
      recoveries: usage?.recoveries ?? 0,
    });
  } else {
    if (echoed) writeOut("\n");
    if (finish === FinishReason.CANCELLED && tokens.length === 0) {
      console.error(cancelledEarly(end - t0));
    } else {
      const stages = (placement?.stages ?? []).map((s) =>
        `${s.nodeId}[${s.fromLayer},${s.toLayer})`
      );
      console.error(
        // A cancelled stream ends before the agent's counts: the prompt's is then unknown.
        (usage ? `${usage.promptTokens} prompt tokens, ` : "") +
          `first token after ${round(promptMs)} ms, ` +
          `${tokens.length} tokens at ${round(tps)} tokens/s via ${agent.endpoint}` +
          (stages.length ? ` (${stages.join(" → ")})` : "") +
          (usage?.recoveries ? `, ${usage.recoveries} recoveries` : "") +
          (finish === FinishReason.CANCELLED ? ", cancelled" : ""),
      );
    }
  }
  if (abort.signal.aborted) throw new Interrupted();
}

/** What Ctrl-C before the first token prints, `ms` after the request began. */
function cancelledEarly(ms: number): string {
  return `cancelled before the first token, after ${round(ms)} ms`;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
