/** `llmctl tokenize`: text → token ids with a model's tokenizer (reads only the metadata). */
import { Command } from "@commander-js/extra-typings";
import { openModelFile } from "../../model/engine.ts";
import { tokenizerFromMetadata } from "../../model/tokenizer/mod.ts";
import { CliError } from "../client.ts";
import { DEFAULT_MODEL, ExitCode, printJson } from "../common.ts";
import { localModelPath, refuseEndpoint } from "./model_options.ts";

/** The text to tokenize: `--text`, or the bytes of `--text-file` (`-` = stdin), exactly. */
async function readText(opts: { text?: string; textFile?: string }): Promise<string> {
  if ((opts.text === undefined) === (opts.textFile === undefined)) {
    throw new CliError("give the text with exactly one of --text and --text-file", ExitCode.usage);
  }
  if (opts.text !== undefined) return opts.text;
  let bytes: Uint8Array;
  try {
    bytes = opts.textFile === "-"
      ? new Uint8Array(await new Response(Deno.stdin.readable).arrayBuffer())
      : await Deno.readFile(opts.textFile!);
  } catch (e) {
    throw new CliError(`cannot read --text-file ${opts.textFile}: ${(e as Error).message}`);
  }
  // Bytes as llama-tokenize --file reads them: no newline trimmed, a BOM kept as text.
  return new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
}

/** Build the `tokenize` command. */
export function tokenizeCommand() {
  return new Command("tokenize")
    .description("show the token ids of a text")
    .option("-m, --model <path>", "GGUF model file or hf: reference (pulled first)", DEFAULT_MODEL)
    .option("-t, --text <text>", "text to tokenize")
    .option(
      "-f, --text-file <path>",
      "tokenize this file's bytes exactly (- = stdin); for text an argument cannot carry, such " +
        "as a lone carriage return",
    )
    .option("--no-bos", "do not prepend BOS even if the model asks for it")
    .option("--parse-special", "treat special-token text (e.g. <s>) as the special token")
    .option("--json", "print one JSON object")
    .action(async (opts, cmd) => {
      refuseEndpoint(cmd, "tokenize");
      const text = await readText(opts);
      const file = await openModelFile(await localModelPath(opts.model));
      try {
        const tok = tokenizerFromMetadata(file.metadata);
        const ids = Array.from(
          tok.encode(text, {
            addBos: opts.bos ? tok.addBos : false,
            parseSpecial: opts.parseSpecial ?? false,
          }),
        );
        if (opts.json) {
          printJson({ tokens: ids });
        } else {
          // Each token's own piece, as llama-tokenize prints it: decode() of one id drops the
          // leading space SentencePiece marks a word start with, so " w" and "w" looked alike.
          const td = new TextDecoder();
          for (const id of ids) {
            console.log(
              `${String(id).padStart(7)}  ${JSON.stringify(td.decode(tok.tokenPiece(id)))}`,
            );
          }
        }
      } finally {
        file.close();
      }
    });
}
