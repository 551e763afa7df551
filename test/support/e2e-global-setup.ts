import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { buildWorkerBundle } from '../../replicator/dev/worker-process.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The Worker built once per run like a deploy builds it; every e2e `wrangler dev` serves this file. */
    e2eWorkerBundle: string;
  }
}

/**
 * The e2e project's setup: one build of the real Worker (`wrangler deploy --dry-run`), so that the
 * `wrangler dev` processes of the tests start fast and do not reload when sources change under them.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const dir = await mkdtemp(path.join(tmpdir(), 'edgeplane-e2e-bundle-'));
  project.provide('e2eWorkerBundle', await buildWorkerBundle(dir));
  return async () => {
    await rm(dir, { recursive: true, force: true });
  };
}
