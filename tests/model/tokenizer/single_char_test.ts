/**
 * Every single-character input class (each ASCII character, Latin-1, combining marks, CJK, RTL,
 * emoji, private use, BOM, the Unicode spaces) and whitespace-only inputs (each whitespace
 * character, every pair, longer runs) tokenize as llama.cpp tokenizes them, on the four vocab
 * fixtures. Expected ids: single_char_cases.json (made_with says how); issue 16 item 18.
 */
import { assertEquals } from "../../support/assert.ts";
import { llmctlJson } from "../../support/cli.ts";
import { assertEncodesAll, FIXTURES, loadTokenizer, VOCABS } from "./helpers.ts";

const ref: { cases: string[]; expected: Record<string, number[][]> } = JSON.parse(
  await Deno.readTextFile(new URL("./single_char_cases.json", import.meta.url)),
);

for (const vocab of VOCABS) {
  Deno.test(`${vocab}: single characters and whitespace-only inputs as llama.cpp`, async () => {
    const tok = await loadTokenizer(`vocab/ggml-vocab-${vocab}.gguf`);
    assertEncodesAll(tok, ref.cases, ref.expected[vocab], vocab);
  });
}

Deno.test("llmctl tokenize --text-file and stdin: a lone \\r gives llama.cpp's token", async () => {
  // An argv of "\r" reaches Deno as "" (so --text "\r" printed no tokens): files carry it exactly.
  const dir = await Deno.makeTempDir();
  try {
    for (const vocab of VOCABS) {
      const model = `${FIXTURES}/vocab/ggml-vocab-${vocab}.gguf`;
      // Whitespace-only texts in the other vocabularies run in process above; one spawn each.
      for (const text of vocab === "llama-spm" ? ["\r", "\t \n \r"] : ["\r"]) {
        const i = ref.cases.indexOf(text);
        const path = `${dir}/case.txt`;
        await Deno.writeTextFile(path, text);
        const out = await llmctlJson([
          "tokenize",
          "-m",
          model,
          "--text-file",
          path,
          "--no-bos",
          "--json",
        ]);
        assertEquals(out.tokens, ref.expected[vocab][i], `${vocab} ${JSON.stringify(text)}`);
      }
    }
    // stdin: "-"
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "cli/llmctl.ts",
        "tokenize",
        "-m",
        `${FIXTURES}/vocab/ggml-vocab-qwen2.gguf`,
        "-f",
        "-",
        "--json",
      ],
      cwd: new URL("../../..", import.meta.url),
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode("\r"));
    await w.close();
    const { stdout } = await child.output();
    assertEquals(JSON.parse(new TextDecoder().decode(stdout)).tokens, [201]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
