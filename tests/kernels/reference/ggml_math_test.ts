import { assert, assertEquals } from "../../support/assert.ts";
import { expfGgml } from "../../../kernels/reference/ggml_math.ts";

Deno.test("expfGgml (ggml_v_expf, SSE2): within 2 ulp of exp, exact at 0, flushes like ggml", () => {
  let worst = 0;
  for (let x = -87; x < 88; x += 0.00731) {
    const f = Math.fround(x);
    const want = Math.exp(f);
    const got = expfGgml(f);
    assertEquals(got, Math.fround(got));
    worst = Math.max(worst, Math.abs(got - want) / want);
  }
  assert(worst < 2.5e-7, `worst relative error ${worst}`);
  assertEquals(expfGgml(0), 1);
  assertEquals(expfGgml(-Infinity), 0);
  assertEquals(expfGgml(-200), 0);
  assertEquals(expfGgml(100), Infinity);
  // The scaled path (|n| > 126) yields subnormals: within a few subnormal steps of exp.
  for (const x of [-88, -90, -95, -100]) {
    const tiny = expfGgml(x);
    assert(tiny > 0 && Math.abs(tiny - Math.exp(x)) <= 4 * 2 ** -149, `${x}: ${tiny}`);
  }
});
