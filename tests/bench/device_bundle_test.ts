/**
 * bench/device_bundle.sh carries the device report to a GPU machine that reaches no package
 * registry: packed here, unpacked in a copy of the checkout, Deno runs from the bundle and the
 * bench task starts with every npm package it needs in place — the registry given to it is a
 * closed port, so a package left out of the bundle fails the test instead of being downloaded.
 */
import { dirname } from "node:path";
import { assert, assertEquals } from "../support/assert.ts";
import { REPO } from "../support/paths.ts";

async function sh(script: string, cwd: string, env: Record<string, string> = {}) {
  const r = await new Deno.Command("bash", {
    args: ["-c", script],
    cwd,
    env: { PATH: `${dirname(Deno.execPath())}:${Deno.env.get("PATH") ?? ""}`, ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  return { code: r.code, text };
}

Deno.test("bench/device_bundle.sh: packed here, the report's tools run there without a registry", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "dllm-device-bundle-" });
  try {
    const bundle = `${tmp}/bundle`;
    // xz level 0 and no loader packages: the round trip, not the compression, is under test.
    const pack = await sh("bash bench/device_bundle.sh pack '^tiny-q8_0$'", REPO, {
      DLLM_DEVICE_BUNDLE: bundle,
      DLLM_DEVICE_XZ: "0",
      DLLM_DEVICE_DEBS: "0",
    });
    assertEquals(pack.code, 0, pack.text);
    // The checkout as the device receives it: tracked and untracked-not-ignored files, plus the
    // carried build and bundle.
    const copy = `${tmp}/repo`;
    await Deno.mkdir(copy);
    const cp = await sh(
      `(git ls-files -co --exclude-standard; ls kernels/wasm/build/*) | tar -cf - -T - | tar -xf - -C '${copy}' && mv '${bundle}' '${copy}/.device'`,
      REPO,
    );
    assertEquals(cp.code, 0, cp.text);
    const there = await sh(
      "bash bench/device_bundle.sh unpack && . .device/env.sh && command -v deno && " +
        'deno task bench gpu --help && ls "$DLLM_SHARED"/fixtures/models',
      copy,
      {
        DENO_DIR: `${tmp}/deno-dir`,
        NPM_CONFIG_REGISTRY: "http://127.0.0.1:9/",
        HOME: tmp,
      },
    );
    assertEquals(there.code, 0, there.text);
    assert(there.text.includes(`${copy}/.device/bin/deno`), `deno from the bundle:\n${there.text}`);
    assert(
      there.text.includes("see the header of bench/gpu.ts"),
      `bench gpu --help ran:\n${there.text}`,
    );
    assert(!/Download\s+http/.test(there.text), `nothing downloaded:\n${there.text}`);
    // only the chosen fixture model travelled
    assert(/^tiny-q8_0\.gguf$/m.test(there.text), there.text);
    assert(!/^tiny-f32\.gguf$/m.test(there.text), there.text);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
