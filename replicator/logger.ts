import { pino, type Logger } from 'pino';

export type { Logger };

/** Structured JSON on stdout. Callers add the LSN (`lsn`) and account where they have them; row values stay out. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { component: 'replicator' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}
