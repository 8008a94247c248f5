/**
 * Transparent huge pages for the arenas' memories (Linux): `madvise(MADV_HUGEPAGE)` over a
 * memory's whole reservation, so weights are faulted in 2 MiB at a time and matmuls stream them
 * through fewer TLB entries.
 *
 * Why: a stage's weights land in fresh memory, and on a virtual machine each first touch of a
 * 4 KiB page is slow. Here (Firecracker, THP "madvise" only) filling 640 MiB of a fresh shared
 * memory took 1.84 s with 4 KiB pages and 1.19 s advised, and loading an 8B model's 11-layer
 * stage (1.35 GB) took 5.7 s the first time against 0.74 s into memory already touched.
 *
 * {@linkcode populate} faults a grown range in on another thread ahead of a load.
 *
 * Needs the FFI permission (agents, tests and benches run with --allow-all) and glibc's
 * libc.so.6; otherwise it does nothing. `DLLM_HUGEPAGES=0` turns off both the advice and populate.
 *
 * @module
 */

const MADV_HUGEPAGE = 14;
const MADV_POPULATE_WRITE = 23; // Linux 5.14+
const HUGE = 2n * 1024n * 1024n;
/** Bytes faulted in per populate call (see populate). */
const POPULATE_PIECE = 32n * 1024n * 1024n;

type Madvise = (addr: Deno.PointerValue, len: bigint, advice: number) => number;
type MadviseAsync = (addr: Deno.PointerValue, len: bigint, advice: number) => Promise<number>;
let madvise: Madvise | null | undefined;
let madviseAsync: MadviseAsync | undefined;

function libcMadvise(): Madvise | null {
  if (madvise !== undefined) return madvise;
  madvise = null;
  try {
    if (
      Deno.build.os === "linux" &&
      Deno.permissions.querySync({ name: "ffi" }).state === "granted" &&
      Deno.permissions.querySync({ name: "env", variable: "DLLM_HUGEPAGES" }).state ===
        "granted" &&
      Deno.env.get("DLLM_HUGEPAGES") !== "0"
    ) {
      const lib = Deno.dlopen("libc.so.6", {
        madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },
        madviseAsync: {
          name: "madvise",
          parameters: ["pointer", "usize", "i32"],
          result: "i32",
          nonblocking: true,
        },
      });
      madvise = (addr, len, advice) => lib.symbols.madvise(addr, len, advice);
      madviseAsync = (addr, len, advice) => lib.symbols.madviseAsync(addr, len, advice);
    }
  } catch {
    // No glibc here (or no FFI): pages stay 4 KiB.
  }
  return madvise;
}

/** Address of a memory's first byte (a shared memory never moves). */
export function memoryAddress(memory: WebAssembly.Memory): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(new Uint8Array(memory.buffer))));
}

/**
 * Advise huge pages over the first `bytes` of `memory`'s reservation (its maximum size: a shared
 * memory never moves, so the advice covers every later growth). Returns whether it was applied.
 */
export function adviseHugePages(memory: WebAssembly.Memory, bytes: number): boolean {
  const advise = libcMadvise();
  if (!advise) return false;
  try {
    const base = memoryAddress(memory);
    const start = (base + HUGE - 1n) & ~(HUGE - 1n);
    const end = (base + BigInt(bytes)) & ~(HUGE - 1n);
    if (end <= start) return false;
    // Pages not yet accessible (PROT_NONE until the memory grows) take the advice as well.
    return advise(Deno.UnsafePointer.create(start), end - start, MADV_HUGEPAGE) === 0;
  } catch {
    return false;
  }
}

/**
 * Fault in bytes [from, from + bytes) of `memory` (already grown to hold them) on another thread
 * (`madvise(MADV_POPULATE_WRITE)`), so a load that follows writes into pages that exist: a
 * standby does this while it fetches a lost stage's layers. Resolves to whether it ran.
 */
export async function populate(
  memory: WebAssembly.Memory,
  from: number,
  bytes: number,
): Promise<boolean> {
  if (!libcMadvise() || !madviseAsync || bytes <= 0) return false;
  try {
    const base = memoryAddress(memory);
    const page = 4096n;
    const start = (base + BigInt(from) + page - 1n) & ~(page - 1n);
    const end = (base + BigInt(from + bytes)) & ~(page - 1n);
    if (end <= start) return false;
    // In pieces: the kernel holds the process's memory-map lock for a whole call, and the main
    // thread's own mappings (V8 heap growth, buffers) wait on it. One 1.2 GB call stalled a
    // standby's event loop long enough for its peers to declare it dead.
    for (let at = start; at < end; at += POPULATE_PIECE) {
      const len = end - at < POPULATE_PIECE ? end - at : POPULATE_PIECE;
      if (await madviseAsync(Deno.UnsafePointer.create(at), len, MADV_POPULATE_WRITE) !== 0) {
        return false;
      }
    }
    return true;
  } catch {
    return false;
  }
}
