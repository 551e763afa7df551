import { closeSync, openSync, readdirSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { ChangeOp } from '../../src/change.ts';
import type { Row } from '../../src/json.ts';
import type { TableName } from '../../src/tables.ts';
import { AssemblyError, SpillError } from '../errors.ts';

/** Characters gathered before one write to the file. */
const WRITE_BUFFER_CHARS = 1 << 20;
/** Bytes read from the file at a time. */
const READ_BLOCK_BYTES = 256 << 10;
const PREFIX = 'edgeplane-spill-';

/** An event read back from a spill file: rows as the JSON text that change_logs and the Worker get. */
export interface SpilledEvent {
  /** The (sub)transaction that made it. */
  xid: number;
  op: ChangeOp;
  table: TableName;
  /** Empty for a truncate, which goes to every account. */
  accountId: string;
  oldJson: string | null;
  dataJson: string | null;
}

interface XidCounts {
  rows: number;
  truncates: number;
}

/**
 * The events of one open transaction too large to hold in memory (docs/architecture.md#the-path-of-a-change,
 * step 4), in a temporary file of its own. One event a line, fields separated by tabs:
 * `xid, op, table, account id, old row, new row`, rows as JSON text (empty for none). JSON text
 * holds no raw tab or newline, so nothing needs escaping. A streamed subtransaction's abort is
 * recorded and its events are left out when the file is read back, in chunks, at the commit.
 */
export class SpillFile {
  private fd: number | undefined;
  private pending = '';
  private readonly counts = new Map<number, XidCounts>();
  private readonly aborted = new Set<number>();
  private readAt = 0;
  /** One buffer for every read: the bytes of a partial line at its start, then the next block. */
  private block: Buffer | undefined;
  private carried = 0;
  private parsed: SpilledEvent[] = [];
  private parsedAt = 0;
  /** Bytes written so far. */
  bytes = 0;

  private constructor(readonly path: string) {
    this.fd = io(path, () => openSync(path, 'wx+', 0o600));
  }

  /** A new, empty file for transaction `xid` in `dir`. */
  static create(dir: string, xid: number): SpillFile {
    return new SpillFile(path.join(dir, `${PREFIX}${process.pid}-${xid}-${randomBytes(4).toString('hex')}.tsv`));
  }

  /** A row event, with the rows as toChanges would send them (no old row for an insert, no new row for a delete). */
  appendRow(xid: number, op: 'insert' | 'update' | 'delete', table: TableName, accountId: string, old: Row | null, data: Row | null): void {
    const oldJson = op === 'insert' || old === null ? '' : JSON.stringify(old);
    const dataJson = op === 'delete' || data === null ? '' : JSON.stringify(data);
    this.append(xid, `${xid}\t${op}\t${table}\t${accountId}\t${oldJson}\t${dataJson}\n`);
    this.count(xid).rows++;
  }

  appendTruncate(xid: number, table: TableName): void {
    this.append(xid, `${xid}\ttruncate\t${table}\t\t\t\n`);
    this.count(xid).truncates++;
  }

  /** A streamed subtransaction was rolled back: its events are not read back. */
  abort(subxid: number): void {
    this.aborted.add(subxid);
  }

  /** Events that will be read back (aborted subtransactions left out). */
  get events(): number {
    let n = 0;
    for (const [xid, c] of this.counts) if (!this.aborted.has(xid)) n += c.rows + c.truncates;
    return n;
  }

  get hasTruncate(): boolean {
    for (const [xid, c] of this.counts) if (c.truncates > 0 && !this.aborted.has(xid)) return true;
    return false;
  }

  /** Changes the file turns into: one per row, one per account per truncate. */
  changeCount(truncateAccounts: number): number {
    let n = 0;
    for (const [xid, c] of this.counts) if (!this.aborted.has(xid)) n += c.rows + c.truncates * truncateAccounts;
    return n;
  }

  /** The next events in the order they were appended, at most `max`; none once all were read. */
  read(max: number): SpilledEvent[] {
    this.flush();
    const out: SpilledEvent[] = [];
    while (out.length < max) {
      if (this.parsedAt < this.parsed.length) {
        out.push(this.parsed[this.parsedAt++] as SpilledEvent);
        continue;
      }
      this.parsed = [];
      this.parsedAt = 0;
      if (!this.fill()) break;
    }
    return out;
  }

  /** Closes and deletes the file; safe to call more than once. */
  remove(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
    this.pending = '';
    this.parsed = [];
    this.block = undefined;
    try {
      unlinkSync(this.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  private count(xid: number): XidCounts {
    let c = this.counts.get(xid);
    if (!c) {
      c = { rows: 0, truncates: 0 };
      this.counts.set(xid, c);
    }
    return c;
  }

  private append(xid: number, line: string): void {
    if (this.readAt > 0) throw new AssemblyError(`an event of transaction ${xid} after its spill file was read`, { xid });
    this.pending += line;
    if (this.pending.length >= WRITE_BUFFER_CHARS) this.flush();
  }

  private flush(): void {
    if (this.pending.length === 0) return;
    const fd = this.open();
    const text = this.pending;
    this.pending = '';
    const size = Buffer.byteLength(text);
    io(this.path, () => {
      const written = writeSync(fd, text);
      // A short write (a full disk says so with an error first, as a rule): write the rest from bytes.
      if (written < size) {
        const buf = Buffer.from(text);
        for (let off = written; off < size; ) off += writeSync(fd, buf, off);
      }
    });
    this.bytes += size;
  }

  /** Reads the next block and parses its whole lines; false at the end of the file. */
  private fill(): boolean {
    const fd = this.open();
    this.block ??= Buffer.allocUnsafe(READ_BLOCK_BYTES);
    for (;;) {
      // A line longer than the buffer: a larger one.
      if (this.carried === this.block.length) {
        const larger = Buffer.allocUnsafe(this.block.length * 2);
        this.block.copy(larger, 0, 0, this.carried);
        this.block = larger;
      }
      const block = this.block;
      const n = io(this.path, () => readSync(fd, block, this.carried, block.length - this.carried, this.readAt));
      if (n === 0) {
        if (this.carried > 0) throw new AssemblyError(`spill file ${this.path} ends inside a line`);
        return false;
      }
      this.readAt += n;
      const length = this.carried + n;
      const end = this.block.lastIndexOf(0x0a, length - 1);
      if (end < 0) {
        this.carried = length;
        continue;
      }
      const text = this.block.toString('utf8', 0, end);
      this.carried = this.block.copy(this.block, 0, end + 1, length);
      for (const line of text.split('\n')) {
        const e = parseLine(line);
        if (!this.aborted.has(e.xid)) this.parsed.push(e);
      }
      if (this.parsed.length > 0) return true;
    }
  }

  private open(): number {
    if (this.fd === undefined) throw new AssemblyError(`spill file ${this.path} was removed`);
    return this.fd;
  }
}

/** Runs a file system call; its error becomes a SpillError naming the file. */
function io<T>(file: string, call: () => T): T {
  try {
    return call();
  } catch (err) {
    throw new SpillError(file, { cause: err });
  }
}

function parseLine(line: string): SpilledEvent {
  const f = line.split('\t');
  if (f.length !== 6) throw new AssemblyError(`malformed spill file line (${f.length} fields)`);
  return {
    xid: Number(f[0]),
    op: f[1] as ChangeOp,
    table: f[2] as TableName,
    accountId: f[3] as string,
    oldJson: f[4] === '' ? null : (f[4] as string),
    dataJson: f[5] === '' ? null : (f[5] as string),
  };
}

/**
 * Removes spill files in `dir` left by replicator processes that are gone (killed before they could
 * clean up). Files of running processes stay: several replicators may share the folder.
 */
export function removeStaleSpillFiles(dir: string): number {
  let removed = 0;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (!name.startsWith(PREFIX)) continue;
    const pid = Number(name.slice(PREFIX.length).split('-')[0]);
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || isRunning(pid)) continue;
    try {
      unlinkSync(path.join(dir, name));
      removed++;
    } catch {
      // Another replicator removed it first.
    }
  }
  return removed;
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
