import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { candidateFor, goldenFiles } from "../../support/golden.ts";
import { FIXTURES } from "../../support/paths.ts";
for (const name of goldenFiles()) {
  const g = JSON.parse(await Deno.readTextFile(`${FIXTURES}/golden/${name}`));
  const c = await candidateFor({ ...g, n_predict: 1 }, createReferenceBackend());
  let md = 0;
  for (const t of g.top5) md = Math.max(md, Math.abs(c.logits[t.id] - t.logit));
  console.log(name.padEnd(32), md.toExponential(2));
}
