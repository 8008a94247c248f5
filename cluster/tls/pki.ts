/**
 * The cluster's small PKI: one CA, a certificate per node (server + client use, so the same
 * files serve its listener and its calls to peers), and a client certificate for llmctl.
 * `llmctl certs init` and `llmctl certs add` are thin shells over this module.
 *
 * Layout of the output directory (flat, so flags read naturally):
 * ```
 * ca.crt  ca.key            the CA (keep ca.key off the nodes)
 * <node>.crt  <node>.key    one pair per node: --tls-cert/--tls-key, with --tls-ca ca.crt
 * llmctl.crt  llmctl.key    for llmctl and other tools (client use only)
 * ```
 *
 * @module
 */
import { createPublicKey } from "node:crypto";
import { isIP } from "node:net";
import {
  buildCertificate,
  generateKey,
  type Issuer,
  issuerFromPem,
  privateKeyPem,
  toPem,
} from "./x509.ts";

/** Validity of node and client certificates unless told otherwise, days. */
export const DEFAULT_CERT_DAYS = 365;
/** Validity of the CA, days: longer than its leaves so renewing nodes needs no new CA. */
export const DEFAULT_CA_DAYS = 3650;
/** Name of the llmctl client certificate (and so a name no node may take). */
export const CLIENT_NAME = "llmctl";

/** A certificate and its private key, PEM. */
export interface CertPair {
  /** Certificate, PEM. */
  cert: string;
  /** PKCS#8 private key, PEM. */
  key: string;
}

/** Bad input to the PKI functions (names, hosts, existing files); the message says the fix. */
export class CertsError extends Error {
  /**
   * Make the error; `message` says what is wrong and what to do; `usage`: a bad argument (a
   * name, a host, a count), not the state of the directory.
   */
  constructor(message: string, readonly usage = false) {
    super(message);
    this.name = "CertsError";
  }
}

const DNS_NAME =
  /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/** Check a node name: it becomes a file name and a DNS subjectAltName. */
export function checkNodeName(n: string): void {
  if (!DNS_NAME.test(n)) {
    // (Node ids may hold "_", which no DNS name may: saying "use the node's --node-id" to the
    // owner of node_1 contradicted itself.)
    throw new CertsError(
      `node name "${n}" is not a valid DNS name (letters, digits, "-" and "."), which a ` +
        `certificate needs: peers check a node's certificate against its --node-id, so give ` +
        `such agents ids of that form, or one shared certificate named by --tls-peer-name`,
      true,
    );
  }
  if (n === "ca" || n === CLIENT_NAME) {
    throw new CertsError(
      `node name "${n}" is reserved for the ${n === "ca" ? "CA" : "llmctl"} files`,
      true,
    );
  }
}

/** Check an extra host for subjectAltName: an IP address, a DNS name, or a "*.domain" wildcard. */
export function checkHost(h: string): void {
  const ip = isIP(h);
  // Checked as the certificate will encode it, before any file is written: an address that
  // failed only then left a CA behind, and a rerun met "ca.crt already exists".
  if (ip === 6 && !/^[0-9a-f:]+$/i.test(h)) {
    throw new CertsError(
      `IPv6 host "${h}" must be plain hex (no embedded IPv4 like ::ffff:10.0.0.1, no zone id)`,
      true,
    );
  }
  if (ip) return;
  const plain = h.startsWith("*.") ? h.slice(2) : h;
  if (!DNS_NAME.test(plain)) {
    throw new CertsError(`host "${h}" is neither an IP address nor a DNS name`, true);
  }
}

/** Create a self-signed CA. */
export function createCa(commonName = "distributed-llm CA", days = DEFAULT_CA_DAYS): CertPair {
  const { privateKey, publicKey } = generateKey();
  const der = buildCertificate({ commonName, publicKey, isCa: true, days }, {
    selfKey: privateKey,
  });
  return { cert: toPem("CERTIFICATE", der), key: privateKeyPem(privateKey) };
}

/** Options of {@linkcode issueCertificate}. */
export interface IssueOptions {
  /** Subject common name (the node name, or "llmctl"). */
  commonName: string;
  /** "node": server + client use with SANs; "client": client use only. */
  kind: "node" | "client";
  /** Extra SANs (IPs or DNS names) beyond the defaults (127.0.0.1, ::1, localhost, the name). */
  hosts?: string[];
  /** Validity, days; default {@linkcode DEFAULT_CERT_DAYS}. */
  days?: number;
}

/** Issue a certificate signed by the CA (given as PEM, e.g. read from ca.crt/ca.key). */
export function issueCertificate(ca: CertPair | Issuer, opts: IssueOptions): CertPair {
  const issuer = "subjectDer" in ca ? ca : issuerFromPem(ca.cert, ca.key);
  const { privateKey, publicKey } = generateKey();
  const altNames = opts.kind === "node"
    ? [...new Set([opts.commonName, "localhost", "127.0.0.1", "::1", ...(opts.hosts ?? [])])]
    : [];
  const der = buildCertificate({
    commonName: opts.commonName,
    publicKey,
    usages: opts.kind === "node" ? ["server", "client"] : ["client"],
    altNames,
    days: opts.days ?? DEFAULT_CERT_DAYS,
  }, issuer);
  return { cert: toPem("CERTIFICATE", der), key: privateKeyPem(privateKey) };
}

/** Options of {@linkcode initCertificates} and {@linkcode addCertificates}. */
export interface CertsDirOptions {
  /** Output directory. */
  dir: string;
  /** Node names, one certificate each. */
  nodes: string[];
  /** Extra SANs for every node certificate (e.g. the nodes' LAN IPs, a k8s service name). */
  hosts?: string[];
  /** Validity of node and client certificates, days. */
  days?: number;
  /** Replace existing files instead of refusing. */
  force?: boolean;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function writePair(
  dir: string,
  base: string,
  pair: CertPair,
  force: boolean,
): Promise<string[]> {
  const crt = `${dir}/${base}.crt`;
  const key = `${dir}/${base}.key`;
  if (!force) {
    for (const p of [crt, key]) {
      if (await exists(p)) {
        throw new CertsError(`${p} already exists; pass --force to replace it`);
      }
    }
  }
  await Deno.writeTextFile(crt, pair.cert, { mode: 0o644 });
  // Private keys are readable by their owner only.
  await Deno.writeTextFile(key, pair.key, { mode: 0o600 });
  await Deno.chmod(key, 0o600).catch(() => {}); // mode is ignored when the file existed
  return [crt, key];
}

function checkAll(opts: CertsDirOptions): void {
  if (opts.nodes.length === 0) {
    throw new CertsError("no node names given; pass --nodes a,b,c", true);
  }
  const seen = new Set<string>();
  for (const n of opts.nodes) {
    checkNodeName(n);
    if (seen.has(n)) throw new CertsError(`node name "${n}" is given twice`, true);
    seen.add(n);
  }
  for (const h of opts.hosts ?? []) checkHost(h);
  const days = opts.days ?? DEFAULT_CERT_DAYS;
  if (!Number.isInteger(days) || days < 1) {
    throw new CertsError(`--days must be a positive integer`, true);
  }
}

/**
 * Create a CA, a certificate per node and the llmctl client certificate in `dir`; refuses to
 * overwrite an existing CA unless `force`. Returns the paths written.
 *
 * @example
 * ```ts
 * await initCertificates({ dir: "certs", nodes: ["a", "b", "c"], hosts: ["10.0.0.5"] });
 * ```
 */
export async function initCertificates(opts: CertsDirOptions): Promise<string[]> {
  checkAll(opts);
  await Deno.mkdir(opts.dir, { recursive: true });
  if (!opts.force && await exists(`${opts.dir}/ca.crt`)) {
    throw new CertsError(
      `${opts.dir}/ca.crt already exists; use \`llmctl certs add\` to add nodes to that CA, or ` +
        `--force to replace it (every existing certificate then stops working)`,
    );
  }
  const ca = createCa();
  const written = await writePair(opts.dir, "ca", ca, true);
  written.push(...await addCertificates({ ...opts, force: true }, true));
  return written;
}

/**
 * Issue certificates for more nodes with the CA already in `dir` (ca.crt + ca.key); with
 * `withClient`, also (re)issue llmctl.crt. Returns the paths written.
 */
export async function addCertificates(
  opts: CertsDirOptions,
  withClient = false,
): Promise<string[]> {
  checkAll(opts);
  let ca: Issuer;
  try {
    ca = issuerFromPem(
      await Deno.readTextFile(`${opts.dir}/ca.crt`),
      await Deno.readTextFile(`${opts.dir}/ca.key`),
    );
  } catch (e) {
    throw new CertsError(
      `cannot load the CA from ${opts.dir}/ca.crt and ca.key (${(e as Error).message}); ` +
        `create one with \`llmctl certs init --out ${opts.dir} --nodes ...\``,
    );
  }
  // The key must be the CA's, or every certificate signed now would fail verification.
  const certKey = createPublicKey(await Deno.readTextFile(`${opts.dir}/ca.crt`));
  if (!certKey.equals(ca.publicKey)) {
    throw new CertsError(`${opts.dir}/ca.key does not belong to ${opts.dir}/ca.crt`);
  }
  const written: string[] = [];
  for (const n of opts.nodes) {
    const pair = issueCertificate(ca, {
      commonName: n,
      kind: "node",
      hosts: opts.hosts,
      days: opts.days,
    });
    written.push(...await writePair(opts.dir, n, pair, opts.force ?? false));
  }
  if (withClient) {
    const pair = issueCertificate(ca, { commonName: CLIENT_NAME, kind: "client", days: opts.days });
    written.push(...await writePair(opts.dir, CLIENT_NAME, pair, opts.force ?? false));
  }
  return written;
}
