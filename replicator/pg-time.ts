/** Postgres counts time in microseconds since 2000-01-01 UTC (this instant, in Unix milliseconds). */
const POSTGRES_EPOCH_MS = 946_684_800_000;
const POSTGRES_EPOCH_MS_BIG = BigInt(POSTGRES_EPOCH_MS);

/** Unix milliseconds as Postgres time (a standby status update's clock). */
export function postgresTimeFromUnixMs(ms: number): bigint {
  return (BigInt(ms) - POSTGRES_EPOCH_MS_BIG) * 1000n;
}

/** Postgres time (a commit's timestamp) to ISO-8601 UTC with six fraction digits. */
export function postgresTimeToIso(micros: bigint): string {
  let seconds = micros / 1_000_000n;
  if (micros % 1_000_000n < 0n) seconds -= 1n; // floor, for times before 2000
  const us = Number(micros - seconds * 1_000_000n);
  const iso = new Date(Number(seconds) * 1000 + POSTGRES_EPOCH_MS).toISOString();
  return `${iso.slice(0, 19)}.${String(us).padStart(6, '0')}Z`;
}
