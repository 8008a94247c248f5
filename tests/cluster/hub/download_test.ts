/**
 * cluster/hub/download.ts's small parts: etags as huggingface_hub normalizes them, resolve URLs
 * with encoded revisions and paths, and cache write failures worded for the user (disk full
 * cannot be produced on a test machine's disk, so the mapping is checked directly).
 */
import { diskError, normalizeEtag, resolveUrl } from "../../../cluster/hub/download.ts";
import { hubClient, parseHubReference } from "../../../cluster/hub/mod.ts";
import { assert, assertEquals } from "../../support/assert.ts";

Deno.test("etags lose W/ and quotes; resolve URLs encode the revision and each path segment", () => {
  assertEquals(normalizeEtag('W/"abc"'), "abc");
  assertEquals(normalizeEtag('"0123"'), "0123");
  assertEquals(normalizeEtag(null), undefined);
  const client = hubClient({ env: { HF_ENDPOINT: "https://mirror.example/" } });
  assertEquals(client.endpoint, "https://mirror.example");
  assertEquals(
    resolveUrl(client, parseHubReference("hf:o/r:Q4_0"), "refs/pr/1", "dir/a b.gguf"),
    "https://mirror.example/o/r/resolve/refs%2Fpr%2F1/dir/a%20b.gguf",
  );
  assertEquals(hubClient().endpoint, "https://huggingface.co");
  assert(!hubClient().hasToken && hubClient({ env: { HF_TOKEN: "hf_x" } }).hasToken);
});

Deno.test("a full disk or an unwritable cache is a disk error that says what to do", () => {
  const full = Object.assign(new Error("No space left on device (os error 28)"), {
    code: "ENOSPC",
  });
  const e = diskError(full, { partPath: "/c/hub/o/r/x/m.gguf.part", size: 4_000_000_000 });
  assertEquals(e.kind, "disk");
  assert(e.message.includes("disk full") && e.message.includes("--cache-dir"), e.message);
  assert(e.message.includes("4000000000 bytes"), e.message);
  const ro = diskError(new Deno.errors.PermissionDenied("Permission denied"), {
    partPath: "/p",
    size: 1,
  });
  assert(ro.kind === "disk" && ro.message.includes("writable --cache-dir"), ro.message);
});
