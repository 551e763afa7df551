import path from 'node:path';
import { Child } from './child.ts';
import { ROOT } from './root.ts';

export interface ReplicatorOptions {
  databaseUrl: string;
  edgeUrl: string;
  secret: string;
  port: number;
  /** Further variables of replicator/config.ts (SLOT_NAME, FORWARD_LINGER_MS, ...). */
  env?: Record<string, string | undefined>;
  /** Node's own flags, e.g. `--cpu-prof` (which NODE_OPTIONS does not take). */
  nodeArgs?: string[];
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
}

/** `npm run replicator` as a child process: `node --import tsx replicator/main.ts`, configured by environment. */
export function startReplicatorProcess(options: ReplicatorOptions): Child {
  const env: Record<string, string | undefined> = {
    ...process.env,
    ...options.env,
    DATABASE_URL: options.databaseUrl,
    EDGE_URL: options.edgeUrl,
    REPLICATOR_SECRET: options.secret,
    REPLICATOR_PORT: String(options.port),
  };
  return new Child('replicator', process.execPath, [...(options.nodeArgs ?? []), '--import', 'tsx', path.join(ROOT, 'replicator/main.ts')], {
    cwd: ROOT,
    env,
    ...(options.onLine ? { onLine: options.onLine } : {}),
  });
}

/** One replicator log line (pino JSON) as `level msg key=value ...`, without the time and process fields. */
export function formatReplicatorLine(line: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const { level, msg, time: _time, pid: _pid, hostname: _hostname, component: _component, ...rest } = entry;
  const fields = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return [String(level ?? ''), String(msg ?? ''), ...fields].join(' ');
}
