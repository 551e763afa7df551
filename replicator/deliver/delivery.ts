import type { Change } from '../../src/change.ts';
import type { RoutedChange } from '../assemble/routed-changes.ts';
import type { Ticket } from '../stream/ack-watermark.ts';

/** A change on its way to change_logs and to its account's object; rows are serialized once for both. */
export interface Delivery {
  accountId: string;
  change: Change;
  oldJson: string | null;
  dataJson: string | null;
  ticket: Ticket;
}

export function toDelivery(routed: RoutedChange, ticket: Ticket): Delivery {
  const { change } = routed;
  return {
    accountId: routed.accountId,
    change,
    oldJson: change.old === null ? null : JSON.stringify(change.old),
    dataJson: change.data === null ? null : JSON.stringify(change.data),
    ticket,
  };
}

/** The Change's JSON (docs/protocol.md#changes-route), from the pre-serialized rows. */
export function changeJson(d: Delivery): string {
  const c = d.change;
  return `{"lsn":"${c.lsn}","seq":${c.seq},"xid":${c.xid},"table":"${c.table}","op":"${c.op}","old":${d.oldJson ?? 'null'},"data":${d.dataJson ?? 'null'},"committed_at":"${c.committed_at}"}`;
}

export function batchBody(batch: readonly Delivery[]): string {
  let body = '{"changes":[';
  for (let i = 0; i < batch.length; i++) body += (i === 0 ? '' : ',') + changeJson(batch[i] as Delivery);
  return `${body}]}`;
}
