import { describe, expect, it } from 'vitest';
import { loadConfig, MAX_ROW_CHARS } from '../../replicator/config.ts';
import type { Delivery } from '../../replicator/deliver/delivery.ts';
import { changeJson, OVERSIZED_ROW } from '../../replicator/deliver/request-body.ts';
import { parseLsn } from '../../src/lsn.ts';

const required = { DATABASE_URL: 'postgres://u@127.0.0.1:5432/db', EDGE_URL: 'http://127.0.0.1:8787', REPLICATOR_SECRET: 'x'.repeat(32) };
/** SQLite's value limit in an object (docs/architecture.md, platform limits). */
const SQLITE_VALUE_BYTES = 2_000_000;

function delivery(oldJson: string | null, dataJson: string): Delivery {
  const lsn = '0/16B3748';
  return {
    accountId: 'a',
    lsn,
    position: { lsn: parseLsn(lsn), seq: 0 },
    xid: 700,
    table: 'resources',
    op: oldJson ? 'update' : 'insert',
    committedAt: '2026-12-01T20:00:00.000Z',
    oldJson,
    dataJson,
  };
}

describe('the largest row sent whole', () => {
  it('defaults to the most a change may carry, and a larger setting is refused with the reason', () => {
    expect(loadConfig(required).FORWARD_MAX_ROW_BYTES).toBe(MAX_ROW_CHARS);
    expect(loadConfig({ ...required, FORWARD_MAX_ROW_BYTES: '4096' }).FORWARD_MAX_ROW_BYTES).toBe(4096);
    expect(() => loadConfig({ ...required, FORWARD_MAX_ROW_BYTES: String(MAX_ROW_CHARS + 1) })).toThrow(
      `FORWARD_MAX_ROW_BYTES must be at most ${MAX_ROW_CHARS}: a change (its old and new row) must fit one value of an object's SQLite`,
    );
  });

  it("keeps the worst change (old and new rows at the bound, each character 3 UTF-8 bytes) within one value of an object's SQLite", () => {
    const row = (id: string) => {
      const head = `{"id":"${id}","account_id":"a","notes":"`;
      return `${head}${'€'.repeat(MAX_ROW_CHARS - head.length - 2)}"}`;
    };
    const old = row('r1');
    expect(old.length).toBe(MAX_ROW_CHARS);
    const text = changeJson(delivery(old, row('r1')), MAX_ROW_CHARS);
    expect(text).not.toContain(OVERSIZED_ROW);
    // What the writer logs for its relays is the parsed change stringified again: the same text.
    const logged = JSON.stringify(JSON.parse(text));
    expect(Buffer.byteLength(logged, 'utf8')).toBeGreaterThan(1_500_000);
    expect(Buffer.byteLength(logged, 'utf8')).toBeLessThan(SQLITE_VALUE_BYTES);
    // One character more and the row goes key-only.
    expect(changeJson(delivery(null, `${old.slice(0, -2)}€"}`), MAX_ROW_CHARS)).toContain(OVERSIZED_ROW);
  });
});
