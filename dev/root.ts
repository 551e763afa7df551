import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository's folder: the local run finds wrangler.toml, replicator/main.ts and .edgeplane/ from it, whatever the current folder. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
