/**
 * A loopback agent with DiscoveryService and NodeService over a static membership of four
 * nodes (a: local, b: alive, c: suspect, d: dead), plus certificates made by our own PKI.
 */
import type { ConnectRouter } from "@connectrpc/connect";
import {
  discoveryService,
  measureResources,
  MetricsSampler,
  nodeService,
  StaticMembership,
} from "../../../cluster/discovery/mod.ts";
import { type RpcServer, startRpcServer } from "../../../cluster/rpc/mod.ts";
import { initCertificates, type TlsFiles } from "../../../cluster/tls/mod.ts";
import { DiscoveryService, NodeService, NodeState } from "../../../proto/mod.ts";

/** Paths of a certificate directory made by initCertificates for nodes a and b. */
export interface TestCerts {
  /** The directory. */
  dir: string;
  /** Files for node "a" (the server). */
  node: TlsFiles;
  /** Files for llmctl (a client). */
  client: TlsFiles;
}

/** Make a CA + certificates for nodes a, b and llmctl in a temp dir. */
export async function makeCerts(): Promise<TestCerts> {
  const dir = await Deno.makeTempDir({ prefix: "dllm-certs-" });
  await initCertificates({ dir, nodes: ["a", "b"] });
  return {
    dir,
    node: { cert: `${dir}/a.crt`, key: `${dir}/a.key`, ca: `${dir}/ca.crt` },
    client: { cert: `${dir}/llmctl.crt`, key: `${dir}/llmctl.key`, ca: `${dir}/ca.crt` },
  };
}

/** The membership the test agent answers from. */
export function testMembership(): StaticMembership {
  return new StaticMembership({
    clusterName: "test",
    local: {
      id: "a",
      addresses: ["127.0.0.1"],
      rpcPort: 7950,
      gossipPort: 7946,
      version: "0.0.0-test",
      resources: measureResources(),
      hosted: { model: "stories260K", fromLayer: 0, toLayer: 3, totalLayers: 5 },
    },
    peers: [
      {
        id: "b",
        addresses: ["127.0.0.2"],
        rpcPort: 7950,
        resources: { cpuCores: 4, memoryTotalBytes: 8n << 30n, memoryBudgetBytes: 2n << 30n },
        hosted: { model: "stories260K", fromLayer: 3, toLayer: 5, totalLayers: 5 },
      },
      { id: "c", addresses: ["127.0.0.3"], state: NodeState.SUSPECT },
      { id: "d", addresses: ["127.0.0.4"], state: NodeState.DEAD },
    ],
  });
}

/** Routes of the test agent over `view`, plus any extra registrations. */
export function testRoutes(view: StaticMembership, extra?: (r: ConnectRouter) => void) {
  const sampler = new MetricsSampler(view.local().id);
  return (r: ConnectRouter) => {
    r.service(DiscoveryService, discoveryService(view));
    r.service(
      NodeService,
      nodeService({ view, resources: () => measureResources(), metrics: () => sampler.sample() }),
    );
    extra?.(r);
  };
}

/** Start the test agent on an ephemeral loopback port. */
export async function startTestAgent(
  opts: {
    tls?: TlsFiles;
    view?: StaticMembership;
    extra?: (r: ConnectRouter) => void;
    host?: string;
  } = {},
): Promise<{ server: RpcServer; view: StaticMembership }> {
  const view = opts.view ?? testMembership();
  const server = await startRpcServer({
    port: 0,
    host: opts.host,
    tls: opts.tls,
    routes: testRoutes(view, opts.extra),
  });
  return { server, view };
}
