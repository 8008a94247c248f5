/**
 * Mutual TLS for the cluster: a pure-TypeScript PKI (CA, node and client certificates; no
 * openssl needed) and the loading of the `--tls-cert/--tls-key/--tls-ca` files.
 *
 * @example
 * ```ts
 * import { initCertificates, loadTlsFiles } from "./mod.ts";
 * await initCertificates({ dir: "certs", nodes: ["a", "b"] });
 * const tls = await loadTlsFiles({ cert: "certs/a.crt", key: "certs/a.key", ca: "certs/ca.crt" });
 * ```
 *
 * @module
 */
export {
  type ApiTlsMaterial,
  checkAgentCertificate,
  type ClientTls,
  loadApiTls,
  loadClientTls,
  loadTlsFiles,
  subjectNames,
  TlsConfigError,
  type TlsFiles,
  tlsFilesFromOptions,
  type TlsMaterial,
} from "./files.ts";
export {
  addCertificates,
  type CertPair,
  type CertsDirOptions,
  CertsError,
  checkHost,
  checkNodeName,
  CLIENT_NAME,
  createCa,
  DEFAULT_CA_DAYS,
  DEFAULT_CERT_DAYS,
  initCertificates,
  issueCertificate,
  type IssueOptions,
} from "./pki.ts";
export type { Issuer } from "./x509.ts";
