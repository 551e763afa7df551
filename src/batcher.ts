/**
 * Group commit: items added while a batch runs, or within `windowMs` of the first of a quiet
 * spell, go together in the next batch; one batch runs at a time, of at most `max` items. A lone
 * item waits `windowMs`; under load batches grow to what arrives while the previous one runs,
 * so the number of batches follows the time they take, not the number of items.
 */
export class Batcher<In, Out> {
  private queue: Array<{ item: In; resolve: (v: Out) => void; reject: (e: unknown) => void }> = [];
  private timer: ReturnType<typeof setTimeout> | undefined;
  private running = false;

  /**
   * `run` answers each item of a batch, in order: a rejected one fails only its own `add`. If
   * `run` itself throws, every item of the batch fails with that error.
   */
  constructor(
    private readonly run: (items: In[]) => Promise<PromiseSettledResult<Out>[]>,
    private readonly opts: { windowMs: number; max: number },
  ) {}

  add(item: In): Promise<Out> {
    return new Promise<Out>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (this.running) return;
      if (this.queue.length >= this.opts.max) this.start();
      else this.timer ??= setTimeout(() => this.start(), this.opts.windowMs);
    });
  }

  private start(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.running || this.queue.length === 0) return;
    this.running = true;
    const batch = this.queue.splice(0, this.opts.max);
    void this.settle(batch).finally(() => {
      this.running = false;
      // What arrived meanwhile has waited for the running batch already: no window for it.
      this.start();
    });
  }

  private async settle(batch: Array<{ item: In; resolve: (v: Out) => void; reject: (e: unknown) => void }>): Promise<void> {
    let results: PromiseSettledResult<Out>[];
    try {
      results = await this.run(batch.map((b) => b.item));
    } catch (err) {
      for (const b of batch) b.reject(err);
      return;
    }
    for (const [i, b] of batch.entries()) {
      const r = results[i];
      if (r?.status === 'fulfilled') b.resolve(r.value);
      else b.reject(r ? r.reason : new Error('batch returned no result for this item'));
    }
  }
}
