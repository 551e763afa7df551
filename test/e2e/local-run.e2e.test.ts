import { execFile } from 'node:child_process';
import { existsSync, statfsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { chmod, lstat, mkdtemp, readFile, readdir, realpath, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, describe, expect, it, onTestFailed, onTestFinished } from 'vitest';
import { Child } from '../../dev/child.ts';
import type { DevJson } from '../../dev/local-files.ts';
import { startLocalPostgres } from '../../dev/local-postgres.ts';
import { MEMORY_PLACE, objectsDir, removeObjectStorage } from '../../dev/object-storage.ts';
import { freePort, portInUse } from '../../dev/ports.ts';
import { ROOT } from '../../dev/root.ts';

/**
 * `npm start` as a user runs it (docs/protocol.md#local-run), in a folder of its own (EDGEPLANE_DIR) and on
 * free ports: the embedded server, migrations, the demo, the replicator and the local Worker, then
 * dev.json; the device and token CLIs against it; Ctrl-C stops everything, leaves no process and
 * no slot behind; a second start prints the same demo. And `npm start` with its output piped, from a
 * private folder (as root: the cluster placed under /var/tmp, docs/protocol.md#local-run), stopped by
 * a Ctrl-C to the whole process group: to `tee`, whose reader dies with the Ctrl-C, and to `head`,
 * whose reader is gone long before it.
 */
const exec = promisify(execFile);
let dir: string;
let ports: { PORT: string; REPLICATOR_PORT: string; EDGEPLANE_PG_PORT: string };
const children: Child[] = [];
const output: string[] = [];

afterAll(async () => {
  for (const c of children) await c.stop('SIGKILL', 1000);
});

/**
 * What a run of these folders left running, stopped: its processes (the Worker and the replicator
 * run in process groups of their own, which a kill of `npm start` leaves) and its embedded server.
 */
async function killLeftovers(folders: string[], used: typeof ports, pgDir: string): Promise<void> {
  for (const l of await leftovers(folders, used)) {
    const pid = Number(l.slice(0, l.indexOf(':')));
    for (const target of [-pid, pid]) {
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        // Not a group leader, or gone.
      }
    }
  }
  if (existsSync(path.join(pgDir, 'postmaster.pid'))) {
    const pg = await startLocalPostgres({ dataDir: pgDir, port: Number(used.EDGEPLANE_PG_PORT) }).catch(() => undefined);
    await pg?.stop('immediate');
  }
}

/** For a failed test: every warning and error logged (the first cause may be long before the end), then the last lines. */
function failureOutput(): string {
  const warnings = output.slice(0, -60).filter((l) => /warn|error|fail/i.test(l));
  return [...warnings.slice(-100), '--- the last lines:', ...output.slice(-60)].join('\n');
}

function env(extra: Record<string, string> = {}): Record<string, string | undefined> {
  return { PATH: process.env.PATH, HOME: process.env.HOME, EDGEPLANE_DIR: dir, ...ports, ...extra };
}

function node(name: string, script: string, args: string[], extra: Record<string, string> = {}): Child {
  const c = new Child(name, process.execPath, ['--import', 'tsx', path.join(ROOT, script), ...args], {
    cwd: ROOT,
    env: env(extra),
    onLine: (l) => output.push(`[${name}] ${l}`),
  });
  children.push(c);
  return c;
}

async function devJson(start: { readonly running: boolean; readonly exited: Promise<unknown> }, timeoutMs = 120_000): Promise<DevJson> {
  const file = path.join(dir, 'dev.json');
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(file)) {
    if (!start.running) throw new Error(`npm start exited: ${JSON.stringify(await start.exited)}`);
    if (Date.now() > deadline) throw new Error('no dev.json in time');
    await new Promise((r) => setTimeout(r, 200));
  }
  return JSON.parse(await readFile(file, 'utf8')) as DevJson;
}

/**
 * Processes of this run: those whose command line names its folder (or where its cluster really
 * is) or ports, and those started with its EDGEPLANE_DIR (the replicator, the Worker, workerd).
 */
async function leftovers(folders: string[] = [dir], used = ports): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmd = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).replaceAll('\0', ' ');
      const environ = (await readFile(`/proc/${entry}/environ`, 'utf8').catch(() => '')).split('\0');
      const named = folders.some((f) => cmd.includes(f) || environ.includes(`EDGEPLANE_DIR=${f}`));
      if (named || cmd.includes(`--port ${used.PORT}`) || cmd.includes(`port=${used.EDGEPLANE_PG_PORT}`)) out.push(`${entry}: ${cmd.slice(0, 200)}`);
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

async function lines(c: Child, test: (line: string) => boolean, timeoutMs = 15_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = output.find((l) => l.startsWith(`[${c.name}] `) && test(l.slice(c.name.length + 3)));
    if (found) return found.slice(c.name.length + 3);
    if (Date.now() > deadline) throw new Error(`no matching line from ${c.name}; output:\n${output.slice(-30).join('\n')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('npm start', () => {
  it("runs the whole system with a demo; Ctrl-C stops it all, slot included; a start after a SIGKILL and a reboot (the objects' files gone) cleans up and carries on from the slot", async () => {
    onTestFailed(() => console.error(failureOutput()));
    dir = await mkdtemp(path.join(tmpdir(), 'edgeplane-local-run-'));
    await chmod(dir, 0o755);
    ports = { PORT: String(await freePort()), REPLICATOR_PORT: String(await freePort()), EDGEPLANE_PG_PORT: String(await freePort()) };
    // Passed or failed: nothing of this run stays (the later tests move `dir` and `ports` on).
    const run = { dir, ports };
    onTestFinished(async () => {
      await killLeftovers([run.dir], run.ports, path.join(run.dir, 'pg'));
      await removeObjectStorage(objectsDir(path.join(run.dir, 'worker')));
      await rm(run.dir, { recursive: true, force: true });
    });

    const start = node('start', 'dev/start.ts', []);
    const dev = await devJson(start);
    expect(dev).toMatchObject({ workerUrl: `http://127.0.0.1:${ports.PORT}`, replicatorUrl: `http://127.0.0.1:${ports.REPLICATOR_PORT}` });
    expect(dev.databaseUrl).toContain(`:${ports.EDGEPLANE_PG_PORT}/`);
    expect(dev.demo?.clientToken.split('.')[0]).toBe(dev.demo?.accountId);
    expect((await fetch(`${dev.workerUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${dev.replicatorUrl}/readyz`)).status).toBe(200);

    // The client CLI sees the demo's three resources, then a policy change.
    const client = node('client', 'dev/client.ts', ['--demo', '--json', '--external-id', 'local-run-test']);
    const init = JSON.parse(await lines(client, (l) => l.startsWith('{"event":"init"'))) as { payload: { resources: { id: string; name: string }[] } };
    expect(init.payload.resources.map((r) => r.name).sort()).toEqual(['Build server', 'Office LAN', 'Wiki']);
    // The objects' SQLite files: in memory where the machine has room (dev/object-storage.ts), and the demo's object wrote there.
    const objects = objectsDir(path.join(dir, 'worker'));
    const free = statfsSync(MEMORY_PLACE.root, { bigint: false });
    if (free.bavail * free.bsize >= MEMORY_PLACE.minFree) {
      expect((await lstat(objects)).isSymbolicLink()).toBe(true);
      expect(await realpath(objects)).toMatch(/^\/dev\/shm\/edgeplane-objects-[0-9a-f]{16}$/);
      expect(output.join('\n')).toContain(`a link to ${await realpath(objects)} (memory)`);
    } else expect((await lstat(objects)).isDirectory()).toBe(true);
    expect((await readdir(objects, { recursive: true })).some((f) => f.endsWith('.sqlite'))).toBe(true);
    const sql = postgres(dev.databaseUrl, { max: 1, onnotice: () => {} });
    try {
      await sql`update policies set disabled_at = now() where resource_id = (select id from resources where name = 'Wiki')`;
      const wiki = init.payload.resources.find((r) => r.name === 'Wiki')!;
      expect(JSON.parse(await lines(client, (l) => l.includes('resource_deleted')))).toEqual({ event: 'resource_deleted', payload: { id: wiki.id } });

      // The token CLI: a token for the demo's actor opens a client; bad arguments exit 2.
      const [actor] = await sql<{ id: string }[]>`select id::text from actors where name = 'Ada Lovelace'`;
      const made = await exec(process.execPath, ['--import', 'tsx', 'dev/token-cli.ts', 'client', '--account', dev.demo!.accountId, '--actor', actor!.id], {
        cwd: ROOT,
        env: env(),
      });
      expect(made.stdout.trim().split('.')).toHaveLength(3);
      const bad = await exec(process.execPath, ['--import', 'tsx', 'dev/token-cli.ts', 'client', '--account', 'nope'], { cwd: ROOT, env: env() }).then(
        () => 0,
        (e: { code: number }) => e.code,
      );
      expect(bad).toBe(2);
    } finally {
      await sql.end();
    }
    const clientExit = await client.stop('SIGINT', 5000);
    expect(clientExit.code).toBe(0);

    // Ctrl-C: the terminal signals the foreground group, which is the start process alone (its children run in groups of their own).
    start.signal('SIGINT');
    const exit = await Promise.race([start.exited, new Promise((r) => setTimeout(() => r('timeout'), 60_000))]);
    expect(exit).toEqual({ code: 0, signal: null });
    await lines(start, (l) => l.startsWith('Dropped the replication slot edgeplane'));
    expect(existsSync(path.join(dir, 'dev.json'))).toBe(false);
    expect(await leftovers()).toEqual([]);
    for (const p of Object.values(ports)) expect(await portInUse(Number(p))).toBe(false);
    const pg = await startLocalPostgres({ dataDir: path.join(dir, 'pg'), port: Number(ports.EDGEPLANE_PG_PORT) });
    try {
      const check = postgres(pg.url, { max: 1, onnotice: () => {} });
      expect(await check`select slot_name from pg_replication_slots`).toEqual([]);
      await check.end();
    } finally {
      await pg.stop();
    }

    // A second start: the same database, the same demo tokens. Then it is killed (SIGKILL: no
    // chance to stop anything) and a third start takes over what it left running.
    output.length = 0;
    const again = node('start', 'dev/start.ts', []);
    const dev2 = await devJson(again);
    expect(dev2.demo).toEqual(dev.demo);
    again.process.kill('SIGKILL');
    await again.exited;
    expect(await leftovers()).not.toEqual([]);
    // Then the machine reboots, as it were: the objects' files (in memory) are gone, the slot stays,
    // and the database moves on meanwhile. The next start carries on from the slot with empty objects.
    await rm(await realpath(objects), { recursive: true, force: true });
    const moved = postgres(dev.databaseUrl, { max: 1, onnotice: () => {} });
    await moved`update policies set disabled_at = null where resource_id = (select id from resources where name = 'Wiki')`;
    await moved.end();
    await rm(path.join(dir, 'dev.json'), { force: true });
    output.length = 0;
    const third = node('start', 'dev/start.ts', []);
    const dev3 = await devJson(third);
    expect(dev3.demo).toEqual(dev.demo);
    await lines(third, (l) => l.startsWith('Stopped what an earlier run that was killed left running'));
    const after = node('client', 'dev/client.ts', ['--demo', '--json', '--external-id', 'local-run-test']);
    const reinit = JSON.parse(await lines(after, (l) => l.startsWith('{"event":"init"'))) as { payload: { resources: { name: string }[] } };
    expect(reinit.payload.resources.map((r) => r.name).sort()).toEqual(['Build server', 'Office LAN', 'Wiki']);
    const live = postgres(dev3.databaseUrl, { max: 1, onnotice: () => {} });
    await live`update policies set disabled_at = now() where resource_id = (select id from resources where name = 'Wiki')`;
    await live.end();
    await lines(after, (l) => l.includes('resource_deleted'));
    expect((await after.stop('SIGINT', 5000)).code).toBe(0);
    third.signal('SIGTERM');
    expect(await third.exited).toEqual({ code: 0, signal: null });
    expect(await leftovers()).toEqual([]);
    for (const p of Object.values(ports)) expect(await portInUse(Number(p))).toBe(false);
  });

  /**
   * `reader` reads npm start's output; it writes the file `gone` once it stops reading (`head`:
   * after npm's own three-line banner, before dev/start.ts printed anything; `tee`: never before
   * the Ctrl-C, which kills it too).
   */
  it.each([
    { pipe: 'tee', reader: (home: string) => `tee ${path.join(home, 'start.log')}`, goneBeforeCtrlC: false },
    { pipe: 'head -n 3', reader: (home: string) => `{ head -n 3; touch ${path.join(home, 'gone')}; }`, goneBeforeCtrlC: true },
  ])(
    'npm start | $pipe, from a private folder (mode 0700): runs (as root the cluster lives under /var/tmp), and a Ctrl-C to the whole group stops everything: processes, ports, slot',
    async ({ reader, goneBeforeCtrlC }) => {
      onTestFailed(() => console.error(failureOutput()));
      output.length = 0;
      // As a home folder or `mktemp -d` is: the postgres user that runs the server as root cannot enter it.
      const home = await mkdtemp(path.join(tmpdir(), 'edgeplane-private-'));
      dir = path.join(home, '.edgeplane');
      ports = { PORT: String(await freePort()), REPLICATOR_PORT: String(await freePort()), EDGEPLANE_PG_PORT: String(await freePort()) };
      let placed: string | undefined;
      try {
        // A shell of its own (a process group, as a terminal's foreground job), its output piped.
        const shell = spawn('/bin/sh', ['-c', `npm start 2>&1 | ${reader(home)}`], { cwd: ROOT, env: env(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
        shell.stdout.on('data', (d: Buffer) =>
          output.push(
            ...d
              .toString()
              .trimEnd()
              .split('\n')
              .map((l) => `[npm start] ${l}`),
          ),
        );
        const ended = new Promise<number | string>((resolve) => shell.on('exit', (code, signal) => resolve(signal ?? code ?? -1)));
        const started = { running: true, exited: ended };
        void ended.then(() => (started.running = false));
        const dev = await devJson(started);
        expect((await fetch(`${dev.workerUrl}/healthz`)).status).toBe(200);
        // Everything it printed since the reader left went nowhere, and it runs on.
        expect(existsSync(path.join(home, 'gone'))).toBe(goneBeforeCtrlC);
        expect((await fetch(`${dev.replicatorUrl}/readyz`)).status).toBe(200);
        const pgLink = await lstat(path.join(dir, 'pg'));
        if (process.getuid?.() === 0) {
          expect(pgLink.isSymbolicLink()).toBe(true);
          placed = path.dirname(await realpath(path.join(dir, 'pg')));
          expect(placed).toMatch(/^\/var\/tmp\/edgeplane-pg-[0-9a-f]{16}$/);
          if (!goneBeforeCtrlC) expect(output.join('\n')).toContain(`its files are in ${placed}`);
        } else expect(pgLink.isDirectory()).toBe(true);

        // Ctrl-C: the terminal signals the whole foreground group: sh, npm, tee, and npm's sh and node.
        process.kill(-shell.pid!, 'SIGINT');
        const deadline = Date.now() + 60_000;
        while ((await leftovers([dir, ...(placed ? [placed] : [])])).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
        expect(await leftovers([dir, ...(placed ? [placed] : [])])).toEqual([]);
        await Promise.race([ended, new Promise((r) => setTimeout(r, 10_000))]);
        expect(existsSync(path.join(dir, 'dev.json'))).toBe(false);
        for (const p of Object.values(ports)) expect(await portInUse(Number(p))).toBe(false);
        // The clean stop dropped the slot (a crash, e.g. of an EPIPE, would have left it).
        const pg = await startLocalPostgres({ dataDir: path.join(dir, 'pg'), port: Number(ports.EDGEPLANE_PG_PORT) });
        try {
          const check = postgres(pg.url, { max: 1, onnotice: () => {} });
          expect(await check`select slot_name from pg_replication_slots`).toEqual([]);
          await check.end();
        } finally {
          await pg.stop();
        }
      } finally {
        await killLeftovers([dir, ...(placed ? [placed] : [])], ports, path.join(dir, 'pg'));
        if (placed) await rm(placed, { recursive: true, force: true });
        await removeObjectStorage(objectsDir(path.join(dir, 'worker')));
        await rm(home, { recursive: true, force: true });
      }
    },
  );

  it('refuses bad configuration with exit code 2', async () => {
    const bad = await exec(process.execPath, ['--import', 'tsx', 'dev/start.ts'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, PORT: 'eighty', REPLICATOR_SECRET: 'short' },
    }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('PORT=eighty is not a TCP port');
    expect(bad.stderr).toContain('REPLICATOR_SECRET must be at least 16 characters');
  });
});
