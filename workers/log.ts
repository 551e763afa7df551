/** Structured JSON logs: one object per line, with the component and the context (account, LSN). Row values stay out. */
export type LogFields = Record<string, string | number | boolean | null | undefined | string[]>;

function write(level: 'info' | 'warn' | 'error', msg: string, fields: LogFields): void {
  const line = JSON.stringify({ level, time: new Date().toISOString(), msg, ...fields });
  if (level === 'error') console.error(line);
  else if (level === 'warn') console.warn(line);
  else console.log(line);
}

export const log = {
  info: (msg: string, fields: LogFields = {}) => write('info', msg, fields),
  warn: (msg: string, fields: LogFields = {}) => write('warn', msg, fields),
  error: (msg: string, fields: LogFields = {}) => write('error', msg, fields),
};
