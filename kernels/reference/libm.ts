/**
 * glibc's `sinf` and `cosf` (sysdeps/ieee754/flt-32: s_sinf.c, s_cosf.c, s_sincosf.h,
 * sincosf_poly.h, s_sincosf_data.c; the ARM optimized-routines algorithm), replayed in double
 * arithmetic. kernels/rope_angles.ts builds ggml's rope angle cache from them.
 *
 * Why: llama.cpp's CPU backend fills its rope cache with libm's `cosf`/`sinf` (ggml-cpu
 * `rope_yarn`). glibc's are not correctly rounded (worst case 0.56 ulp): about 1% of the angles
 * of a 500000-base rope differ by one ulp from `Math.fround(Math.cos(θ))`. One ulp in one
 * angle is nothing on a small model, but 32 random layers of an 8B-shaped model amplify it to
 * 0.03 in the logits and flip greedy tokens; with these the 8B model matches llama.cpp to 5e-9.
 *
 * The polynomials are evaluated in double and rounded to float once, as glibc does. glibc's
 * x86-64 FMA build fuses some of these multiply-adds; that changes the double result by an ulp
 * of a double, which reaches the float result only for inputs within 2^-29 of a float rounding
 * boundary (none in the tested range: tests/kernels/reference/libm_test.ts compares against the
 * running libm where one can be loaded).
 *
 * @module
 */

const fr = Math.fround;
const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** Sign of sine in quadrants 0..3. */
const SIGN = [1, -1, -1, 1];
/** 2/π · 2^24 (glibc's hpi_inv without TOINT_INTRINSICS). */
const HPI_INV = 0x145f306dc9c883 * 2 ** -29;
/** π/2 as a double. */
const HPI = 0x1921fb54442d18 * 2 ** -52;
/** π/2 in two parts: 26 high bits and the rest, so n · HPI_HI is exact for n < 2^27. */
const HPI_HI = splitHigh(HPI);
const HPI_LO = HPI - HPI_HI;
/** 2π · 2^-64. */
const PI63 = 0x1921fb54442d18 * 2 ** -114;

/** The cosine and sine polynomials; the second table negates the cosine (quadrants 2 and 3). */
interface Poly {
  c0: number;
  c1: number;
  c2: number;
  c3: number;
  c4: number;
  s1: number;
  s2: number;
  s3: number;
}
const C1 = -0x1ffffffd0c621c * 2 ** -54;
const C2 = 0x155553e1068f19 * 2 ** -57;
const C3 = -0x16c087e89a359d * 2 ** -62;
const C4 = 0x199343027bf8c3 * 2 ** -68;
const S1 = -0x1555545995a603 * 2 ** -55;
const S2 = 0x11107605230bc4 * 2 ** -59;
const S3 = -0x1994eb3774cf24 * 2 ** -65;
const TABLE: readonly [Poly, Poly] = [
  { c0: 1, c1: C1, c2: C2, c3: C3, c4: C4, s1: S1, s2: S2, s3: S3 },
  { c0: -1, c1: -C1, c2: -C2, c3: -C3, c4: -C4, s1: S1, s2: S2, s3: S3 },
];

/** 4/π to 192 bits, 8 new bits per entry (so a 96-bit window starts at any byte). */
const INV_PIO4 = [
  0xa2,
  0xa2f9,
  0xa2f983,
  0xa2f9836e,
  0xf9836e4e,
  0x836e4e44,
  0x6e4e4415,
  0x4e441529,
  0x441529fc,
  0x1529fc27,
  0x29fc2757,
  0xfc2757d1,
  0x2757d1f5,
  0x57d1f534,
  0xd1f534dd,
  0xf534ddc0,
  0x34ddc0db,
  0xddc0db62,
  0xc0db6295,
  0xdb629599,
  0x6295993c,
  0x95993c43,
  0x993c4390,
  0x3c439041,
].map(BigInt);

const TOP12_PIO4 = abstop12(0x1921fb6 * 2 ** -25);
const TOP12_TINY = abstop12(2 ** -12);
const TOP12_120 = abstop12(120);
const TOP12_INF = abstop12(Infinity);

/** The high 26 bits of a double (Veltkamp's split with 2^27 + 1). */
function splitHigh(a: number): number {
  const c = 134217729 * a;
  return c - (c - a);
}

/** Top 12 bits of the float's representation, sign cleared. */
function abstop12(x: number): number {
  F32[0] = x;
  return (U32[0] >>> 20) & 0x7ff;
}

/** sin (n even) or cos (n odd) of the reduced argument x, x2 = x·x. */
function poly(x: number, x2: number, p: Poly, n: number): number {
  if ((n & 1) === 0) {
    const x3 = x * x2;
    const s1 = p.s2 + x2 * p.s3;
    const x7 = x3 * x2;
    const s = x + x3 * p.s1;
    return fr(s + x7 * s1);
  }
  const x4 = x2 * x2;
  const c2 = p.c3 + x2 * p.c4;
  const c1 = p.c0 + x2 * p.c1;
  const x6 = x4 * x2;
  const c = c1 + x4 * p.c2;
  return fr(c + x6 * c2);
}

/**
 * x − n·π/2 rounded once, as glibc's FMA build computes it (one fused multiply-subtract). Near a
 * multiple of π/2 the two differ: rounding n·π/2 first moved cos(−64.4026) by 6e-14, an ulp
 * of its float result. n·π/2 is split exactly (Dekker: n < 2^7, HPI_HI has 26 bits), x − p is
 * exact (Sterbenz: x lies within π/4 of p), so only the last subtraction rounds.
 */
function reduceFast(x: number, n: number): number {
  const p = n * HPI;
  const e = (n * HPI_HI - p) + n * HPI_LO;
  return (x - p) - e;
}

/** Exact reduction of a float ≥ 120 to [-π/4, π/4] and its quadrant (glibc's reduce_large). */
function reduceLarge(xi: number): [number, number] {
  const arr = (xi >>> 26) & 15;
  const shift = BigInt((xi >>> 23) & 7);
  const m = BigInt((xi & 0xffffff) | 0x800000) << shift;
  const M64 = (1n << 64n) - 1n;
  let res0 = (m * INV_PIO4[arr]) & 0xffffffffn; // a 32-bit product in C
  const res1 = m * INV_PIO4[arr + 4];
  const res2 = m * INV_PIO4[arr + 8];
  res0 = ((res2 >> 32n) | (res0 << 32n)) & M64;
  res0 = (res0 + res1) & M64;
  const n = (res0 + (1n << 61n)) >> 62n;
  res0 = (res0 - (n << 62n)) & M64;
  return [Number(BigInt.asIntN(64, res0)) * PI63, Number(n)];
}

/** Where a float lands after glibc's range reduction. */
interface Reduced {
  /** The float's bits. */
  xi: number;
  /** The reduced argument in [-π/4, π/4] (the argument itself below π/4). */
  r: number;
  /** Quadrant for the polynomial choice. */
  n: number;
  /** Quadrant for the sign, including the argument's sign for large arguments. */
  q: number;
}

const red: Reduced = { xi: 0, r: 0, n: 0, q: 0 };

/** Reduce the float y as glibc's sinf and cosf do (into the shared `red`). */
function reduce(y: number): Reduced {
  const x = fr(y);
  F32[0] = x;
  const xi = U32[0];
  red.xi = xi;
  const top = (xi >>> 20) & 0x7ff;
  if (top < TOP12_PIO4) {
    red.r = x;
    red.n = red.q = 0;
  } else if (top < TOP12_120) {
    // (int32_t) truncates toward zero, as `| 0` does for |x · 2^24 · 2/π| < 2^31.
    const n = (((x * HPI_INV) | 0) + 0x800000) >> 24;
    red.r = reduceFast(x, n);
    red.n = red.q = n;
  } else if (top < TOP12_INF) {
    const [r, n] = reduceLarge(xi);
    red.r = r;
    red.n = n;
    red.q = n + (xi >>> 31);
  } else {
    red.r = NaN;
    red.n = red.q = 0;
  }
  return red;
}

/**
 * sin (cosine = false) or cos of an argument reduced by {@linkcode reduce}. Below π/4 the
 * quadrant is 0, so the general case is glibc's direct polynomial there.
 */
function fromReduced(d: Reduced, cosine: boolean): number {
  if (((d.xi >>> 20) & 0x7ff) < TOP12_TINY) return cosine ? 1 : d.r;
  const p = (d.q & 2) !== 0 ? TABLE[1] : TABLE[0];
  return poly(d.r * SIGN[d.q & 3], d.r * d.r, p, cosine ? d.n ^ 1 : d.n);
}

/** glibc's sinf: the float sine of the float y, as llama.cpp's CPU build computes it. */
export function sinfGlibc(y: number): number {
  return fromReduced(reduce(y), false);
}

/** glibc's cosf: the float cosine of the float y, as llama.cpp's CPU build computes it. */
export function cosfGlibc(y: number): number {
  return fromReduced(reduce(y), true);
}

/** cosf(y) into out[at] and sinf(y) into out[at + 1], sharing one range reduction. */
export function cosSinfGlibc(y: number, out: Float32Array, at: number): void {
  const d = reduce(y);
  out[at] = fromReduced(d, true);
  out[at + 1] = fromReduced(d, false);
}
