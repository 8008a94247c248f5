/** `llmctl tokenize`: text → token ids with a model's tokenizer (reads only the metadata). */
import { Command } from "@commander-js/extra-typings";
import { openModelFile } from "../../model/engine.ts";
import { tokenizerFromMetadata } from "../../model/tokenizer/mod.ts";
import { DEFAULT_MODEL, printJson } from "../common.ts";

/** Build the `tokenize` command. */
export function tokenizeCommand() {
  return new Command("tokenize")
    .description("show the token ids of a text")
    .option("-m, --model <path>", "GGUF model file", DEFAULT_MODEL)
    .requiredOption("-t, --text <text>", "text to tokenize")
    .option("--no-bos", "do not prepend BOS even if the model asks for it")
    .option("--parse-special", "treat special-token text (e.g. <s>) as the special token")
    .option("--json", "print one JSON object")
    .action(async (opts) => {
      const file = await openModelFile(opts.model);
      try {
        const tok = tokenizerFromMetadata(file.metadata);
        const ids = Array.from(
          tok.encode(opts.text, {
            addBos: opts.bos ? tok.addBos : false,
            parseSpecial: opts.parseSpecial ?? false,
          }),
        );
        if (opts.json) {
          printJson({ tokens: ids });
        } else {
          for (const id of ids) {
            console.log(`${String(id).padStart(7)}  ${JSON.stringify(tok.decode([id]))}`);
          }
        }
      } finally {
        file.close();
      }
    });
}
