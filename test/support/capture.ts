import type { Sql } from 'postgres';
import { formatLsn } from '../../src/lsn.ts';
import { ReplicationStream } from '../../replicator/stream/replication-stream.ts';
import { startReplicationCommand } from '../../replicator/stream/setup.ts';

export interface CapturedMessage {
  /** WAL position of the record the message came from. */
  lsn: string;
  data: Buffer;
}

/**
 * Reads pgoutput messages through the slot's SQL interface: the same bytes a walsender would put in
 * XLogData frames, produced by the real server. Consumes what it returns.
 */
export async function capturePgoutput(
  sql: Sql,
  slot: string,
  publication: string,
  options: { protocol?: 1 | 2; streaming?: boolean; messages?: boolean } = {},
): Promise<CapturedMessage[]> {
  const params = ['proto_version', String(options.protocol ?? 2), 'publication_names', publication];
  if (options.streaming ?? true) params.push('streaming', 'on');
  if (options.messages ?? true) params.push('messages', 'true');
  const rows = await sql.unsafe<{ lsn: string; data: Buffer }[]>(
    `select lsn::text as lsn, data from pg_logical_slot_get_binary_changes($1, null, null, ${params.map((_, i) => `$${i + 2}`).join(', ')})`,
    [slot, ...params],
  );
  return rows.map((r) => ({ lsn: r.lsn, data: r.data }));
}

/** Frames of a live walsender, through the replicator's own replication connection. */
export class LiveCapture {
  readonly messages: CapturedMessage[] = [];
  private stream: ReplicationStream | undefined;
  private acked = 0n;

  static async start(url: string, slot: string, publication: string): Promise<LiveCapture> {
    const capture = new LiveCapture();
    const sql = ReplicationStream.connect(url, () => {});
    capture.stream = await ReplicationStream.start(sql, startReplicationCommand(slot, publication, { protocolVersion: 2, streaming: true }), {
      onXLogData: (frame) => capture.messages.push({ lsn: formatLsn(frame.readBigUInt64BE(1)), data: Buffer.from(frame.subarray(25)) }),
      onKeepalive: (_walEnd, reply) => reply && capture.stream?.sendStatus(capture.acked),
      onEnd: () => {},
    });
    return capture;
  }

  async close(): Promise<void> {
    await this.stream?.close();
  }
}
