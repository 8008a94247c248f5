/** `llmctl eval`: the top-k next-token logits after a prompt. */
import { intOption, printJson } from "../common.ts";
import { modelCommandBase, openEngine, refuseEndpoint } from "./model_options.ts";

/** Build the `eval` command. */
export function evalCommand() {
  return modelCommandBase("eval")
    .description("print the most likely next tokens after a prompt, with logits")
    .option("-p, --prompt <text>", "prompt text", "")
    .option("--top <k>", "how many candidates", intOption(1, 1000), 5)
    .option("--no-bos", "do not prepend BOS even if the model asks for it")
    .option("--json", "print one JSON object")
    .action(async (opts, cmd) => {
      refuseEndpoint(cmd, "eval");
      const engine = await openEngine(opts);
      try {
        const tokens = engine.tokenize(opts.prompt, opts.bos ? undefined : false);
        if (tokens.length === 0) throw new Error("nothing to evaluate: the prompt has no tokens");
        const top = await engine.evaluate(tokens, opts.top);
        if (opts.json) {
          printJson({ prompt_tokens: tokens, top });
        } else {
          // The token's own piece, leading space included (decode() of one id drops it).
          const td = new TextDecoder();
          const dec = (id: number) => JSON.stringify(td.decode(engine.tokenizer.tokenPiece(id)));
          console.log(`${tokens.length} prompt tokens; next token:`);
          for (const t of top) {
            console.log(
              `  ${String(t.id).padStart(7)}  ${t.logit.toFixed(4).padStart(10)}  ` +
                `${t.logprob.toFixed(4).padStart(10)}  ${dec(t.id)}`,
            );
          }
        }
      } finally {
        engine.close();
      }
    });
}
