/** The generator reads llama.cpp's unicode-data.cpp layout and refuses tables unicode.ts can't use. */
import { assertEquals, assertThrows } from "../../support/assert.ts";
import { parseUnicodeData, renderTable } from "../../../model/tokenizer/gen_unicode_table.ts";
import { LLAMA_CPP_COMMIT, RANGES_FLAGS } from "../../../model/tokenizer/unicode_table.ts";

const cpp = (ranges: string) =>
  `const std::initializer_list<std::pair<uint32_t, uint16_t>> unicode_ranges_flags = {  // start, flags
${ranges}
};

const std::unordered_set<uint32_t> unicode_set_whitespace = {
0x000020,
0x000009,
};
`;

Deno.test("parseUnicodeData: ranges and whitespace as llama.cpp writes them", () => {
  const { ranges, whitespace } = parseUnicodeData(
    cpp("{0x000000, 0x0080},\n{0x000020, 0x0008},\n{0x000041, 0x0004},\n{0x110000, 0x0000},"),
  );
  assertEquals(ranges, [[0, 0x80], [0x20, 8], [0x41, 4], [0x110000, 0]]);
  assertEquals(whitespace, [0x09, 0x20]);
  const ts = renderTable(ranges, whitespace, "abc");
  assertEquals(ts.includes("0x0, 0x80, 0x20, 0x8, 0x41, 0x4,\n"), true, ts);
  assertEquals(ts.includes('export const LLAMA_CPP_COMMIT = "abc";'), true, ts);
});

Deno.test("parseUnicodeData: refuses a range with two categories or no end", () => {
  assertThrows(
    () => parseUnicodeData(cpp("{0x000000, 0x0006},\n{0x110000, 0x0000},")),
    Error,
    "not one category",
  );
  assertThrows(
    () => parseUnicodeData(cpp("{0x000000, 0x0001},\n{0x000020, 0x0008},")),
    Error,
    "must end at 0x110000",
  );
});

Deno.test("the committed table is llama.cpp 80fb11a's", () => {
  assertEquals(LLAMA_CPP_COMMIT.slice(0, 7), "80fb11a");
  assertEquals(RANGES_FLAGS.length, 2 * 2272);
});
