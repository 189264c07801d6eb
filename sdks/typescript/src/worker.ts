/**
 * A worker loop: claims operations with a long poll, runs a handler for each, heartbeats in
 * the background (reporting progress, learning of cancel requests, keeping the lease), then
 * completes or fails the operation. `stop()` stops claiming (aborting a claim in flight) and
 * lets the jobs in hand finish; the promise of `run()` then resolves.
 */
import { operationId, type Herald } from "./client.js";
import { AuthenticationError, ConflictError, NotFoundError, PermissionDeniedError } from "./errors.js";
import type { ClaimedOperation } from "./types.js";

/** Throw from a handler to end the operation with this error; `retryable` hands it back to the queue. */
export class JobFailed extends Error {
  override name = "JobFailed";
  constructor(
    readonly code: string,
    message: string,
    readonly options: { retryable?: boolean } = {},
  ) {
    super(message);
  }
}

/** One claimed operation, as a handler sees it. */
export class Job {
  readonly id: string;
  readonly leaseToken: string;
  readonly attempt: number;
  readonly input: unknown;
  readonly metadata: Record<string, unknown>;
  readonly #cancel = new AbortController();
  #pending: Record<string, unknown> = {};

  constructor(readonly operation: ClaimedOperation) {
    this.id = operationId(operation);
    this.leaseToken = operation.lease_token;
    this.attempt = operation.attempt;
    this.input = operation.input;
    this.metadata = { ...operation.metadata };
  }

  /** Aborted when a heartbeat learns that a client cancelled the operation, or that the lease was lost. */
  get signal(): AbortSignal {
    return this.#cancel.signal;
  }
  get cancelled(): boolean {
    return this.#cancel.signal.aborted;
  }
  /** Sent on the next heartbeat; pollers see it as `metadata.progress_percent`. */
  setProgress(percent: number): void {
    this.setMetadata("progress_percent", Math.max(0, Math.min(100, percent)));
  }
  /** Any metadata field, sent on the next heartbeat. A value JSON cannot carry (a BigInt, a cycle) throws a TypeError here rather than failing every later heartbeat. */
  setMetadata(key: string, value: unknown): void {
    try {
      JSON.stringify(value);
    } catch (e) {
      throw new TypeError(`metadata ${JSON.stringify(key)} is not JSON-serialisable: ${(e as Error).message}`, { cause: e });
    }
    this.#pending[key] = value;
  }

  /** @internal */
  takePending(): Record<string, unknown> {
    const p = this.#pending;
    this.#pending = {};
    return p;
  }
  /** @internal */
  putBack(metadata: Record<string, unknown>): void {
    this.#pending = { ...metadata, ...this.#pending };
  }
  /** @internal */
  abort(reason: string): void {
    this.#cancel.abort(new Error(reason));
  }
}

export type Handler = (job: Job) => unknown | Promise<unknown>;

export interface WorkerOptions {
  /** Operation types to claim; empty: every declared type (in the key's scope). */
  types?: string[];
  /** Lease asked for at claim and heartbeat; undefined: the type's lease from config. */
  leaseMs?: number;
  /** How long one claim long poll may wait (default 20 000 ms). */
  claimWaitMs?: number;
  /** Time between heartbeats (default 10 000 ms); keep it well under the lease. */
  heartbeatEveryMs?: number;
  /** Jobs run at once (default 1). */
  concurrency?: number;
  /** Where warnings go (default: console.warn). */
  onWarning?: (message: string, error: unknown) => void;
}

const pause = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });

/**
 * Runs `handler(job)` for every operation it claims. The handler's resolved value is the
 * operation's `response`; throwing {@link JobFailed} fails it; any other error fails it as
 * retryable `HANDLER_ERROR` (another attempt runs, up to `max_attempts`). A value JSON cannot
 * carry (a BigInt) fails it for good with `RESPONSE_NOT_JSON`. Heartbeat failures never end a
 * job or `run()`: they are reported to `onWarning` and retried on the next beat; a lost lease
 * aborts the job's `signal`.
 */
export class Worker {
  readonly #client: Herald;
  readonly #handler: Handler;
  readonly #options: Required<Omit<WorkerOptions, "leaseMs">> & { leaseMs: number | undefined };
  readonly #stop = new AbortController();
  readonly #jobs = new Set<Promise<void>>();

  constructor(client: Herald, handler: Handler, options: WorkerOptions = {}) {
    this.#client = client;
    this.#handler = handler;
    this.#options = {
      types: options.types ?? [],
      leaseMs: options.leaseMs,
      claimWaitMs: options.claimWaitMs ?? 20_000,
      heartbeatEveryMs: options.heartbeatEveryMs ?? 10_000,
      concurrency: Math.max(1, options.concurrency ?? 1),
      onWarning: options.onWarning ?? ((m, e) => console.warn(`herald worker: ${m}:`, e)),
    };
  }

  /** Stops claiming (a claim in flight is aborted; an operation it had just claimed comes back after its lease). */
  stop(): void {
    this.#stop.abort(new Error("worker stopped"));
  }
  get stopping(): boolean {
    return this.#stop.signal.aborted;
  }

  /** Claims and runs jobs until `stop()`, then waits for the jobs in hand. Rejects only when Herald refuses the key. */
  async run(): Promise<void> {
    const stop = this.#stop.signal;
    const stopped = new Promise<void>((resolve) => {
      if (stop.aborted) resolve();
      else stop.addEventListener("abort", () => resolve(), { once: true });
    });
    let backoff = 200;
    try {
      while (!stop.aborted) {
        if (this.#jobs.size >= this.#options.concurrency) {
          await Promise.race([...this.#jobs, stopped]); // a free slot, or stop
          continue;
        }
        let claimed: ClaimedOperation[];
        try {
          claimed = await this.#client.claim({
            types: this.#options.types,
            leaseMs: this.#options.leaseMs,
            max: this.#options.concurrency - this.#jobs.size,
            waitMs: this.#options.claimWaitMs,
            signal: stop,
          });
        } catch (e) {
          if (stop.aborted) break;
          if (e instanceof AuthenticationError || e instanceof PermissionDeniedError) throw e;
          this.#options.onWarning("claim failed; retrying", e);
          await pause(backoff, stop);
          backoff = Math.min(backoff * 2, 10_000);
          continue;
        }
        backoff = 200;
        for (const op of claimed) {
          const p: Promise<void> = this.#runJob(new Job(op))
            .catch((e: unknown) => this.#options.onWarning(`job ${operationId(op)} ended abnormally`, e))
            .finally(() => this.#jobs.delete(p));
          this.#jobs.add(p);
        }
      }
    } finally {
      await Promise.allSettled([...this.#jobs]);
    }
  }

  async #runJob(job: Job): Promise<void> {
    const client = this.#client;
    const beatStop = new AbortController();
    const beating = this.#heartbeatLoop(job, beatStop.signal);
    let outcome: { response: unknown } | { failed: JobFailed };
    try {
      outcome = { response: await this.#handler(job) };
    } catch (e) {
      outcome = {
        failed: e instanceof JobFailed ? e : new JobFailed("HANDLER_ERROR", String(e instanceof Error ? `${e.name}: ${e.message}` : e), { retryable: true }),
      };
    } finally {
      beatStop.abort();
    }
    await beating;
    if ("response" in outcome) {
      try {
        JSON.stringify(outcome.response);
      } catch (e) {
        const message = `the handler's result cannot be serialised as JSON: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`;
        outcome = { failed: new JobFailed("RESPONSE_NOT_JSON", message) };
      }
    }
    try {
      const unsent = job.takePending();
      if (Object.keys(unsent).length > 0 && !job.cancelled) {
        // Metadata set since the last beat would otherwise be lost.
        await client.heartbeat(job.id, job.leaseToken, { metadata: unsent, leaseMs: this.#options.leaseMs }).catch(() => undefined);
      }
      if ("response" in outcome) {
        await client.complete(job.id, job.leaseToken, outcome.response);
      } else {
        const f = outcome.failed;
        await client.fail(job.id, job.leaseToken, { code: f.code, message: f.message }, { retryable: f.options.retryable ?? false });
      }
    } catch (e) {
      // A 409 or 404: the lease was lost; Herald kept its state and will not take ours.
      this.#options.onWarning(`could not report the outcome of ${job.id}`, e);
    }
  }

  /** Never rejects: an error is reported and the next beat tries again; a lost lease aborts the job. */
  async #heartbeatLoop(job: Job, stop: AbortSignal): Promise<void> {
    for (;;) {
      await pause(this.#options.heartbeatEveryMs, stop);
      if (stop.aborted) return;
      const metadata = job.takePending();
      try {
        const reply = await this.#client.heartbeat(job.id, job.leaseToken, { metadata, leaseMs: this.#options.leaseMs });
        if (reply.cancel_requested) job.abort("cancel requested");
      } catch (e) {
        if (e instanceof ConflictError || e instanceof NotFoundError) {
          job.abort("lease lost"); // nothing done now will count
          return;
        }
        job.putBack(metadata);
        this.#options.onWarning(`heartbeat of ${job.id} failed; will retry`, e);
      }
    }
  }
}
