/** A counting semaphore: at most `size` holders at once, the others wait in arrival order. */
export class Slots {
  private held = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly size: number) {}

  get inUse(): number {
    return this.held;
  }

  async acquire(): Promise<void> {
    if (this.held < this.size) {
      this.held++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  /** Hands the slot to the next waiter, or frees it. */
  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.held--;
  }

  /** Wakes every waiter (on stop); each then finds the deliverer stopped. */
  releaseAll(): void {
    for (const w of this.waiting.splice(0)) {
      this.held++;
      w();
    }
  }
}
