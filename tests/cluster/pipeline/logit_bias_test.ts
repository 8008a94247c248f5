/**
 * logit_bias travels with the sampling settings to the tail, wherever it runs: the same ids in
 * process and over a chain, a banned token never drawn, an id past the vocabulary refused.
 */
import { LocalStageLink } from "../../../cluster/pipeline/mod.ts";
import { generateOver, serveChain, stageHosts } from "../../support/chain.ts";
import { assert, assertEquals, assertRejects } from "../../support/assert.ts";

const PROMPT = [1, 403, 407, 261, 1, 11, 50, 93];

const ids = (r: { tokens: { id: number }[] }) => r.tokens.map((t) => t.id);

Deno.test("logit_bias: a banned token is never drawn, in process and over a chain alike", async () => {
  const [whole] = await stageHosts([[0, 5]]);
  const local = [new LocalStageLink("n0", whole)];
  const greedy = { promptTokens: PROMPT, maxTokens: 12, maxContext: 64 };
  const plain = ids(await generateOver(local, { ...greedy, sampling: { temperature: 0 } }));
  // Ban the two tokens greedy decoding takes most often.
  const counts = new Map<number, number>();
  for (const id of plain) counts.set(id, (counts.get(id) ?? 0) + 1);
  const banned = [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, 2).map(([id]) => id);
  const logitBias = Object.fromEntries(banned.map((id) => [id, -100]));
  const sampling = { temperature: 0, logitBias };
  const biased = ids(await generateOver(local, { ...greedy, sampling }));
  assert(biased.every((id) => !banned.includes(id)), `banned ${banned} in ${biased}`);
  assert(biased.join() !== plain.join());
  // A sampled draw with a bias that favours one token: the same ids in process and over TCP.
  const warm = { temperature: 0.9, seed: 7, logitBias: { [plain[3]]: 3, [banned[0]]: -100 } };
  const inProcess = ids(await generateOver(local, { ...greedy, sampling: warm }));
  for (const hop of ["tcp", "grpc"] as const) {
    const stages = await stageHosts([[0, 2], [2, 5]]);
    const chain = await serveChain(stages, hop);
    try {
      assertEquals(ids(await generateOver(chain.links, { ...greedy, sampling })), biased, hop);
      assertEquals(ids(await generateOver(chain.links, { ...greedy, sampling: warm })), inProcess);
    } finally {
      await chain.close();
    }
  }
});

Deno.test("logit_bias naming a token past the vocabulary is refused by the tail", async () => {
  const [whole] = await stageHosts([[0, 5]]);
  const err = await assertRejects(
    () =>
      generateOver([new LocalStageLink("n0", whole)], {
        promptTokens: PROMPT,
        maxTokens: 2,
        maxContext: 64,
        sampling: { temperature: 0, logitBias: { 512: 1 } },
      }),
    Error,
  );
  assert(
    /logit_bias names token 512; the vocabulary has 512 tokens/.test(err.message),
    err.message,
  );
});
