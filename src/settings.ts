import { z } from 'zod';

/**
 * Numeric settings read from the Worker's variables (`[vars]`, the dashboard, or a test's
 * bindings): a string is read as a number; unset or empty means the default.
 */
const numeric = (v: unknown) => (v === undefined || v === '' ? undefined : typeof v === 'string' ? Number(v) : v);

/** A whole number of at least `min`. */
export const countSetting = (description: string, fallback: number, min = 1) => z.preprocess(numeric, z.number().int().min(min).default(fallback)).describe(description);

/** A number of at least 0. */
export const amountSetting = (description: string, fallback: number) => z.preprocess(numeric, z.number().min(0).default(fallback)).describe(description);

/**
 * The settings of `schema` from `env`, or one message naming every invalid variable, its value
 * and what it means (each schema field carries its meaning as its description).
 */
export function readSettings<S extends z.ZodObject<z.ZodRawShape>>(schema: S, env: Record<string, unknown>): { ok: true; value: z.infer<S> } | { ok: false; problems: string } {
  const parsed = schema.safeParse(env);
  if (parsed.success) return { ok: true, value: parsed.data };
  const problems = parsed.error.issues.map((i) => {
    const name = String(i.path[0]);
    const description = (schema.shape[name] as z.ZodType | undefined)?.description ?? '';
    return `${name}=${JSON.stringify(env[name])}: ${i.message} (${description})`;
  });
  return { ok: false, problems: problems.join('; ') };
}
