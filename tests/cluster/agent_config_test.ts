/**
 * Agent settings: `--speed` (DLLM_SPEED, "speed" in a config file) replaces the start-up
 * calibration as the node's placement weight, and bad values name the setting and its source.
 */
import {
  AgentConfigError,
  interfaceAddress,
  resolveConfig,
  settingsFromEnv,
  settingsFromFile,
} from "../../cluster/agent_config.ts";
import { assertEquals, assertRejects, assertThrows } from "../support/assert.ts";

const base = { memoryBudget: "1GB" };

Deno.test("--speed sets the placement weight; unset, the agent calibrates", () => {
  assertEquals(resolveConfig([["default", base]]).speed, undefined);
  assertEquals(resolveConfig([["flag", { speed: "80" }], ["default", base]]).speed, 80);
  assertEquals(resolveConfig([["config file", { speed: 12.5 }], ["default", base]]).speed, 12.5);
  const env = settingsFromEnv({ DLLM_SPEED: " 3 " });
  assertEquals(resolveConfig([["env", env], ["default", base]]).speed, 3);
  // A flag wins over the environment.
  assertEquals(resolveConfig([["flag", { speed: "2" }], ["env", env], ["default", base]]).speed, 2);
});

Deno.test("a speed that is not a positive number is refused, naming where it came from", () => {
  for (const bad of ["0", "-1", "fast", "", "NaN", "Infinity", "1e12"]) {
    assertThrows(
      () => resolveConfig([["flag", { speed: bad }], ["default", base]]),
      AgentConfigError,
      "--speed: expected GFLOP/s above 0",
    );
  }
  assertThrows(
    () => resolveConfig([["env", settingsFromEnv({ DLLM_SPEED: "x" })], ["default", base]]),
    AgentConfigError,
    "DLLM_SPEED: expected GFLOP/s above 0",
  );
});

Deno.test("--data-port: any free port by default, else a port number", () => {
  assertEquals(resolveConfig([["default", base]]).dataPort, 0);
  assertEquals(resolveConfig([["flag", { dataPort: "7951" }], ["default", base]]).dataPort, 7951);
  assertThrows(
    () => resolveConfig([["flag", { dataPort: "70000" }], ["default", base]]),
    AgentConfigError,
    "--data-port",
  );
});

Deno.test("--prefill-chunk: 64 rows by default, 0 turns pipelined prompts off", () => {
  assertEquals(resolveConfig([["default", base]]).prefillChunk, 64);
  assertEquals(resolveConfig([["env", { prefillChunk: "0" }], ["default", base]]).prefillChunk, 0);
  assertThrows(
    () => resolveConfig([["flag", { prefillChunk: "-1" }], ["default", base]]),
    AgentConfigError,
    "--prefill-chunk",
  );
});

Deno.test("gossip on a reachable address needs a key (or --insecure-bind-all), as RPC needs TLS", () => {
  const on = (extra: Record<string, unknown>) =>
    resolveConfig([["flag", { bind: "0.0.0.0", ...extra }], ["default", base]]);
  assertThrows(() => on({}), AgentConfigError, "refusing to gossip in plaintext on 0.0.0.0");
  const key = btoa(String.fromCharCode(...new Uint8Array(32).fill(7)));
  assertEquals(on({ gossipKeys: [key] }).bind, "0.0.0.0");
  assertEquals(on({ insecureBindAll: true }).bind, "0.0.0.0");
  assertEquals(resolveConfig([["default", base]]).bind, "127.0.0.1", "loopback needs neither");
});

Deno.test("bound to every interface, an agent advertises one peers can reach, not 127.0.0.1", () => {
  const nic = (name: string, family: "IPv4" | "IPv6", address: string) =>
    ({
      name,
      family,
      address,
      netmask: "",
      scopeid: null,
      cidr: "",
      mac: "",
    }) as Deno.NetworkInterfaceInfo;
  const nics = [
    nic("lo", "IPv4", "127.0.0.1"),
    nic("eth0", "IPv6", "fe80::1"),
    nic("eth0", "IPv4", "10.1.2.3"),
    nic("lo", "IPv6", "::1"),
  ];
  assertEquals(interfaceAddress("0.0.0.0", nics), "10.1.2.3");
  assertEquals(interfaceAddress("::", [nics[0], nic("eth0", "IPv6", "fd00::2")]), "fd00::2");
  assertThrows(
    () => interfaceAddress("0.0.0.0", [nics[0], nics[3]]),
    AgentConfigError,
    "--advertise-address",
  );
  // Before, --bind 0.0.0.0 advertised 127.0.0.1, and peers on other hosts dialled themselves.
  const at = (extra: Record<string, unknown>) =>
    resolveConfig([["flag", { bind: "0.0.0.0", insecureBindAll: true, ...extra }], [
      "default",
      base,
    ]]);
  const cfg = at({});
  assertEquals(cfg.advertiseAddress !== "127.0.0.1", true, cfg.advertiseAddress);
  const given = at({ advertiseAddress: "10.9.9.9" });
  assertEquals(given.advertiseAddress, "10.9.9.9");
});

Deno.test("secrets: an empty API key is refused; keys can come from files, out of the process list", async () => {
  const on = (extra: Record<string, unknown>, env: Record<string, string> = {}) =>
    resolveConfig([["flag", extra], ["env", settingsFromEnv(env)], ["default", base]]);
  // Before, an empty key (--api-key "$UNSET", DLLM_API_KEY="") silently left the API open.
  assertThrows(() => on({ apiKey: "" }), AgentConfigError, "--api-key: is empty");
  assertThrows(() => on({}, { DLLM_API_KEY: "" }), AgentConfigError, "DLLM_API_KEY: is empty");
  assertEquals(on({}, {}).apiKey, undefined, "no key at all: an open API, as before");
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/api`, "sk-from-file\n");
    assertEquals(on({ apiKeyFile: `${dir}/api` }).apiKey, "sk-from-file");
    assertThrows(
      () => on({ apiKeyFile: `${dir}/api`, apiKey: "x" }),
      AgentConfigError,
      "not both",
    );
    const key = btoa(String.fromCharCode(...new Uint8Array(32).fill(3)));
    await Deno.writeTextFile(`${dir}/gossip`, `${key}\n${key}\n`);
    assertEquals(on({ gossipKeysFile: `${dir}/gossip` }).gossipKeys, [key, key]);
    await Deno.writeTextFile(`${dir}/empty`, "\n");
    assertThrows(() => on({ apiKeyFile: `${dir}/empty` }), AgentConfigError, "is empty");
    const e = assertThrows(
      () => on({ apiKeyFile: `${dir}/none` }),
      AgentConfigError,
      "cannot read",
    );
    assertEquals(e.message.includes("sk-"), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("secrets: an empty gossip key file (or an empty --gossip-keys) is refused, not taken as plaintext", async () => {
  const on = (extra: Record<string, unknown>, env: Record<string, string> = {}) =>
    resolveConfig([["flag", extra], ["env", settingsFromEnv(env)], ["default", base]]);
  const dir = await Deno.makeTempDir();
  try {
    // Before, an empty file meant no keys: plaintext gossip on loopback, without a word.
    for (const text of ["", "\n", " , \n"]) {
      await Deno.writeTextFile(`${dir}/empty`, text);
      assertThrows(
        () => on({ gossipKeysFile: `${dir}/empty` }),
        AgentConfigError,
        `--gossip-keys-file: ${dir}/empty is empty`,
      );
      assertThrows(
        () => on({}, { DLLM_GOSSIP_KEYS_FILE: `${dir}/empty` }),
        AgentConfigError,
        `DLLM_GOSSIP_KEYS_FILE: ${dir}/empty is empty`,
      );
      // Off loopback the refusal names the empty file, not a missing --gossip-keys.
      const e = assertThrows(
        () => on({ gossipKeysFile: `${dir}/empty`, bind: "0.0.0.0", advertiseAddress: "10.0.0.1" }),
        AgentConfigError,
        "is empty",
      );
      assertEquals(e.message.includes("refusing to gossip in plaintext"), false, e.message);
    }
    assertThrows(() => on({ gossipKeys: "" }), AgentConfigError, "--gossip-keys: is empty");
    assertThrows(() => on({ gossipKeys: " , " }), AgentConfigError, "--gossip-keys: is empty");
    assertThrows(
      () => on({}, { DLLM_GOSSIP_KEYS: "" }),
      AgentConfigError,
      "DLLM_GOSSIP_KEYS: is empty",
    );
    assertEquals(on({}).gossipKeys, [], "no keys given at all: plaintext on loopback, as before");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--departed-retention: how long views list dead members; 10 minutes by default, durations in m and h too", () => {
  const on = (extra: Record<string, unknown>) =>
    resolveConfig([["flag", extra], ["default", base]]);
  assertEquals(on({}).departedRetention, 600_000);
  assertEquals(on({ departedRetention: "1h" }).departedRetention, 3_600_000);
  assertEquals(on({ departedRetention: "90" }).departedRetention, 90_000);
  assertEquals(on({ departedRetention: "0" }).departedRetention, 0);
  assertEquals(on({ shutdownGrace: "1.5m" }).shutdownGrace, 90_000);
  assertThrows(
    () => on({ departedRetention: "soon" }),
    AgentConfigError,
    "--departed-retention: expected a duration",
  );
  const env = settingsFromEnv({ DLLM_DEPARTED_RETENTION: "2m" });
  assertEquals(resolveConfig([["env", env], ["default", base]]).departedRetention, 120_000);
});

Deno.test("an empty port and malformed seeds are refused at start, naming the flag", () => {
  const on = (extra: Record<string, unknown>) =>
    resolveConfig([["flag", extra], ["default", base]]);
  // Number("") is 0: before, --rpc-port "" started on a random port.
  assertThrows(() => on({ rpcPort: "" }), AgentConfigError, "--rpc-port");
  // Before, a bad port was read as an IPv6 host and retried forever.
  assertThrows(() => on({ seeds: "10.0.0.1:99999" }), AgentConfigError, "--seeds");
  assertThrows(() => on({ seeds: "127.0.0.1:notaport" }), AgentConfigError, "--seeds");
  assertThrows(() => on({ seeds: ":7946" }), AgentConfigError, "names no host");
  for (const ok of ["10.0.0.1:7946", "peers.svc.cluster.local", "[fd00::2]:7946", "fd00::2"]) {
    assertEquals(on({ seeds: ok }).seeds, [ok]);
  }
  // A config file's array is trimmed and its empty entries dropped, as a flag's list is.
  assertEquals(on({ seeds: ["10.0.0.1:7946 ", ""] }).seeds, ["10.0.0.1:7946"]);
  // A malformed list of gossip keys is refused without echoing them.
  const e = assertThrows(
    () => on({ gossipKeys: ["c2VjcmV0", 5] }),
    AgentConfigError,
    "--gossip-keys",
  );
  assertEquals(e.message.includes("c2VjcmV0"), false, e.message);
});

Deno.test("a size past 2^53 bytes is refused by its flag, not later by gossip as a long file name", () => {
  // It reached the gossip metadata, which refused it as "the model id … does not fit; give the
  // file a shorter name".
  assertThrows(
    () => resolveConfig([["flag", { memoryBudget: "100000TB" }]]),
    AgentConfigError,
    '--memory-budget: "100000TB" is more than 8 PiB',
  );
  assertEquals(resolveConfig([["flag", { memoryBudget: "1000TB" }]]).memoryBudget, 1e15);
});

Deno.test("HTTPS for the API needs the certificate and its key, from flags or env", () => {
  const on = (extra: Record<string, unknown>, env: Record<string, string> = {}) =>
    resolveConfig([["flag", extra], ["env", settingsFromEnv(env)], ["default", base]]);
  assertThrows(() => on({ apiTlsCert: "a.crt" }), AgentConfigError, "--api-tls-key");
  assertThrows(() => on({}, { DLLM_API_TLS_KEY: "a.key" }), AgentConfigError, "--api-tls-cert");
  const both = on({ apiTlsCert: "a.crt" }, { DLLM_API_TLS_KEY: "a.key" });
  assertEquals([both.apiTlsCert, both.apiTlsKey], ["a.crt", "a.key"]);
  assertEquals(on({}).apiTlsCert, undefined, "plain HTTP by default");
});

Deno.test("values that were taken and misbehaved later are refused at start, naming the setting (review)", () => {
  const on = (extra: Record<string, unknown>, src: "flag" | "config file" = "flag") =>
    resolveConfig([[src, extra], ["default", base]]);
  // 600h ran as 1 ms (a timer's bound is 2^31 − 1 ms): every connection was cut at once.
  assertThrows(() => on({ httpHeaderTimeout: "600h" }), AgentConfigError, "--http-header-timeout");
  assertThrows(() => on({ httpBodyTimeout: "0" }), AgentConfigError, "--http-body-timeout");
  assertEquals(on({ httpBodyTimeout: "596h" }).httpBodyTimeout, 596 * 3_600_000);
  // Peers could not reach an agent advertising "127.0.0.1:5", and it flapped.
  for (const bad of ["127.0.0.1:5", "a b", "", "http://x"]) {
    assertThrows(() => on({ advertiseAddress: bad }), AgentConfigError, "--advertise-address");
  }
  assertEquals(on({ advertiseAddress: "[fd00::2]" }).advertiseAddress, "fd00::2");
  assertEquals(
    on({ advertiseAddress: "node-3.lab.example" }).advertiseAddress,
    "node-3.lab.example",
  );
  // A space for a comma, or a scheme, was a bare IPv6 host retried forever.
  for (const bad of ["127.0.0.1:1 127.0.0.2:1", "http://127.0.0.1:7946", "a:b:c"]) {
    assertThrows(() => on({ seeds: bad }), AgentConfigError, "--seeds");
  }
  assertEquals(on({ seeds: "fd00::2,[fd00::3]:7000" }).seeds, ["fd00::2", "[fd00::3]:7000"]);
  // An empty --bind was refused as "refusing to gossip in plaintext on :".
  assertThrows(() => on({ bind: "" }), AgentConfigError, "--bind");
  // Number's other spellings of an integer.
  assertThrows(() => on({ rpcPort: "0x7d0" }), AgentConfigError, "--rpc-port");
  assertThrows(() => on({ maxSessions: "1e1" }), AgentConfigError, "--max-sessions");
  // A config file's numbers of bytes: whole and not negative (1.5 and 1e309 were taken and
  // failed later blaming the model's file name; -5 meant unlimited).
  for (const v of [1.5, Infinity, -5]) {
    assertThrows(() => on({ memoryBudget: v }, "config file"), AgentConfigError, "memoryBudget");
    assertThrows(
      () => on({ transferRateLimit: v }, "config file"),
      AgentConfigError,
      "transferRateLimit",
    );
  }
});

Deno.test("a config file's keys: own settings only, each once", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (
      const [body, why] of [
        ['{"toString": 1}', 'unknown setting "toString"'],
        ['{"rpc-port": 1, "rpcPort": 2}', "a second time"],
      ]
    ) {
      const path = `${dir}/c.json`;
      await Deno.writeTextFile(path, body);
      await assertRejects(() => settingsFromFile(path), AgentConfigError, why);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
