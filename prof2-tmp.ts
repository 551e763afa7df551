import { readFileSync } from 'node:fs';
import { PgoutputDecoder } from './replicator/pgoutput/decoder.ts';
const buf = readFileSync('/tmp/corpus.bin'); const msgs: Buffer[] = [];
for (let o = 0; o < buf.length;) { const n = buf.readUInt32BE(o); msgs.push(buf.subarray(o + 4, o + 4 + n)); o += 4 + n; }
const rows = msgs.filter(m => m[0] === 0x49 || m[0] === 0x55 || m[0] === 0x44).length;
for (let round = 0; round < 8; round++) {
  const t = performance.now(); const d = new PgoutputDecoder(); for (const m of msgs) d.decode(m); const el = performance.now() - t;
  console.log('ours', Math.round(rows / el * 1000), '/s');
}
