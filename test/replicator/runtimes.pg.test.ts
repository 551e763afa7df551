import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ROOT } from '../../dev/root.ts';
import { insertAccount, Pipeline } from '../support/pipeline.ts';
import { eventually } from '../support/replicator-process.ts';

// The replicator runs unchanged on Bun and Deno (docs/protocol.md#replicator-configuration): both
// come from npm as devDependencies, whose packages ship the binaries. npm 11 warns that their
// install scripts are not in allowScripts but runs them (strict-allow-scripts is off): Deno's
// binary works without its script, Bun's needs it (`npm install-scripts approve bun` under
// strict-allow-scripts). A smoke run under each: one
// change streamed, logged in change_logs and delivered, /healthz answers, SIGTERM drains and exits 0.
const bin = (name: string) => path.join(ROOT, 'node_modules/.bin', name);
const RUNTIMES: Array<{ name: string; version: RegExp; command: string[] }> = [
  { name: 'bun', version: /^1\.4\./, command: [bin('bun'), 'replicator/main.ts'] },
  { name: 'deno', version: /^deno 2\.9\./, command: [bin('deno'), 'run', '--allow-all', '--quiet', 'replicator/main.ts'] },
];

let pipeline: Pipeline | undefined;
afterEach(async () => {
  await pipeline?.close();
  pipeline = undefined;
});

function metric(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.slice(name.length + 1)) : Number.NaN;
}

describe.each(RUNTIMES)('the replicator on $name', ({ name, version, command }) => {
  it('is the version the project supports', () => {
    // A binary whose package's install script did not run says so here (npm ci runs it).
    expect(execFileSync(command[0] as string, ['--version'], { encoding: 'utf8' }).trim()).toMatch(version);
  });

  it('streams, logs and delivers a change, answers /healthz, and exits 0 on SIGTERM', async () => {
    const p = await Pipeline.create(`rt_${name}`);
    pipeline = p;
    // HOME for the runtimes' caches (Deno's DENO_DIR defaults under it).
    const r = await p.replicator({ HOME: process.env.HOME ?? ROOT, DENO_NO_UPDATE_CHECK: '1', BUN_RUNTIME_TRANSPILER_CACHE_PATH: '0' }, true, command);
    const account = await insertAccount(p.sql, `on-${name}`);

    const [change] = await eventually(() => (p.sink.changes.length > 0 ? p.sink.changes : undefined), 20_000, 'the change delivered');
    expect(change).toMatchObject({ accountId: account, table: 'accounts', op: 'insert' });
    const logged = await eventually(
      async () => {
        const rows = await p.sql<{ account_id: string; table_name: string }[]>`select account_id::text, table_name from change_logs`;
        return rows.length > 0 ? rows : undefined;
      },
      10_000,
      'the change logged',
    );
    expect(logged).toEqual([{ account_id: account, table_name: 'accounts' }]);

    const health = await r.get('/healthz');
    expect(health.status).toBe(200);
    expect(JSON.parse(health.text)).toMatchObject({ healthy: true, state: 'streaming' });
    await eventually(async () => metric((await r.get('/metrics')).text, 'edgeplane_replicator_changes_delivered_total') === 1, 10_000, 'delivered counted');

    r.kill('SIGTERM');
    expect(await r.exited).toEqual({ code: 0, signal: null });
    expect(r.logs.map((l) => l.msg)).toContain('stopped');
  }, 60_000);
});
