/** A StageLink to a stage in the same process (no RPC): used when the head hosts a stage too. */
import type { SessionLink, StageLink } from "./head.ts";
import type { StageFrame, StageHost, StageResult } from "./stage_host.ts";

/** Direct calls into a StageHost. */
export class LocalStageLink implements StageLink {
  constructor(
    readonly nodeId: string,
    private readonly host: StageHost,
    readonly version?: number,
  ) {}

  get from(): number {
    return this.host.range.from;
  }

  get to(): number {
    return this.host.range.to;
  }

  openSession(sessionId: string, maxContext: number): Promise<SessionLink> {
    this.host.open(sessionId, maxContext);
    const host = this.host;
    return Promise.resolve({
      step: (frame: StageFrame): Promise<StageResult> => host.step(sessionId, frame),
      close: (_reason: string) => {
        host.close(sessionId);
        return Promise.resolve();
      },
    });
  }
}
