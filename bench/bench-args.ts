/** The command-line options every benchmark reads the same way: `--name N` and `--only a,b`. */
const argv = process.argv.slice(2);

export function numArg(name: string, fallback: number): number {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
}

const onlyArg = argv.indexOf('--only') >= 0 ? argv[argv.indexOf('--only') + 1]!.split(',') : null;

/** Whether `--only` (absent: every part) names this part. */
export function only(part: string): boolean {
  return onlyArg === null || onlyArg.includes(part);
}

/** Whether `--name` is given. */
export function flag(name: string): boolean {
  return argv.includes(`--${name}`);
}

/** The word after `--name`, or the fallback. */
export function textArg<T extends string>(name: string, fallback: T): T {
  const i = argv.indexOf(`--${name}`);
  return (i >= 0 ? argv[i + 1]! : fallback) as T;
}
