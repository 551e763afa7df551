/**
 * The object's single alarm, mirrored in memory so that connects and flows decide without a
 * storage read. Incremental updates only ever move it earlier; an alarm that fires early finds
 * nothing to do (alarm handlers are idempotent), so over-approximating is safe.
 */
export class AlarmClock {
  /** undefined: not read from storage yet in this instance. */
  private scheduled: number | null | undefined;

  constructor(private readonly storage: DurableObjectStorage) {}

  private async current(): Promise<number | null> {
    if (this.scheduled === undefined) this.scheduled = await this.storage.getAlarm();
    return this.scheduled;
  }

  /** Makes sure the alarm fires no later than `at`. */
  async noLaterThan(at: number | null): Promise<void> {
    if (at === null) return;
    const current = await this.current();
    if (current !== null && current <= at) return;
    await this.set(at);
  }

  /** Sets the alarm to exactly `at` (null: none), after a full recompute. */
  async exactly(at: number | null): Promise<void> {
    // Every batch recomputes the alarm and nearly always finds the one set: decided without the awaits.
    if (at === this.scheduled) return;
    const current = await this.current();
    if (at === null) {
      if (current !== null) await this.storage.deleteAlarm();
      this.scheduled = null;
      return;
    }
    if (current !== at) await this.set(at);
  }

  /** The alarm fired: the runtime cleared it. */
  fired(): void {
    this.scheduled = null;
  }

  private async set(at: number): Promise<void> {
    const when = Math.max(at, Date.now() + 1);
    await this.storage.setAlarm(when);
    this.scheduled = when;
  }
}
