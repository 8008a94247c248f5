/**
 * Huge pages and prefault of the WASM arenas. Each check looks at the memory's own pages (its
 * /proc/self/smaps entries, mincore), not at the process's RSS, which tests running alongside in
 * the same process move at the same time.
 */
import { Arena } from "../../../kernels/wasm/arena.ts";
import { readKernelBinary } from "../../../kernels/wasm/build.ts";
import { adviseHugePages, memoryAddress } from "../../../kernels/wasm/hugepages.ts";
import { assert, assertEquals } from "../../support/assert.ts";

const MB = 1 << 20;
const linux = Deno.build.os === "linux";

const thp = linux
  ? (/\[(\w+)\]/.exec(
    Deno.readTextFileSync("/sys/kernel/mm/transparent_hugepage/enabled"),
  )?.[1] ?? "never")
  : "never";

/** AnonHugePages (kB) of the mappings of this process that overlap [start, start + bytes). */
function anonHugeKbIn(start: bigint, bytes: number): number {
  const end = start + BigInt(bytes);
  let kb = 0;
  let overlaps = false;
  for (const line of Deno.readTextFileSync("/proc/self/smaps").split("\n")) {
    const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (range) {
      overlaps = BigInt(`0x${range[1]}`) < end && BigInt(`0x${range[2]}`) > start;
      continue;
    }
    const huge = /^AnonHugePages:\s+(\d+) kB/.exec(line);
    if (huge && overlaps) kb += Number(huge[1]);
  }
  return kb;
}

/** Resident 4 KiB pages of [start, start + bytes) (mincore). */
function residentPages(start: bigint, bytes: number): number {
  const lib = Deno.dlopen("libc.so.6", {
    mincore: { parameters: ["pointer", "usize", "buffer"], result: "i32" },
  });
  try {
    const pages = Math.ceil(bytes / 4096);
    const vec = new Uint8Array(pages);
    const rc = lib.symbols.mincore(Deno.UnsafePointer.create(start), BigInt(bytes), vec);
    assertEquals(rc, 0, "mincore failed");
    return vec.reduce((n, v) => n + (v & 1), 0);
  } finally {
    lib.close();
  }
}

Deno.test({
  name: "hugepages: an advised arena memory is faulted in as 2 MiB pages",
  ignore: thp === "never",
  fn() {
    const bytes = 64 * MB;
    const mem = new WebAssembly.Memory({ initial: 1, maximum: bytes / 65536, shared: true });
    assert(adviseHugePages(mem, bytes), "madvise(MADV_HUGEPAGE) was not applied");
    mem.grow(bytes / 65536 - 1); // growth after the advice: the whole reservation took it
    new Uint8Array(mem.buffer).fill(1);
    const huge = anonHugeKbIn(memoryAddress(mem), bytes);
    // THP may fall back to small pages under fragmentation; most of 64 MiB comes huge here.
    assert(huge >= 16 * 1024, `only ${huge} kB of huge pages (THP "${thp}")`);
  },
});

Deno.test("hugepages: DLLM_HUGEPAGES=0 leaves the memory alone", async () => {
  const code = `import { adviseHugePages } from ${
    JSON.stringify(
      new URL("../../../kernels/wasm/hugepages.ts", import.meta.url).href,
    )
  };
  const mem = new WebAssembly.Memory({ initial: 64, maximum: 1024, shared: true });
  console.log(adviseHugePages(mem, 1024 * 65536));`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { DLLM_HUGEPAGES: "0" },
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assertEquals(new TextDecoder().decode(out.stdout).trim(), "false");
});

Deno.test({
  name: "hugepages: prefault grows an arena and faults the new pages in before any write",
  ignore: !linux,
  async fn() {
    const module = await WebAssembly.compile(await readKernelBinary());
    const arena = new Arena(0, module, 256 * MB);
    const from = arena.memory.buffer.byteLength;
    assert(await arena.prefault(64 * MB), "populate did not run");
    const grown = arena.memory.buffer.byteLength - from;
    assert(grown >= 63 * MB, `the memory grew by ${grown} bytes only`);
    const start = memoryAddress(arena.memory) + BigInt(from);
    const pages = Math.floor(grown / 4096);
    const resident = residentPages(start, pages * 4096);
    assertEquals(resident, pages, "pages of the grown range were not faulted in");
    // Growth alone (no prefault) leaves new pages untouched: the check above can fail.
    const plain = new WebAssembly.Memory({ initial: 1, maximum: 2048, shared: true });
    const before = plain.buffer.byteLength;
    plain.grow(1024);
    assert(residentPages(memoryAddress(plain) + BigInt(before), 64 * MB) < pages / 2);
    // Allocations then land in those pages; nothing is left to grow for a small one.
    const off = arena.alloc(32 * MB)!;
    assert(off + 32 * MB <= arena.memory.buffer.byteLength);
    assertEquals(await arena.prefault(1024), false, "nothing to grow: no populate");
  },
});
