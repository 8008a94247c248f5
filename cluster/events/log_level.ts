/**
 * A log level that can change at run time (ClusterService's set_log_level): wraps a sink that
 * prints everything and drops lines below the current level.
 *
 * @example
 * ```ts
 * const log = new LeveledLog(sink, "info");
 * log.log("debug", "hidden");
 * log.level = "debug";
 * log.log("debug", "shown");
 * ```
 *
 * @module
 */

/** Log levels, quietest last. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

/** One of {@linkcode LOG_LEVELS}. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Whether `s` names a log level. */
export function isLogLevel(s: string): s is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(s);
}

/** A sink of structured log lines. */
export type LogSink = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => void;

/** A sink filtered by a mutable level. */
export class LeveledLog {
  constructor(private readonly sink: LogSink, public level: LogLevel) {}

  /** Forward the line when `level` is at or above the current level. */
  readonly log: LogSink = (level, msg, fields) => {
    if (LOG_LEVELS.indexOf(level) >= LOG_LEVELS.indexOf(this.level)) this.sink(level, msg, fields);
  };
}
