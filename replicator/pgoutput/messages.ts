import type { JsonValue, Row } from '../../src/json.ts';
import type { Lsn } from '../../src/lsn.ts';
import type { ColumnType } from './values.ts';

export interface RelationColumn {
  name: string;
  typeOid: number;
  typeMod: number;
  /** Part of the replica identity key. */
  isKey: boolean;
  type: ColumnType;
}

export interface Relation {
  oid: number;
  namespace: string;
  name: string;
  /** 'd' default, 'n' nothing, 'f' full, 'i' index. */
  replicaIdentity: string;
  columns: RelationColumn[];
  /** Makes a row object from the column values, in column order (see `rowBuilder`). */
  makeRow: (values: readonly JsonValue[]) => Row;
}

/** Only present inside a streamed transaction (protocol 2+): the (sub)transaction of the message. */
type Streamed = { xid: number | undefined };

export type PgoutputMessage =
  | { tag: 'begin'; finalLsn: Lsn; commitTime: bigint; xid: number }
  | { tag: 'commit'; flags: number; commitLsn: Lsn; endLsn: Lsn; commitTime: bigint }
  | { tag: 'origin'; originLsn: Lsn; name: string }
  | ({ tag: 'relation'; relation: Relation } & Streamed)
  | ({ tag: 'type'; oid: number; namespace: string; name: string } & Streamed)
  | ({ tag: 'insert'; relation: Relation; new: Row } & Streamed)
  | ({
      tag: 'update';
      relation: Relation;
      /** The whole old row (REPLICA IDENTITY FULL), or null. */
      old: Row | null;
      /** The old key columns (other identities), or null. */
      key: Row | null;
      /** Unchanged TOAST values are filled from `old` where it has them. */
      new: Row;
      /** Columns sent as unchanged TOAST that no old tuple could fill (absent from `new`). */
      unchangedToast: string[] | null;
    } & Streamed)
  | ({ tag: 'delete'; relation: Relation; old: Row | null; key: Row | null } & Streamed)
  | ({ tag: 'truncate'; options: number; relations: Relation[] } & Streamed)
  | ({ tag: 'message'; transactional: boolean; lsn: Lsn; prefix: string; content: Buffer } & Streamed)
  | { tag: 'stream_start'; xid: number; firstSegment: boolean }
  | { tag: 'stream_stop' }
  | { tag: 'stream_commit'; xid: number; flags: number; commitLsn: Lsn; endLsn: Lsn; commitTime: bigint }
  | { tag: 'stream_abort'; xid: number; subxid: number }
  | { tag: 'unknown'; type: number };

export type PgoutputTag = PgoutputMessage['tag'];
