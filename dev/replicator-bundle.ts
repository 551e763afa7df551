/**
 * The replicator as one self-contained ES module (what replicator/Dockerfile runs): every
 * dependency inlined, so the image needs Node and this file only.
 *
 *   node --import tsx dev/replicator-bundle.ts [out-file]   (default dist/replicator.mjs)
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { ROOT } from './root.ts';

export async function bundleReplicator(outfile: string): Promise<string> {
  await build({
    entryPoints: [path.join(ROOT, 'replicator/main.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    // Dependencies written as CommonJS call require() for Node's built-ins; an ES module has none.
    banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
    sourcemap: 'linked',
    legalComments: 'linked',
    logLevel: 'warning',
  });
  return outfile;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const out = path.resolve(process.argv[2] ?? path.join(ROOT, 'dist/replicator.mjs'));
  bundleReplicator(out).then(
    () => console.log(`wrote ${path.relative(process.cwd(), out) || out}`),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
