/** Capped exponential backoff with "equal jitter": half the step fixed, half random. */
export function backoffDelay(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

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

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
