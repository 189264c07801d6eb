/**
 * Webhooks are at-least-once: the same event can arrive twice. A dedupe store remembers event
 * ids so that a consumer applies each event once. {@link MemoryDedupe} keeps the most recent ids
 * in memory (bounded); implement {@link DedupeStore} over your database for dedupe that survives
 * restarts and is shared by replicas (`INSERT … ON CONFLICT DO NOTHING`).
 *
 * Dedupe is not ordering: for a resource's final state use the event's `sequence`.
 */
export interface DedupeStore {
  /** Records `eventId` and says whether it is new. Atomic: of two concurrent calls with one id, exactly one gets true. */
  firstTime(eventId: string): boolean | Promise<boolean>;
  /** Undoes `firstTime`, so that a redelivery is processed again: call it when handling failed. */
  forget(eventId: string): void | Promise<void>;
}

/** The last `capacity` event ids; older ones are forgotten, so size it above the events that can arrive within the retry window. */
export class MemoryDedupe implements DedupeStore {
  readonly capacity: number;
  readonly #seen = new Set<string>(); // insertion-ordered: the first is the oldest

  constructor(capacity = 100_000) {
    this.capacity = Math.max(1, capacity);
  }

  firstTime(eventId: string): boolean {
    if (this.#seen.has(eventId)) return false;
    if (this.#seen.size >= this.capacity) {
      const oldest = this.#seen.values().next();
      if (!oldest.done) this.#seen.delete(oldest.value);
    }
    this.#seen.add(eventId);
    return true;
  }

  forget(eventId: string): void {
    this.#seen.delete(eventId);
  }

  get size(): number {
    return this.#seen.size;
  }
}
