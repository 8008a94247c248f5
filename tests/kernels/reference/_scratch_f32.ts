import { createReferenceBackend } from "../../../kernels/reference/mod.ts";
import { candidateFor } from "../../support/golden.ts";
import { FIXTURES } from "../../support/paths.ts";
for (const p of ["p1", "p2", "p3"]) {
  const name = `tiny-f32__${p}`;
  const g = JSON.parse(await Deno.readTextFile(`${FIXTURES}/golden/${name}.json`));
  const c = await candidateFor({ ...g, n_predict: 1 }, createReferenceBackend());
  const ref = new Float32Array((await Deno.readFile(`${FIXTURES}/golden/${g.last_logits_file}`)).buffer);
  let md = 0, exact = 0;
  for (let i = 0; i < ref.length; i++) { const d = Math.abs(c.logits[i] - ref[i]); md = Math.max(md, d); if (d === 0) exact++; }
  console.log(name, "max", md, "exact", exact, "/", ref.length);
}
