export type ResponseVerdict = 'delivered' | 'retry' | 'bug';

/**
 * What a response of the Worker means for a batch. 2xx: delivered. 5xx, 408, 409 and 429: try again.
 * Any other 4xx means the replicator sent something the Worker refuses: a bug, logged loudly, and
 * the batch is still retried (skipping it would lose changes).
 */
export function classifyStatus(status: number): ResponseVerdict {
  if (status >= 200 && status < 300) return 'delivered';
  if (status >= 500 || status === 408 || status === 409 || status === 429) return 'retry';
  return 'bug';
}
