/**
 * A model's footprint counts every tensor a stage will hold: for a mixture of experts, all
 * experts of each layer (a stage holds them all, though a token uses only a few), router included.
 */
import { footprintFromIndex } from "../../../cluster/placement/mod.ts";
import { openGGUF } from "../../../model/gguf/mod.ts";
import { configFromFile } from "../../../model/config.ts";
import { FIXTURES } from "../../support/paths.ts";
import { assertEquals } from "../../support/assert.ts";

Deno.test("footprint of qwen3moe holds all experts of every layer", async () => {
  const file = await openGGUF(`${FIXTURES}/models/qwen3moe-f32.gguf`);
  try {
    const config = configFromFile(file);
    const fp = footprintFromIndex(file, config.nLayers, 0);
    for (let l = 0; l < config.nLayers; l++) {
      const tensors = file.tensors.filter((t) => t.name.startsWith(`blk.${l}.`));
      const experts = tensors.filter((t) => /_exps\.weight$/.test(t.name));
      // gate, up and down of every expert, stored as 3-D tensors [.., .., n_expert]
      assertEquals(experts.length, 3);
      for (const t of experts) assertEquals(t.dims[2], config.nExperts);
      const want = tensors.reduce((s, t) => s + (t.nBytes ?? 0), 0);
      assertEquals(fp.layerBytes[l], want);
      const expertBytes = experts.reduce((s, t) => s + (t.nBytes ?? 0), 0);
      if (!(expertBytes > fp.layerBytes[l] / 2)) {
        throw new Error(`layer ${l}: experts ${expertBytes} of ${fp.layerBytes[l]} bytes`);
      }
    }
  } finally {
    file.close();
  }
});
