/**
 * cluster/hub/pull.ts against a local fake Hub (tests/support/fake_hub.ts; huggingface.co is not
 * reachable from the test machines): a full download checked against its sha256, the cache
 * reused with the server stopped, resume after a dropped connection and from a part left by an
 * earlier run, a corrupted transfer deleted, 401/403/404 worded for the user, the token sent as
 * a Bearer header to the Hub only and never in an event or error, two pulls of one file at once.
 */
import { HubError, type PullEvent, pullModel } from "../../../cluster/hub/mod.ts";
import { FakeHub, fixture, sha256Hex } from "../../support/fake_hub.ts";
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";

const TOKEN = "hf_gatedTestTokenDoNotLogMe0123456789abcdef";

async function withHub(
  fn: (hub: FakeHub, cacheDir: string) => Promise<void>,
): Promise<void> {
  const hub = new FakeHub();
  await hub.start();
  const cacheDir = await Deno.makeTempDir({ prefix: "hub-test-" });
  try {
    await fn(hub, cacheDir);
  } finally {
    await hub.stop();
    await Deno.remove(cacheDir, { recursive: true });
  }
}

/** Pull options for the fake Hub: fast retries, events collected. */
function options(hub: FakeHub, cacheDir: string, events: PullEvent[] = [], env = {}) {
  return {
    cacheDir,
    endpoint: hub.url,
    env,
    backoffMs: 5,
    retries: 3,
    onEvent: (e: PullEvent) => events.push(e),
  };
}

Deno.test("pull: downloads, verifies against the listing's sha256, caches, and reuses the cache with the Hub stopped", async () => {
  await withHub(async (hub, cacheDir) => {
    const events: PullEvent[] = [];
    const r = await pullModel("hf:test-org/tiny-GGUF:q8_0", options(hub, cacheDir, events));
    const want = fixture("tiny-q8_0.gguf");
    const commit = hub.commit("test-org/tiny-GGUF");
    assertEquals(r.path, `${cacheDir}/hub/test-org/tiny-GGUF/${commit}/tiny-Q8_0.gguf`);
    assertEquals([r.file, r.commit, r.size, r.sha256, r.cached], [
      "tiny-Q8_0.gguf",
      commit,
      want.length,
      sha256Hex(want),
      false,
    ]);
    assertEquals(sha256Hex(await Deno.readFile(r.path)), sha256Hex(want));
    // The listing was paged (4 entries a page) and followed to its end.
    assert(hub.requests("/tree/main").length > 3, "the Link pages were followed");
    // The bytes came from the CDN path the resolve redirect named, pinned to the commit.
    assert(hub.requests(`/resolve/${commit}/tiny-Q8_0.gguf`).length === 1);
    assert(hub.requests("/cdn/").some((q) => q.method === "GET"));
    const last = events.filter((e) => e.event === "progress").at(-1);
    assertEquals(last && [last.bytes_done, last.bytes_total], [want.length, want.length]);
    const names =
      (await Array.fromAsync(Deno.readDir(`${cacheDir}/hub/test-org/tiny-GGUF/${commit}`)))
        .map((e) => e.name);
    assert(!names.some((n) => n.endsWith(".part")), `no part is left: ${names}`);

    // Online again: the cached file is found by the commit, nothing downloaded.
    const before = hub.requests("/cdn/").length;
    const again = await pullModel("hf:test-org/tiny-GGUF:Q8_0", options(hub, cacheDir));
    assertEquals([again.path, again.cached], [r.path, true]);
    assertEquals(hub.requests("/cdn/").length, before);

    // Hub stopped: the revision's recorded commit finds the file without the network.
    await hub.stop();
    const offlineEvents: PullEvent[] = [];
    const off = await pullModel(
      "hf:test-org/tiny-GGUF:Q8_0",
      options(hub, cacheDir, offlineEvents),
    );
    assertEquals([off.path, off.cached, off.offline], [r.path, true, true]);
    assert(offlineEvents.some((e) => e.event === "offline"), "the fallback is reported");
    const byPath = await pullModel("hf:test-org/tiny-GGUF/tiny-Q8_0.gguf", options(hub, cacheDir));
    assertEquals(byPath.path, r.path);
    // A file never pulled is an error naming the unreachable Hub and the cache.
    const e = await assertRejects(
      () => pullModel("hf:test-org/tiny-GGUF:Q4_0", options(hub, cacheDir)),
      HubError,
      "cannot reach 127.0.0.1",
    );
    assert(e.message.includes("not in the cache"), e.message);
  });
});

Deno.test("pull: a connection dropped mid-file resumes with Range; a part left by an earlier run resumes too", async () => {
  await withHub(async (hub, cacheDir) => {
    const want = fixture("tiny-f16.gguf");
    hub.faults.dropAfterBytes = { bytes: 100_000, times: 1 };
    const events: PullEvent[] = [];
    const r = await pullModel("hf:test-org/tiny-GGUF:F16", options(hub, cacheDir, events));
    assertEquals(sha256Hex(await Deno.readFile(r.path)), sha256Hex(want));
    const gets = hub.requests("/cdn/").filter((q) => q.method === "GET");
    assertEquals(gets.length, 2, "one dropped attempt, one resumed");
    assertEquals(gets[0].range, null);
    assert(gets[1].range && /^bytes=\d+-$/.test(gets[1].range), `resumed with ${gets[1].range}`);
    assert(Number(/\d+/.exec(gets[1].range!)![0]) >= 100_000 - 1, gets[1].range);
    assert(events.some((e) => e.event === "retry"), "the retry is reported");

    // A part from an interrupted earlier process: only the rest is fetched.
    const q4 = fixture("tiny-q4_0.gguf");
    const commit = hub.commit("test-org/tiny-GGUF");
    const dir = `${cacheDir}/hub/test-org/tiny-GGUF/${commit}`;
    await Deno.writeFile(`${dir}/tiny-Q4_0.gguf.part`, q4.slice(0, 5000));
    const r2 = await pullModel("hf:test-org/tiny-GGUF/tiny-Q4_0.gguf", options(hub, cacheDir));
    assertEquals(sha256Hex(await Deno.readFile(r2.path)), sha256Hex(q4));
    const last = hub.requests("/cdn/").filter((q) => q.method === "GET").at(-1)!;
    assertEquals(last.range, "bytes=5000-");
    assert(!(await exists(`${dir}/tiny-Q4_0.gguf.part`)), "the part was renamed into place");
  });
});

Deno.test("pull: a transfer that stalls is cut after the stall timeout and resumed", async () => {
  await withHub(async (hub, cacheDir) => {
    hub.faults.stallAfterBytes = { bytes: 50_000, times: 1 };
    const events: PullEvent[] = [];
    const t0 = Date.now();
    const r = await pullModel("hf:test-org/tiny-GGUF:Q8_0", {
      ...options(hub, cacheDir, events),
      stallTimeoutMs: 300,
    });
    assertEquals(sha256Hex(await Deno.readFile(r.path)), sha256Hex(fixture("tiny-q8_0.gguf")));
    assert(Date.now() - t0 < 10_000, "the stall was cut, not waited out");
    const retry = events.find((e) => e.event === "retry");
    assert(
      retry?.event === "retry" && retry.error.includes("no bytes for 0.3 s"),
      JSON.stringify(retry),
    );
    const gets = hub.requests("/cdn/").filter((q) => q.method === "GET");
    assertEquals(gets.at(-1)!.range, "bytes=50000-");
  });
});

Deno.test("pull: the answer deadline does not cut a body that keeps flowing past it", async () => {
  await withHub(async (hub, cacheDir) => {
    hub.faults.trickle = { pieces: 8, delayMs: 100, times: 1 };
    const events: PullEvent[] = [];
    const r = await pullModel("hf:test-org/tiny-GGUF:Q8_0", {
      ...options(hub, cacheDir, events),
      headersTimeoutMs: 250,
    });
    assertEquals(sha256Hex(await Deno.readFile(r.path)), sha256Hex(fixture("tiny-q8_0.gguf")));
    assertEquals(events.filter((e) => e.event === "retry"), [], "one attempt, never cut");
  });
});

Deno.test("pull: a server that ignores Range restarts the part from zero; 503s are retried", async () => {
  await withHub(async (hub, cacheDir) => {
    const q4 = fixture("tiny-q4_0.gguf");
    const dir = `${cacheDir}/hub/test-org/tiny-GGUF/${hub.commit("test-org/tiny-GGUF")}`;
    await Deno.mkdir(dir, { recursive: true });
    // A stale part with wrong bytes: the 200 answer replaces it rather than appending.
    await Deno.writeFile(`${dir}/tiny-Q4_0.gguf.part`, new Uint8Array(3000).fill(7));
    hub.faults.ignoreRange = { times: 1 };
    hub.faults.unavailable = { times: 2 };
    const r = await pullModel("hf:test-org/tiny-GGUF:Q4_0", options(hub, cacheDir));
    assertEquals(sha256Hex(await Deno.readFile(r.path)), sha256Hex(q4));
  });
});

Deno.test("pull: a corrupted transfer fails its sha256, says so, and leaves no part", async () => {
  await withHub(async (hub, cacheDir) => {
    hub.faults.corrupt = { times: 1 };
    const e = await assertRejects(
      () => pullModel("hf:test-org/tiny-GGUF:Q8_0", options(hub, cacheDir)),
      HubError,
      "was corrupted in transfer",
    );
    assertEquals((e as HubError).kind, "integrity");
    assert(e.message.includes(sha256Hex(fixture("tiny-q8_0.gguf"))), e.message);
    assert(e.message.includes("partial download was deleted"), e.message);
    const dir = `${cacheDir}/hub/test-org/tiny-GGUF/${hub.commit("test-org/tiny-GGUF")}`;
    assert(!(await exists(`${dir}/tiny-Q8_0.gguf.part`)), "the part is gone");
    assert(!(await exists(`${dir}/tiny-Q8_0.gguf`)), "nothing was put in the cache");
    // The next pull starts clean and succeeds.
    const r = await pullModel("hf:test-org/tiny-GGUF:Q8_0", options(hub, cacheDir));
    assertEquals(sha256Hex(await Deno.readFile(r.path)), sha256Hex(fixture("tiny-q8_0.gguf")));
  });
});

Deno.test("pull: a file of another size than the Hub lists is an integrity error, not an endless re-download", async () => {
  // Listed 100 bytes larger: each attempt ended short, the resume was refused (416), the part
  // restarted, and the retry count was reset by the progress: whole downloads for ever.
  await withHub(async (hub, cacheDir) => {
    hub.faults.listedSizeExtra = 100;
    const size = fixture("tiny-q8_0.gguf").length;
    const e = await assertRejects(
      () => pullModel("hf:test-org/tiny-GGUF:Q8_0", options(hub, cacheDir)),
      HubError,
      `the server's file is ${size} bytes, the Hub lists ${size + 100}`,
    );
    assertEquals((e as HubError).kind, "integrity");
    const cdnGets = hub.seen.filter((r) => r.path.startsWith("/cdn/")).length;
    assert(cdnGets <= 1, `${cdnGets} downloads of the file`);
  });
});

Deno.test("pull: 401/403 for a gated repo and 404s say what to do; the token is a Bearer header to the Hub only", async () => {
  await withHub(async (hub, cacheDir) => {
    const events: PullEvent[] = [];
    const errors: string[] = [];
    const fail = async (ref: string, env: Record<string, string>, kind: string, text: string) => {
      const e = await assertRejects(
        () => pullModel(ref, options(hub, cacheDir, events, env)),
        HubError,
        text,
      );
      assertEquals((e as HubError).kind, kind, e.message);
      errors.push(e.message, String(e.stack));
      return e.message;
    };
    const gated = await fail(
      "hf:gated-org/secret-GGUF:Q8_0",
      {},
      "auth",
      "gated-org/secret-GGUF is gated",
    );
    assert(gated.includes(`accept the license at ${hub.url}/gated-org/secret-GGUF`), gated);
    assert(gated.includes("set HF_TOKEN") && gated.includes("HTTP 401"), gated);
    const wrong = await fail(
      "hf:gated-org/secret-GGUF:Q8_0",
      { HF_TOKEN: "hf_wrongTokenAlsoSecret000000000000000000" },
      "auth",
      "HF_TOKEN was sent but does not grant access",
    );
    assert(wrong.includes("HTTP 403"), wrong);
    await fail(
      "hf:nobody/missing-GGUF:Q8_0",
      {},
      "auth",
      "repository nobody/missing-GGUF not found",
    );
    await fail("hf:nobody/missing-GGUF:Q8_0", { HF_TOKEN: TOKEN }, "not_found", "(HTTP 404");
    await fail(
      "hf:test-org/tiny-GGUF:Q8_0@no-such-branch",
      {},
      "not_found",
      'revision "no-such-branch" not found',
    );
    const file = await fail(
      "hf:test-org/tiny-GGUF/tiny-Q5_0.gguf",
      {},
      "not_found",
      "tiny-Q5_0.gguf not found",
    );
    assert(file.includes("close matches: tiny-"), file);
    await fail(
      "hf:test-org/tiny-GGUF/weights.safetensors",
      {},
      "unsupported",
      "is not a GGUF file",
    );
    await fail(
      "hf:test-org/tiny-GGUF/split/big-Q6_K-00001-of-00002.gguf",
      {},
      "unsupported",
      "split into 2 files",
    );

    const r = await pullModel(
      "hf:gated-org/secret-GGUF:Q8_0",
      options(hub, cacheDir, events, { HF_TOKEN: TOKEN }),
    );
    assertEquals(sha256Hex(await Deno.readFile(r.path)), sha256Hex(fixture("tiny-q8_0.gguf")));
    const toHub = hub.seen.filter((q) =>
      !q.path.startsWith("/cdn/") && q.path.includes("secret-GGUF")
    );
    assert(
      toHub.some((q) => q.authorization === `Bearer ${TOKEN}`),
      "the token went as a Bearer header",
    );
    for (const q of hub.requests("/cdn/")) {
      assertEquals(q.authorization, null, "the CDN never sees the token");
    }
    const said = JSON.stringify(events) + errors.join("\n");
    assert(
      !said.includes(TOKEN) && !said.includes("hf_wrongToken"),
      "no token in events or errors",
    );
    assert(!said.includes("signed-url-secret"), "no signed CDN query in events or errors");
  });
});

Deno.test("pull: a body that is not a GGUF is refused and deleted", async () => {
  await withHub(async (hub, cacheDir) => {
    // A GGUF-named file whose bytes are something else (an HTML error page served as content).
    hub.repos["test-org/tiny-GGUF"].files.push({
      path: "fake-Q2_K.gguf",
      bytes: new TextEncoder().encode("<html>oops</html>"),
      lfs: true,
    });
    await assertRejects(
      () => pullModel("hf:test-org/tiny-GGUF:Q2_K", options(hub, cacheDir)),
      HubError,
      'does not start with "GGUF"',
    );
    const dir = `${cacheDir}/hub/test-org/tiny-GGUF/${hub.commit("test-org/tiny-GGUF")}`;
    assert(
      !(await exists(`${dir}/fake-Q2_K.gguf.part`)) && !(await exists(`${dir}/fake-Q2_K.gguf`)),
    );
  });
});

Deno.test("pull: a listing entry that climbs out of the repository is ignored", async () => {
  await withHub(async (hub, cacheDir) => {
    hub.repos["test-org/tiny-GGUF"].files.push({
      path: "../../escape-Q3_K_L.gguf",
      bytes: fixture("tiny-q4_0.gguf"),
      lfs: true,
    });
    await assertRejects(
      () => pullModel("hf:test-org/tiny-GGUF:Q3_K_L", options(hub, cacheDir)),
      HubError,
      'has "Q3_K_L" in its name',
    );
  });
});

Deno.test("pull: two pulls of one file at once both get the whole verified file", async () => {
  await withHub(async (hub, cacheDir) => {
    const want = sha256Hex(fixture("kq-q5_k_m.gguf"));
    const [a, b] = await Promise.all([
      pullModel("hf:test-org/tiny-GGUF:Q5_K_M", options(hub, cacheDir)),
      pullModel("hf:test-org/tiny-GGUF/kq/kq-Q5_K_M.gguf", options(hub, cacheDir)),
    ]);
    assertEquals(a.path, b.path);
    assertEquals(sha256Hex(await Deno.readFile(a.path)), want);
    assertEquals(
      hub.requests("/cdn/").filter((q) => q.method === "GET").length,
      1,
      "downloaded once",
    );
    assert([a.cached, b.cached].includes(true), "the second found the first's file");
  });
});

Deno.test("pull: a reference pinned to a cached commit needs no network; HF_HUB_OFFLINE uses only the cache", async () => {
  await withHub(async (hub, cacheDir) => {
    const r = await pullModel("hf:test-org/tiny-GGUF:Q4_0", options(hub, cacheDir));
    const commit = hub.commit("test-org/tiny-GGUF");
    const n = hub.seen.length;
    const pinned = await pullModel(`hf:test-org/tiny-GGUF:Q4_0@${commit}`, options(hub, cacheDir));
    assertEquals([pinned.path, hub.seen.length], [r.path, n]);
    const off = await pullModel(
      "hf:test-org/tiny-GGUF:Q4_0",
      options(hub, cacheDir, [], { HF_HUB_OFFLINE: "1" }),
    );
    assertEquals([off.path, hub.seen.length], [r.path, n]);
    await assertRejects(
      () =>
        pullModel("hf:test-org/tiny-GGUF:F16", options(hub, cacheDir, [], { HF_HUB_OFFLINE: "1" })),
      HubError,
      "HF_HUB_OFFLINE is set",
    );
  });
});

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}
