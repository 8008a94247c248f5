/** llama.cpp's tokenizer test files (test-tokenizer-0 format): every case, exact ids. */
import { assertEquals } from "../../support/assert.ts";
import { vocabCases, VOCABS, vocabTokenizer } from "./helpers.ts";

for (const name of VOCABS) {
  Deno.test(`vocab ${name}: every fixture case matches llama.cpp`, async () => {
    const tok = await vocabTokenizer(name);
    const cases = await vocabCases(name);
    const failures: string[] = [];
    for (const c of cases) {
      const got = tok.encode(c.text, { addBos: false, addEos: false, parseSpecial: false });
      if (JSON.stringify(got) !== JSON.stringify(c.ids)) {
        failures.push(
          `${JSON.stringify(c.text)}\n  want ${c.ids.join(" ")}\n  got  ${got.join(" ")}`,
        );
      }
    }
    assertEquals(failures, [], `${failures.length}/${cases.length} cases differ`);
  });
}
