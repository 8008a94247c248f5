/**
 * Which announcement of a stage a member's gossip record is: the version a head excludes a
 * failed stage by (cluster/pipeline/stage_errors.ts stageKey). A version changes only when what
 * the member hosts changes (model, layers, replica, backend) or the member starts a new life (a
 * restart, or a comeback from a false death: NodeMetadata.life). Load publications raise the
 * incarnation about once a second and keep the version.
 *
 * Why not the gossip events: a killed stage's last load publication can still be on its way
 * through the others' queues when a peer declares it dead, and SWIM takes the higher
 * incarnation as a revival ("join"). Keyed on the event, that copy of an announcement sent
 * before the death made a new version, and a head tried the dead stage a second time.
 *
 * @module
 */
import type { Member } from "../gossip/mod.ts";

/** Per member, the announcement its hosted stage has been since. */
export class HostedVersions {
  private readonly since = new Map<string, { key: string; version: number }>();

  /** The version of `m`'s announced stage (a member announcing none is forgotten). */
  of(m: Member): number | undefined {
    const meta = m.meta;
    const h = meta?.hosted;
    if (!meta || !h) {
      this.since.delete(m.id);
      return undefined;
    }
    const key = `${h.model}:${h.from}-${h.to}:${meta.replica ?? ""}:${meta.resources.backend}:${
      meta.life ?? ""
    }`;
    const was = this.since.get(m.id);
    if (was && was.key === key && was.version <= m.incarnation) return was.version;
    // A new life refutes at an incarnation above any its earlier life reached, so a version is
    // never one a head already excluded.
    this.since.set(m.id, { key, version: m.incarnation });
    return m.incarnation;
  }
}
