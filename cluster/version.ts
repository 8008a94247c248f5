/** The version of distributed-llm, shown by `llmctl --version` and in gossip metadata. */
export const VERSION = "0.1.0";
