export type ResponseVerdict = 'delivered' | 'transient' | 'permanent';

/**
 * What a response of the Worker means for a batch. 2xx: delivered. 5xx, 408, 409 and 429: try again
 * soon. Any other 4xx refuses a well-signed batch for a reason that waiting will not fix (a wrong
 * secret, a bug): the account is retried slowly and shown in health, never skipped, and the other
 * accounts go on.
 */
export function classifyStatus(status: number): ResponseVerdict {
  if (status >= 200 && status < 300) return 'delivered';
  if (status >= 500 || status === 408 || status === 409 || status === 429) return 'transient';
  return 'permanent';
}
