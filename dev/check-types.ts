/**
 * `npm run types:check` (CI): workers/worker-configuration.d.ts is what `npm run types` makes from
 * wrangler.toml now (docs/protocol.md#worker-configuration). `wrangler types --check` compares the
 * hash in the file's header only; this also regenerates the file beside it and compares the text,
 * so that a hand edit fails too. Exit code 1 says to run `npm run types`.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { stripVTControlCharacters } from 'node:util';
import { ROOT } from './root.ts';

const TYPES = 'workers/worker-configuration.d.ts';
const SCRATCH = 'workers/.worker-configuration.check.d.ts';
const FLAGS = ['--include-runtime=false', '--strict-vars=false'];

function wrangler(args: string[]): { status: number | null; output: string } {
  const bin = path.join(path.dirname(createRequire(import.meta.url).resolve('wrangler/package.json')), 'bin/wrangler.js');
  const result = spawnSync(process.execPath, [bin, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, WRANGLER_SEND_METRICS: 'false' } });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

/** The file without its second line, the header that names the command, output path and hash. */
function body(file: string): string {
  return readFileSync(path.join(ROOT, file), 'utf8').split('\n').toSpliced(1, 1).join('\n');
}

function fail(why: string): never {
  console.error(`${TYPES} is not current: ${why}. Run \`npm run types\` and commit the result.`);
  process.exit(1);
}

const check = wrangler(['types', ...FLAGS, TYPES, '--check']);
if (check.status !== 0) {
  const lines = stripVTControlCharacters(check.output).split('\n');
  const line = lines.find((l) => /out of date|not found|ERROR/.test(l)) ?? `wrangler types --check exited with ${check.status}`;
  fail(line.replace(/^.*?ERROR\]\s*/, '').replace(/\.?\s*Run `wrangler types`.*$/, ''));
}
const generated = wrangler(['types', ...FLAGS, SCRATCH]);
const same = generated.status === 0 && body(SCRATCH) === body(TYPES);
rmSync(path.join(ROOT, SCRATCH), { force: true });
if (generated.status !== 0) fail(`wrangler types failed:\n${generated.output}`);
if (!same) fail('its text differs from what wrangler types generates');
console.log(`${TYPES} is current.`);
