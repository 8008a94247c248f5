/** `llmctl generate`: tokenize a prompt, generate text, stream it (or print one JSON object). */
import { intOption, numberOption, printJson, writeOut } from "../common.ts";
import { modelCommandBase, openEngine } from "./model_options.ts";

/** Build the `generate` command. */
export function generateCommand() {
  return modelCommandBase("generate")
    .description("generate text from a prompt with a local model")
    .option("-p, --prompt <text>", "prompt text", "")
    .option("-n, --max-tokens <n>", "tokens to generate", intOption(1), 128)
    .option("--temperature <t>", "0 = greedy", numberOption(0, 100), 0.8)
    .option("--top-k <k>", "keep the k most likely tokens (0 = off)", intOption(0), 40)
    .option("--top-p <p>", "nucleus sampling mass (1 = off)", numberOption(0.0001, 1), 0.95)
    .option("--min-p <p>", "drop tokens below p × the top probability", numberOption(0, 1), 0.05)
    .option(
      "--repeat-penalty <x>",
      "penalty for recent tokens (1 = off)",
      numberOption(0.01, 100),
      1,
    )
    .option("--seed <n>", "RNG seed (same seed, same output)", intOption(0, 2 ** 32 - 1))
    .option("--ignore-eos", "keep generating past end-of-sequence tokens")
    .option("--json", "print one JSON object instead of streaming text")
    .action(async (opts) => {
      const engine = await openEngine(opts);
      try {
        // Like llama.cpp, echo the prompt so the streamed continuation reads as one text.
        if (!opts.json) writeOut(opts.prompt);
        const result = await engine.generate({
          prompt: opts.prompt,
          maxTokens: opts.maxTokens,
          stopAtEog: !opts.ignoreEos,
          sampler: {
            temperature: opts.temperature,
            topK: opts.topK,
            topP: opts.topP,
            minP: opts.minP,
            repeatPenalty: opts.repeatPenalty,
            seed: opts.seed,
          },
          onToken: opts.json ? undefined : (_id, text) => writeOut(text),
        });
        const decodeTps = result.tokens.length / (result.decodeMs / 1000);
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
        } else {
          writeOut("\n");
          console.error(
            `${result.promptTokens.length} prompt tokens in ${round(result.promptMs)} ms, ` +
              `${result.tokens.length} tokens at ${
                round(decodeTps)
              } tokens/s (${engine.stage.backend.name})`,
          );
        }
      } finally {
        engine.close();
      }
    });
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
