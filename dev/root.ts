import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository's folder: the local run finds wrangler.toml, replicator/main.ts and .edgeplane/ from it, whatever the current folder. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The Worker's configuration: the local run reads it rather than repeating it (docs/protocol.md#local-run). */
export const WRANGLER_TOML = path.join(ROOT, 'wrangler.toml');
