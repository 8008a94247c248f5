/** The version of distributed-llm (defined in cluster/, which announces it in gossip). */
export { VERSION } from "../cluster/version.ts";
