import { adviseHugePages } from "../../../kernels/wasm/hugepages.ts";
import { assert, assertEquals } from "../../support/assert.ts";

const MB = 1 << 20;

/** AnonHugePages of this process, in kB (Linux). */
function anonHugeKb(): number {
  const m = /AnonHugePages:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/smaps_rollup"));
  return m ? Number(m[1]) : 0;
}

const thp = Deno.build.os === "linux"
  ? (/\[(\w+)\]/.exec(
    Deno.readTextFileSync("/sys/kernel/mm/transparent_hugepage/enabled"),
  )?.[1] ?? "never")
  : "never";

Deno.test({
  name: "hugepages: an advised arena memory is faulted in as 2 MiB pages",
  ignore: thp === "never",
  fn() {
    const bytes = 64 * MB;
    const mem = new WebAssembly.Memory({ initial: 1, maximum: bytes / 65536, shared: true });
    assert(adviseHugePages(mem, bytes), "madvise(MADV_HUGEPAGE) was not applied");
    const before = anonHugeKb();
    mem.grow(bytes / 65536 - 1); // growth after the advice: the whole reservation took it
    new Uint8Array(mem.buffer).fill(1);
    const gained = anonHugeKb() - before;
    // THP may fall back to small pages under fragmentation; most of 64 MiB comes huge here.
    assert(gained >= 16 * 1024, `only ${gained} kB of huge pages (THP "${thp}")`);
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

/** Resident memory of this process, in kB (Linux). */
function rssKb(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
  return m ? Number(m[1]) : 0;
}

Deno.test({
  name: "hugepages: prefault grows the weights' memory and faults it in before any write",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const { createWasmBackend } = await import("../../../kernels/wasm/mod.ts");
    const be = await createWasmBackend({ threads: 1, memoryCap: 1024 * MB });
    try {
      const rss0 = rssKb();
      await be.prefault!(64 * MB);
      const gained = rssKb() - rss0;
      assert(gained >= 48 * 1024, `RSS grew by ${gained} kB only: the pages were not faulted in`);
      // A weight uploaded next lands in those pages: RSS hardly moves.
      const rss1 = rssKb();
      be.upload({
        name: "w",
        type: 0, // F32
        shape: [4096, 2048],
        data: new Uint8Array(4096 * 2048 * 4).fill(1),
      });
      const more = rssKb() - rss1;
      assert(more < 40 * 1024, `the upload faulted ${more} kB in anew`);
    } finally {
      be.dispose();
    }
  },
});
