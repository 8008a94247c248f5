import { assert, assertEquals } from "../../support/assert.ts";
import { cosfGlibc, cosSinfGlibc, sinfGlibc } from "../../../kernels/reference/libm.ts";

const fr = Math.fround;

/** [x, cosf(x), sinf(x)] from glibc 2.36's x86-64 FMA build (Debian 12, AMD Zen 4). */
const GLIBC: [number, number, number][] = [
  // sinf is 0.52 ulp off here: Math.fround(Math.sin(x)) gives 0.5146342515945435.
  [0.5405809879302979, 0.8574098348617554, 0.5146341919898987],
  // Next to a multiple of π/2: only a fused x − n·π/2 gives glibc's cos.
  [-64.40264892578125, 4.7280951775974245e-7, -1],
  [0.000009999999747378752, 1, 0.000009999999747378752],
  [0.699999988079071, 0.7648422122001648, 0.6442176699638367],
  [0.7853981852531433, 0.7071067690849304, 0.7071067690849304],
  [1.5, 0.07073719799518585, 0.9974949955940247],
  [3.1415927410125732, -1, -8.742277657347586e-8],
  [100.25, 0.9607883095741272, -0.27728286385536194],
  [119.9000015258789, 0.8680770993232727, 0.4964294135570526],
  [120, 0.8141809701919556, 0.5806111693382263],
  [121.5, -0.5215638875961304, 0.8532122373580933],
  [4096, 0.8039906024932861, -0.5946419835090637],
  [65535.5, -0.3016757369041443, 0.9534105658531189],
  [1000000, 0.9367521405220032, -0.349993497133255],
  [-1000000, 0.9367521405220032, 0.349993497133255],
  [3.3999999521443642e+38, 0.9697538614273071, -0.24408487975597382],
  [9.99994610111476e-41, 1, 9.99994610111476e-41],
  [0, 1, 0],
];

Deno.test("sinfGlibc/cosfGlibc: glibc's results on every range-reduction path", () => {
  const out = new Float32Array(2);
  for (const [x, c, s] of GLIBC) {
    assertEquals(cosfGlibc(x), c, `cosf(${x})`);
    assertEquals(sinfGlibc(x), s, `sinf(${x})`);
    cosSinfGlibc(x, out, 0);
    assertEquals([out[0], out[1]], [c, s], `cos/sin(${x})`);
  }
  assert(Number.isNaN(sinfGlibc(NaN)) && Number.isNaN(cosfGlibc(Infinity)));
  assert(Object.is(sinfGlibc(-0), -0));
});

/** The running libm's sinf and cosf, where it is glibc on x86-64 with FMA (the build above). */
function hostLibm(): {
  sinf(x: number): number;
  cosf(x: number): number;
  powf(x: number, y: number): number;
} | null {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") return null;
  try {
    if (!/\bfma\b/.test(Deno.readTextFileSync("/proc/cpuinfo"))) return null;
    const lib = Deno.dlopen("libm.so.6", {
      cosf: { parameters: ["f32"], result: "f32" },
      sinf: { parameters: ["f32"], result: "f32" },
      powf: { parameters: ["f32", "f32"], result: "f32" },
    });
    return lib.symbols;
  } catch {
    return null;
  }
}

const host = hostLibm();

Deno.test({
  name: "sinfGlibc/cosfGlibc: equal to the host's glibc on rope angles and random floats",
  ignore: host === null,
  fn() {
    let checked = 0;
    const mismatches: string[] = [];
    const check = (x: number) => {
      checked++;
      if (!Object.is(sinfGlibc(x), host!.sinf(x)) || !Object.is(cosfGlibc(x), host!.cosf(x))) {
        if (mismatches.length < 5) mismatches.push(String(x));
      }
    };
    // Every angle of a Llama-3 rope (base 500000, 128 dims) for positions below 8192.
    const scale = fr(Math.pow(500000, fr(-2 / 128)));
    for (let p = 0; p < 8192; p++) {
      let th = fr(p);
      for (let i = 0; i < 64; i++, th = fr(th * scale)) check(th);
    }
    // Random bit patterns (every exponent) and random arguments in the fast-reduction range.
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    let seed = 12345;
    for (let i = 0; i < 200_000; i++) {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      u[0] = seed;
      if (Number.isFinite(f[0])) check(f[0]);
      check(fr(((seed >>> 8) / 2 ** 24 - 0.5) * 260));
    }
    assertEquals(mismatches, [], `${mismatches.length} of ${checked} differ`);
  },
});

Deno.test({
  name: "rope's theta_scale: a double pow rounded once equals glibc's powf but for one pair",
  ignore: host === null,
  fn() {
    // kernels/rope_angles.ts computes base^(-2/dims) as fround(Math.pow(...)); glibc's powf is
    // not correctly rounded either. Every rope base in use, every even width up to 512.
    const differ: string[] = [];
    for (
      const base of [8000, 10000, 25000, 40000, 75000, 1e5, 160000, 250000, 5e5, 1e6, 5e6, 1e7]
    ) {
      for (let dims = 8; dims <= 512; dims += 2) {
        const mine = fr(Math.pow(fr(base), fr(-2 / dims)));
        if (mine !== host!.powf(fr(base), fr(-2 / dims))) differ.push(`${base}^(-2/${dims})`);
      }
    }
    assertEquals(differ, ["40000^(-2/118)"]);
  },
});
