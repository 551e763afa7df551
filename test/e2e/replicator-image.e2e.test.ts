import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { bundleReplicator } from '../../dev/replicator-bundle.ts';
import { Child } from '../../dev/child.ts';
import { ROOT } from '../../dev/root.ts';
import { expectConverged } from '../support/e2e-convergence.ts';
import { Stack } from '../support/e2e-stack.ts';
import { createAccount } from '../support/e2e-world.ts';

/**
 * replicator/Dockerfile cannot be built here (no Docker engine), so this runs what the image runs:
 * the bundle its build stage makes (same function, same arguments), its CMD and its HEALTHCHECK
 * command, with its ENV, from a folder with nothing else in it (no node_modules to fall back on),
 * as an unprivileged user, against the real Worker.
 */
interface Image {
  buildLine: string;
  env: Record<string, string>;
  cmd: string[];
  healthcheck: string[];
}

async function readDockerfile(): Promise<Image> {
  const text = (await readFile(path.join(ROOT, 'replicator/Dockerfile'), 'utf8')).replace(/\\\n\s*/g, ' ');
  const lines = text.split('\n').map((l) => l.trim());
  const finalStage = lines.slice(lines.map((l) => l.startsWith('FROM ')).lastIndexOf(true));
  const json = (prefix: string) => {
    const line = finalStage.find((l) => l.startsWith(prefix));
    if (!line) throw new Error(`replicator/Dockerfile: no ${prefix.trim()} in the final stage`);
    return JSON.parse(line.slice(line.indexOf('['))) as string[];
  };
  const env: Record<string, string> = {};
  for (const line of finalStage.filter((l) => l.startsWith('ENV '))) {
    for (const m of line.slice(4).matchAll(/(\w+)=(\S+)/g)) env[m[1]!] = m[2]!;
  }
  return {
    buildLine: lines.find((l) => l.startsWith('RUN ') && l.includes('bundle.ts')) ?? '',
    env,
    cmd: json('CMD '),
    healthcheck: json('HEALTHCHECK '),
  };
}

let image: Image;
let app: string;
let stack: Stack;
const user = userInfo().uid === 0 ? { uid: 65534, gid: 65534 } : {};

beforeAll(async () => {
  image = await readDockerfile();
  expect(image.buildLine).toBe('RUN node --import tsx dev/replicator-bundle.ts /out/replicator.mjs');
  expect(image.cmd[0]).toBe('node');
  app = await mkdtemp(path.join(tmpdir(), 'edgeplane-image-'));
  await chmod(app, 0o755);
  await bundleReplicator(path.join(app, 'replicator.mjs'));
  stack = await Stack.start({
    launchReplicator: (env, onLine) =>
      new Child('replicator', process.execPath, image.cmd.slice(1), {
        cwd: app,
        // What the container has: PATH, the image's ENV, the deployment's variables.
        env: { PATH: process.env.PATH, ...image.env, ...env },
        onLine,
        ...user,
      }),
  });
});

afterAll(async () => {
  await stack?.close();
  await rm(app, { recursive: true, force: true });
});

async function healthcheck(): Promise<number> {
  const [command, ...args] = image.healthcheck;
  expect(command).toBe('node');
  try {
    await promisify(execFile)(process.execPath, args, { cwd: app, env: { PATH: process.env.PATH, ...image.env, REPLICATOR_PORT: String(stack.replicatorPort) }, timeout: 5000 });
    return 0;
  } catch (err) {
    return (err as { code?: number }).code ?? 1;
  }
}

describe('the replicator image, run as a plain Node process', () => {
  it('streams changes to the Worker, passes its health check, and stops cleanly on SIGTERM', async () => {
    onTestFailed(() => console.error(`--- stack logs ---\n${stack.tail(60)}`));
    const sql = stack.db.sql;
    const a = await createAccount(sql, { resources: 2 });
    const c = stack.device('client', a.clientToken);
    await c.connect();
    await sql`update policies set disabled_at = now() where id = ${a.resources[0]!.policyId}`;
    expect((await c.next('resource_deleted')).payload).toEqual({ id: a.resources[0]!.id });
    await expectConverged(sql, [c]);
    expect(await healthcheck()).toBe(0);

    const exit = await stack.replicator!.stop('SIGTERM', 30_000);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(stack.logs.some((l) => l.source === 'replicator' && l.line.includes('"msg":"stopped"'))).toBe(true);
    expect(await healthcheck()).not.toBe(0);
  });
});
