/**
 * `llmctl certs`: make the certificates for mutual TLS between agents and llmctl.
 *
 * ```sh
 * llmctl certs init --out certs --nodes a,b,c --hosts 10.0.0.5,10.0.0.6
 * deno task agent --tls-cert certs/a.crt --tls-key certs/a.key --tls-ca certs/ca.crt ...
 * llmctl certs add --out certs --nodes d
 * ```
 */
import { Command, InvalidArgumentError } from "@commander-js/extra-typings";
import { addCertificates, DEFAULT_CERT_DAYS, initCertificates } from "../../cluster/tls/mod.ts";
import { intOption, printJson } from "../common.ts";

/** Split "a,b, c" into names, refusing empty items (a stray comma is a typo). */
function list(value: string): string[] {
  const items = value.split(",").map((s) => s.trim());
  if (items.some((s) => s === "")) {
    throw new InvalidArgumentError(
      `expected a comma-separated list without empty items, got "${value}"`,
    );
  }
  return items;
}

function report(written: string[], dir: string, nodes: string[], json: boolean | undefined) {
  if (json) {
    printJson({ dir, files: written });
    return;
  }
  for (const f of written) console.log(`wrote ${f}`);
  const n = nodes[0];
  console.log(
    `\nstart node ${n} with:  --tls-cert ${dir}/${n}.crt --tls-key ${dir}/${n}.key --tls-ca ${dir}/ca.crt` +
      `\nkeep ${dir}/ca.key off the nodes: whoever has it can mint certificates for this cluster.`,
  );
}

/** Build the `certs` command (`init`, `add`). */
export function certsCommand() {
  const certs = new Command("certs")
    .description("create a CA and certificates for mutual TLS between agents and llmctl");
  certs.command("init")
    .description("create a CA, a certificate per node (server + client) and one for llmctl")
    .requiredOption(
      "-o, --out <dir>",
      "directory to write ca.crt/ca.key, <node>.crt/.key, llmctl.crt/.key",
    )
    .requiredOption(
      "-n, --nodes <names>",
      "comma-separated node names (DNS names peers dial)",
      list,
    )
    .option(
      "--hosts <hosts>",
      "extra IPs or DNS names for every node certificate",
      list,
    )
    .option(
      "--days <n>",
      "validity of node and client certificates",
      intOption(1, 3650),
      DEFAULT_CERT_DAYS,
    )
    .option("--force", "replace existing files (invalidates certificates issued by the old CA)")
    .option("--json", "print one JSON object")
    .action(async (opts) => {
      const written = await initCertificates({
        dir: opts.out,
        nodes: opts.nodes,
        hosts: opts.hosts ?? [],
        days: opts.days,
        force: opts.force ?? false,
      });
      report(written, opts.out, opts.nodes, opts.json);
    });
  certs.command("add")
    .description("issue certificates for more nodes with the CA already in --out")
    .requiredOption("-o, --out <dir>", "directory holding ca.crt and ca.key")
    .requiredOption("-n, --nodes <names>", "comma-separated node names", list)
    .option(
      "--hosts <hosts>",
      "extra IPs or DNS names for these certificates",
      list,
    )
    .option("--days <n>", "validity, days", intOption(1, 3650), DEFAULT_CERT_DAYS)
    .option("--force", "replace existing node files")
    .option("--json", "print one JSON object")
    .action(async (opts) => {
      const written = await addCertificates({
        dir: opts.out,
        nodes: opts.nodes,
        hosts: opts.hosts ?? [],
        days: opts.days,
        force: opts.force ?? false,
      });
      report(written, opts.out, opts.nodes, opts.json);
    });
  return certs;
}
