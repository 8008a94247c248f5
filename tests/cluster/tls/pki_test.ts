import { X509Certificate } from "node:crypto";
import {
  addCertificates,
  CertsError,
  checkAgentCertificate,
  checkNodeName,
  initCertificates,
  loadClientTls,
  loadTlsFiles,
  TlsConfigError,
  tlsFilesFromOptions,
} from "../../../cluster/tls/mod.ts";
import { certsCommand } from "../../../cli/commands/certs.ts";
import {
  computeManifest,
  openManifest,
  signedManifest,
} from "../../../cluster/transfer/manifest.ts";
import { REPO } from "../../support/paths.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../../support/assert.ts";

const cert = (path: string) => new X509Certificate(Deno.readTextFileSync(path));

async function tempDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "dllm-pki-" });
}

Deno.test("initCertificates: a CA, node certificates for server + client use, an llmctl client cert", async () => {
  const dir = await tempDir();
  try {
    const files = await initCertificates({
      dir,
      nodes: ["a", "node-b.lan"],
      hosts: ["10.0.0.5", "llm.example"],
    });
    assertEquals(files.map((f) => f.slice(dir.length + 1)), [
      "ca.crt",
      "ca.key",
      "a.crt",
      "a.key",
      "node-b.lan.crt",
      "node-b.lan.key",
      "llmctl.crt",
      "llmctl.key",
    ]);
    const ca = cert(`${dir}/ca.crt`);
    assert(ca.ca, "ca.crt is not a CA");
    assert(ca.verify(ca.publicKey), "CA is not self-signed");
    const a = cert(`${dir}/a.crt`);
    assert(!a.ca);
    assert(a.checkIssued(ca) && a.verify(ca.publicKey), "a.crt is not signed by the CA");
    assertEquals(
      a.subjectAltName,
      "DNS:a, DNS:localhost, IP Address:127.0.0.1, IP Address:::1, IP Address:10.0.0.5, DNS:llm.example",
    );
    assert(a.subject.includes("CN=a"), a.subject);
    const days = (Date.parse(a.validTo) - Date.now()) / 86_400_000;
    assert(days > 364 && days < 366, `validity ${days} days`);
    const client = cert(`${dir}/llmctl.crt`);
    assert(client.verify(ca.publicKey));
    assertEquals(client.subjectAltName, undefined);
    // Private keys are for their owner only.
    for (const k of ["ca.key", "a.key", "llmctl.key"]) {
      assertEquals((await Deno.stat(`${dir}/${k}`)).mode! & 0o777, 0o600, k);
    }
    // The files load as TLS material.
    const m = await loadTlsFiles({
      cert: `${dir}/a.crt`,
      key: `${dir}/a.key`,
      ca: `${dir}/ca.crt`,
    });
    assert(m.key.includes("PRIVATE KEY"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openssl agrees the chain is valid (when openssl is installed)", async () => {
  const dir = await tempDir();
  try {
    await initCertificates({ dir, nodes: ["a"] });
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command("openssl", {
        args: ["verify", "-purpose", "sslserver", "-CAfile", `${dir}/ca.crt`, `${dir}/a.crt`],
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return; // nothing to compare with
      throw e;
    }
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert(out.success && text.includes(": OK"), text);
    const client = await new Deno.Command("openssl", {
      args: ["verify", "-purpose", "sslclient", "-CAfile", `${dir}/ca.crt`, `${dir}/llmctl.crt`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(client.success, new TextDecoder().decode(client.stderr));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("addCertificates: more nodes from the same CA; init refuses to replace a CA", async () => {
  const dir = await tempDir();
  try {
    await initCertificates({ dir, nodes: ["a"] });
    await assertRejects(() => initCertificates({ dir, nodes: ["a"] }), CertsError, "certs add");
    await addCertificates({ dir, nodes: ["c"] });
    assert(cert(`${dir}/c.crt`).verify(cert(`${dir}/ca.crt`).publicKey));
    await assertRejects(() => addCertificates({ dir, nodes: ["c"] }), CertsError, "--force");
    await addCertificates({ dir, nodes: ["c"], force: true });
    // A CA key that does not match the CA certificate is caught before signing anything.
    const other = await tempDir();
    await initCertificates({ dir: other, nodes: ["x"] });
    await Deno.copyFile(`${other}/ca.key`, `${dir}/ca.key`);
    await assertRejects(
      () => addCertificates({ dir, nodes: ["d"] }),
      CertsError,
      "does not belong",
    );
    await Deno.remove(other, { recursive: true });
    await assertRejects(
      () => addCertificates({ dir: `${dir}/none`, nodes: ["d"] }),
      CertsError,
      "certs init",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bad names and hosts are refused with the reason", async () => {
  const dir = await tempDir();
  try {
    await assertRejects(
      () => initCertificates({ dir, nodes: ["a_b"] }),
      CertsError,
      "not a valid DNS name",
    );
    await assertRejects(() => initCertificates({ dir, nodes: ["llmctl"] }), CertsError, "reserved");
    await assertRejects(() => initCertificates({ dir, nodes: ["a", "a"] }), CertsError, "twice");
    await assertRejects(() => initCertificates({ dir, nodes: [] }), CertsError, "--nodes");
    await assertRejects(
      () => initCertificates({ dir, nodes: ["a"], hosts: ["not a host"] }),
      CertsError,
      "neither an IP",
    );
    // An IPv6 address the certificate cannot encode is refused before any file is written
    // (before, the CA was written first and a rerun met "ca.crt already exists").
    for (const host of ["::ffff:10.0.0.1", "fe80::1%eth0"]) {
      const e = await assertRejects(
        () => initCertificates({ dir, nodes: ["a"], hosts: [host] }),
        CertsError,
        "plain hex",
      );
      assert((e as CertsError).usage, "a bad host is a usage error (exit 2)");
    }
    assertEquals([...Deno.readDirSync(dir)].length, 0, "nothing was written");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("TLS files: all three or none; missing or swapped files are named", async () => {
  assertEquals(tlsFilesFromOptions({}), undefined);
  assertThrows(
    () => tlsFilesFromOptions({ tlsCert: "a.crt" }),
    TlsConfigError,
    "missing --tls-key, --tls-ca",
  );
  const dir = await tempDir();
  try {
    await initCertificates({ dir, nodes: ["a"] });
    await assertRejects(
      () => loadTlsFiles({ cert: `${dir}/nope.crt`, key: `${dir}/a.key`, ca: `${dir}/ca.crt` }),
      TlsConfigError,
      "(--tls-cert): no such file",
    );
    await assertRejects(
      () => loadTlsFiles({ cert: `${dir}/a.key`, key: `${dir}/a.crt`, ca: `${dir}/ca.crt` }),
      TlsConfigError,
      "swap",
    );
    // Files that read fine but cannot serve mTLS: refused at start, by name (before, the agent
    // started and every handshake failed with "socket disconnected").
    await initCertificates({ dir: `${dir}/other`, nodes: ["x"] });
    await addCertificates({ dir, nodes: ["b"] });
    const load = (cert: string, key: string, ca = `${dir}/ca.crt`) =>
      loadTlsFiles({ cert: `${dir}/${cert}`, key: `${dir}/${key}`, ca });
    await assertRejects(() => load("a.crt", "b.key"), TlsConfigError, "is not the key of");
    await assertRejects(() => load("other/x.crt", "other/x.key"), TlsConfigError, "not signed by");
    await assertRejects(() => load("llmctl.crt", "llmctl.key"), TlsConfigError, "may not serve");
    // A CA file holding two CAs (a rotation) is fine when either signed the certificate.
    const rotated = `${dir}/both-ca.crt`;
    await Deno.writeTextFile(
      rotated,
      (await Deno.readTextFile(`${dir}/other/ca.crt`)) + (await Deno.readTextFile(`${dir}/ca.crt`)),
    );
    await load("a.crt", "a.key", rotated);
    const m = await load("a.crt", "a.key");
    assertThrows(
      () =>
        checkAgentCertificate(
          { cert: "a.crt", key: "a.key", ca: "ca.crt" },
          m,
          new Date(Date.now() + 400 * 86_400_000),
        ),
      TlsConfigError,
      "not now",
    );
    // llmctl's side: a key of another certificate is named before any handshake (it failed as
    // "Internal: unsupported protocol").
    await assertRejects(
      () =>
        loadClientTls({
          ca: `${dir}/ca.crt`,
          cert: `${dir}/llmctl.crt`,
          key: `${dir}/a.key`,
        }),
      TlsConfigError,
      `"${dir}/a.key" (--tls-key) is not the key of "${dir}/llmctl.crt" (--tls-cert)`,
    );
    const client = await loadClientTls({
      ca: `${dir}/ca.crt`,
      cert: `${dir}/llmctl.crt`,
      key: `${dir}/llmctl.key`,
    });
    assert(client.key?.includes("PRIVATE KEY"), "the matching pair loads");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("llmctl certs init / add", async () => {
  const dir = await tempDir();
  const log = console.log;
  const lines: string[] = [];
  console.log = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    await certsCommand().exitOverride().parseAsync(
      ["init", "--out", dir, "--nodes", "a,b,c", "--hosts", "10.0.0.5", "--days", "30", "--json"],
      { from: "user" },
    );
    const out = JSON.parse(lines.at(-1)!);
    assertEquals(out.files.length, 10);
    const days = (Date.parse(cert(`${dir}/b.crt`).validTo) - Date.now()) / 86_400_000;
    assert(days > 29 && days < 31, `validity ${days}`);
    await certsCommand().exitOverride().parseAsync(["add", "--out", dir, "--nodes", "d"], {
      from: "user",
    });
    assert(lines.some((l) => l.includes(`--tls-cert ${dir}/d.crt`)), lines.join("\n"));
    // A stray comma is a usage error from commander.
    const cmd = certsCommand().exitOverride();
    cmd.commands.forEach((c) => c.exitOverride().configureOutput({ writeErr: () => {} }));
    let failed = false;
    try {
      await cmd.parseAsync(["add", "--out", dir, "--nodes", "e,,f"], { from: "user" });
    } catch (e) {
      failed = true;
      assert(String(e).includes("without empty items"), String(e));
    }
    assert(failed, "a,,b was accepted");
  } finally {
    console.log = log;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a certificate issued through an intermediate CA passes at start and signs manifests", async () => {
  const dir = await tempDir();
  const ssl = async (...args: string[]) => {
    const out = await new Deno.Command("openssl", { args, cwd: dir, stderr: "piped" }).output();
    assert(out.success, new TextDecoder().decode(out.stderr));
  };
  try {
    try {
      await ssl("version");
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return; // openssl builds the intermediate
      throw e;
    }
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    await ssl(
      "req",
      "-x509",
      ...ec,
      "-keyout",
      "ca.key",
      "-out",
      "ca.crt",
      "-subj",
      "/CN=root",
      "-days",
      "2",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    );
    // `name`.key and `name`.crt for subject `cn`, issued by `ca`.key/.crt with extensions `ext`.
    const issue = async (name: string, cn: string, ca: string, ext: string) => {
      await Deno.writeTextFile(`${dir}/${name}.ext`, ext);
      await ssl("req", "-new", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", cn);
      await ssl(
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        `${ca}.crt`,
        "-CAkey",
        `${ca}.key`,
        "-CAcreateserial",
        "-out",
        `${name}.crt`,
        "-days",
        "2",
        "-extfile",
        `${name}.ext`,
      );
    };
    await issue(
      "int",
      "/CN=int",
      "ca",
      "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    await issue(
      "a",
      "/CN=a",
      "int",
      "subjectAltName=DNS:a,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    );
    const chain = (await Deno.readTextFile(`${dir}/a.crt`)) +
      (await Deno.readTextFile(`${dir}/int.crt`));
    await Deno.writeTextFile(`${dir}/a-chain.crt`, chain);
    const m = await loadTlsFiles({
      cert: `${dir}/a-chain.crt`,
      key: `${dir}/a.key`,
      ca: `${dir}/ca.crt`,
    });
    // The same chain signs manifests that peers accept (before, the start check took it and
    // every deploy from the node was refused: only the leaf was checked against the root).
    const { bytes } = await computeManifest(`${REPO}/models/stories260K.gguf`, { nodeId: "a" });
    const signed = signedManifest(bytes, { cert: m.cert, key: m.key }, []);
    assert(openManifest(signed, m.ca).signature.startsWith("verified"));
    // Without the intermediate in the file, the leaf leads to no CA here.
    await assertRejects(
      () => loadTlsFiles({ cert: `${dir}/a.crt`, key: `${dir}/a.key`, ca: `${dir}/ca.crt` }),
      TlsConfigError,
      "not signed by",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a node id no certificate can name gets advice that can be followed", () => {
  // "node_1" is a valid --node-id but no DNS name: the advice was "use the node's --node-id".
  const e = assertThrows(() => checkNodeName("node_1"), CertsError);
  assert(!e.message.includes("so use the node's --node-id"), e.message);
  assert(e.message.includes("--tls-peer-name"), e.message);
});
