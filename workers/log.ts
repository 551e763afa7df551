/** Structured JSON logs: one object per line, with the component and the context (account, LSN). Row values stay out. */
export type LogFields = Record<string, string | number | boolean | null | undefined | string[]>;

function write(level: 'info' | 'warn' | 'error', fields: LogFields, msg: string): void {
  const line = JSON.stringify({ level, time: new Date().toISOString(), msg, ...fields });
  if (level === 'error') console.error(line);
  else if (level === 'warn') console.warn(line);
  else console.log(line);
}

/** Fields first, then the message: the replicator's pino order, so that call sites read the same on both sides. */
export const log = {
  info: (fields: LogFields, msg: string) => write('info', fields, msg),
  warn: (fields: LogFields, msg: string) => write('warn', fields, msg),
  error: (fields: LogFields, msg: string) => write('error', fields, msg),
};
