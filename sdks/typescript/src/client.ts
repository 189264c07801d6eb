/**
 * The HTTP client: one {@link Herald} per base URL and key, with a typed method per route of
 * the API (docs/api.md). Uses the platform's `fetch`; no dependencies.
 */
import { ApiError, apiError, DecodeError, RateLimitedError, TransportError, UnavailableError, WaitTimeoutError } from "./errors.js";
import type {
  ClaimedOperation,
  CreateEvent,
  CreateKey,
  CreateOperation,
  CreateWebhook,
  Delivery,
  Event,
  EventAccepted,
  EventType,
  HeartbeatReply,
  Key,
  Operation,
  OperationError,
  PatchWebhook,
  Replay,
  Tenant,
  Webhook,
} from "./types.js";

// Request bodies are the generated types of the OpenAPI document (src/types.ts), so a change of
// the document changes these signatures when the types are regenerated.
export type WebhookFormat = NonNullable<CreateWebhook["format"]>;
export type WebhookOrdering = NonNullable<CreateWebhook["ordering"]>;
export type ReplayStatus = NonNullable<Replay["status"]>;
export type DeliveryStatus = Delivery["status"];

/** One page of a list; `nextPageToken` is `""` on the last page. */
export interface Page<T> {
  items: T[];
  nextPageToken: string;
}

export interface ReplayResult {
  webhook: string;
  replayed: number;
  done: boolean;
}

export interface HeraldOptions {
  /** Per-request timeout in milliseconds (long polls add their wait). Default 30 000. */
  timeoutMs?: number;
  /** A `fetch` of your own (proxies, instrumentation). Default: the global one. */
  fetch?: typeof fetch;
}

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  idempotencyKey?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface Answer {
  status: number;
  headers: Headers;
  body: unknown;
}

export interface WaitOptions {
  /** Give up after this many milliseconds (default 300 000) with a WaitTimeoutError. */
  timeoutMs?: number;
  /** Backoff when Herald gives no Retry-After: from this (default 500 ms)… */
  initialBackoffMs?: number;
  /** …doubling up to this (default 30 000 ms). */
  maxBackoffMs?: number;
  signal?: AbortSignal;
}

/** Milliseconds as a Herald duration string (`"1500ms"`). */
export function duration(ms: number): string {
  return `${Math.max(0, Math.round(ms))}ms`;
}

/** `Retry-After` in seconds: a number of seconds or an HTTP date. */
export function parseRetryAfter(value: string | null | undefined): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text);
  const when = Date.parse(text);
  if (Number.isNaN(when)) return undefined;
  return Math.max(0, (when - Date.now()) / 1000);
}

/** `op_…` from an id, a name `operations/op_…` or an Operation. */
export function operationId(operation: string | { name: string }): string {
  const name = typeof operation === "string" ? operation : operation.name;
  return name.startsWith("operations/") ? name.slice("operations/".length) : name;
}

/** A path segment, percent-encoded. `""`, `"."` and `".."` throw a TypeError before anything is sent: URL resolution collapses them (`createTenantKey("..")` would POST to `/keys`). */
function seg(s: string): string {
  if (s === "" || s === "." || s === "..") throw new TypeError(`not a valid id for a URL path segment: ${JSON.stringify(s)}`);
  return encodeURIComponent(s);
}

function compact<T extends Record<string, unknown>>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A handle on one Herald with one key (admin, tenant or worker). */
export class Herald {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  readonly #key: string;
  readonly #fetch: typeof fetch;

  constructor(baseUrl: string, key: string, options: HeraldOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.#key = key;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.#fetch = options.fetch ?? globalThis.fetch;
  }

  // -- transport ---------------------------------------------------------------

  /** One request; a non-2xx answer throws the ApiError for its `code`. */
  async request(method: string, path: string, body?: unknown, options: RequestOptions = {}): Promise<Answer> {
    let url = this.baseUrl + path;
    const query = Object.entries(options.query ?? {}).filter(([, v]) => v !== undefined);
    if (query.length > 0) url += "?" + new URLSearchParams(query.map(([k, v]): [string, string] => [k, String(v)])).toString();
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.#key}`,
      accept: "application/json",
    };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (options.idempotencyKey !== undefined) headers["idempotency-key"] = options.idempotencyKey;
    let payload: string | undefined;
    try {
      payload = body !== undefined ? JSON.stringify(body) : method === "POST" ? "" : undefined;
    } catch (e) {
      throw new TypeError(`${method} ${path}: the request body is not JSON-serialisable: ${(e as Error).message}`, { cause: e });
    }
    const timeout = AbortSignal.timeout(options.timeoutMs ?? this.timeoutMs);
    const signal = options.signal ? AbortSignal.any([timeout, options.signal]) : timeout;
    let resp: Response;
    let text: string;
    try {
      // Herald never redirects; following one would forward the key (and turn a POST into a GET).
      resp = await this.#fetch(url, { method, headers, body: payload, signal, redirect: "manual" });
      // The body is read under the same timeout; a reset or abort here is a transport error too.
      text = await resp.text();
    } catch (e) {
      if (options.signal?.aborted) throw options.signal.reason;
      throw new TransportError(`${method} ${url}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    }
    if (resp.status >= 300 && resp.status < 400) {
      throw new TransportError(`${method} ${url}: redirected (${resp.status}) to ${JSON.stringify(resp.headers.get("location"))}; not followed`);
    }
    let parsed: unknown = undefined;
    if (text.length > 0) {
      try {
        parsed = JSON.parse(text);
      } catch {
        if (resp.ok) throw new DecodeError(`${resp.status}: body is not JSON`);
        parsed = { detail: text.slice(0, 200) };
      }
    }
    if (!resp.ok) throw apiError(resp.status, parsed, parseRetryAfter(resp.headers.get("retry-after")));
    return { status: resp.status, headers: resp.headers, body: parsed };
  }

  async #json<T>(method: string, path: string, body?: unknown, options?: RequestOptions): Promise<T> {
    return (await this.request(method, path, body, options)).body as T;
  }

  async #page<T>(path: string, plural: string, query: RequestOptions["query"]): Promise<Page<T>> {
    const body = (await this.#json<Record<string, unknown>>("GET", path, undefined, { query })) ?? {};
    const items = body[plural];
    if (!Array.isArray(items)) throw new DecodeError(`GET ${path}: no ${plural} list in the answer`);
    return { items: items as T[], nextPageToken: typeof body.next_page_token === "string" ? body.next_page_token : "" };
  }

  async *#iterate<T>(path: string, plural: string, query: Record<string, string | number | boolean | undefined>): AsyncGenerator<T> {
    let token: string | undefined;
    for (;;) {
      const page = await this.#page<T>(path, plural, { ...query, page_token: token });
      yield* page.items;
      if (!page.nextPageToken) return;
      token = page.nextPageToken;
    }
  }

  // -- tenants and keys (admin) ------------------------------------------------

  createTenant(name: string): Promise<Tenant> {
    return this.#json("POST", "/tenants", { name });
  }
  getTenant(tenantId: string): Promise<Tenant> {
    return this.#json("GET", `/tenants/${seg(tenantId)}`);
  }
  /** A tenant key; `key` is shown only in this answer. */
  createTenantKey(tenantId: string): Promise<Key> {
    return this.#json("POST", `/tenants/${seg(tenantId)}/keys`, { role: "tenant" });
  }
  /** An admin or worker key; a worker key may be scoped to `types` and `tenants`. */
  createKey(role: CreateKey["role"], scope: Omit<CreateKey, "role"> = {}): Promise<Key> {
    return this.#json("POST", "/keys", compact({ role, types: scope.types, tenants: scope.tenants }));
  }
  async revokeKey(keyId: string): Promise<void> {
    await this.request("DELETE", `/keys/${seg(keyId)}`);
  }

  // -- events -------------------------------------------------------------------

  /** `POST /events` (admin): durable before it resolves. `id` or `idempotencyKey` dedupe a retry. */
  publish(event: CreateEvent, options: { idempotencyKey?: string } = {}): Promise<EventAccepted> {
    const body = compact({ id: event.id, type: event.type, tenant: event.tenant, key: event.key, data: event.data ?? null });
    return this.#json("POST", "/events", body, options);
  }
  getEvent(eventId: string): Promise<Event> {
    return this.#json("GET", `/events/${seg(eventId)}`);
  }
  /** Oldest first. */
  listEvents(filter: EventFilter & PageRequest = {}): Promise<Page<Event>> {
    return this.#page("/events", "events", { ...filter });
  }
  iterEvents(filter: EventFilter & { page_size?: number } = {}): AsyncGenerator<Event> {
    return this.#iterate("/events", "events", { ...filter });
  }
  /** Registers the JSON Schema that `data` of this event type must match (admin). */
  putEventType(name: string, schema: Record<string, unknown>): Promise<EventType> {
    return this.#json("PUT", `/event-types/${seg(name)}`, { schema });
  }
  /** Every registered type, page after page. */
  async listEventTypes(): Promise<EventType[]> {
    const all: EventType[] = [];
    for await (const t of this.#iterate<EventType>("/event-types", "event_types", {})) all.push(t);
    return all;
  }

  // -- webhooks -----------------------------------------------------------------

  /** `signing_secret` is in this answer only (and in `rotateWebhookSecret`'s). */
  /** `signing_secret` is in this answer only (and in `rotateWebhookSecret`'s). `ordering: "key"`: a key's deliveries go one at a time, in `sequence` order. */
  createWebhook(webhook: CreateWebhook): Promise<Webhook> {
    return this.#json("POST", "/webhooks", compact({ ...webhook }));
  }
  getWebhook(webhookId: string): Promise<Webhook> {
    return this.#json("GET", `/webhooks/${seg(webhookId)}`);
  }
  listWebhooks(filter: { tenant?: string } & PageRequest = {}): Promise<Page<Webhook>> {
    return this.#page("/webhooks", "webhooks", { ...filter });
  }
  iterWebhooks(filter: { tenant?: string; page_size?: number } = {}): AsyncGenerator<Webhook> {
    return this.#iterate("/webhooks", "webhooks", { ...filter });
  }
  /** `PATCH`: only the fields given change. */
  updateWebhook(webhookId: string, changes: PatchWebhook): Promise<Webhook> {
    return this.#json("PATCH", `/webhooks/${seg(webhookId)}`, compact({ ...changes }));
  }
  async deleteWebhook(webhookId: string): Promise<void> {
    await this.request("DELETE", `/webhooks/${seg(webhookId)}`);
  }
  disableWebhook(webhookId: string): Promise<Webhook> {
    return this.#json("POST", `/webhooks/${seg(webhookId)}:disable`);
  }
  enableWebhook(webhookId: string): Promise<Webhook> {
    return this.#json("POST", `/webhooks/${seg(webhookId)}:enable`);
  }
  /** A new `signing_secret`; the old one keeps signing for `grace` (e.g. `"1h"`, default 24 h). */
  rotateWebhookSecret(webhookId: string, options: { grace?: string } = {}): Promise<Webhook> {
    return this.#json("POST", `/webhooks/${seg(webhookId)}:rotateSecret`, compact(options));
  }
  /** Queues again the deliveries whose event is in `[since, until)`; `done: false` means the rest continues in the background. */
  replayWebhook(webhookId: string, range: Replay = {}): Promise<ReplayResult> {
    return this.#json("POST", `/webhooks/${seg(webhookId)}:replay`, compact({ ...range }));
  }

  // -- deliveries ---------------------------------------------------------------

  /** Newest first. */
  listDeliveries(filter: DeliveryFilter & PageRequest = {}): Promise<Page<Delivery>> {
    return this.#page("/deliveries", "deliveries", { ...filter });
  }
  iterDeliveries(filter: DeliveryFilter & { page_size?: number } = {}): AsyncGenerator<Delivery> {
    return this.#iterate("/deliveries", "deliveries", { ...filter });
  }
  /** With `attempt_log`. */
  getDelivery(deliveryId: string): Promise<Delivery> {
    return this.#json("GET", `/deliveries/${seg(deliveryId)}`);
  }
  /** The same event (same event id) again, with a fresh retry window. */
  redeliver(deliveryId: string): Promise<Delivery> {
    return this.#json("POST", `/deliveries/${seg(deliveryId)}:redeliver`);
  }
  /** Gives a delivery up (`skipped`); on an ordered webhook this releases its key's line. One that succeeded: DeliverySucceededError. */
  skipDelivery(deliveryId: string): Promise<Delivery> {
    return this.#json("POST", `/deliveries/${seg(deliveryId)}:skip`);
  }

  // -- operations ---------------------------------------------------------------

  /** A trigger route from config (e.g. `"/videos"`): `body` becomes the operation's input; 202 with the operation. */
  async trigger(path: string, body: unknown, options: { idempotencyKey?: string } = {}): Promise<Operation> {
    const answer = await this.request("POST", path, body, options);
    if (answer.status !== 202) throw new DecodeError(`trigger ${path} answered ${answer.status} instead of 202`);
    return answer.body as Operation;
  }
  /** `POST /operations` (admin). */
  createOperation(operation: CreateOperation, options: { idempotencyKey?: string } = {}): Promise<Operation> {
    return this.#json("POST", "/operations", compact({ ...operation }), options);
  }
  /** The operation and Herald's `Retry-After` (seconds) while it is not done. */
  async getOperationWithHint(operation: string, signal?: AbortSignal): Promise<{ operation: Operation; retryAfter: number | undefined }> {
    const answer = await this.request("GET", `/operations/${seg(operationId(operation))}`, undefined, { signal });
    return { operation: answer.body as Operation, retryAfter: parseRetryAfter(answer.headers.get("retry-after")) };
  }
  async getOperation(operation: string): Promise<Operation> {
    return (await this.getOperationWithHint(operation)).operation;
  }
  /** Newest first. */
  listOperations(filter: { type?: string; done?: boolean; tenant?: string } & PageRequest = {}): Promise<Page<Operation>> {
    return this.#page("/operations", "operations", { ...filter });
  }
  iterOperations(filter: { type?: string; done?: boolean; tenant?: string; page_size?: number } = {}): AsyncGenerator<Operation> {
    return this.#iterate("/operations", "operations", { ...filter });
  }

  /**
   * Polls until the operation is done, sleeping for Herald's `Retry-After` between polls (also
   * on 429/503), or backing off exponentially when there is none; never past `timeoutMs`,
   * then throws {@link WaitTimeoutError}. A {@link TransportError}, or a 502/503/504 without a
   * Herald error code (a proxy's answer), is polled again likewise rather than ending the wait.
   */
  async wait(operation: string, options: WaitOptions = {}): Promise<Operation> {
    const deadline = Date.now() + (options.timeoutMs ?? 300_000);
    let backoff = options.initialBackoffMs ?? 500;
    const maxBackoff = options.maxBackoffMs ?? 30_000;
    let last: Operation | undefined;
    for (;;) {
      let hint: number | undefined;
      try {
        const got = await this.getOperationWithHint(operation, options.signal);
        if (got.operation.done) return got.operation;
        last = got.operation;
        hint = got.retryAfter;
      } catch (e) {
        if (e instanceof TransportError) hint = undefined;
        else if (e instanceof RateLimitedError || e instanceof UnavailableError) hint = e.retryAfter;
        else if (e instanceof ApiError && [502, 503, 504].includes(e.status) && e.code === "UNKNOWN") hint = e.retryAfter;
        else throw e;
      }
      let pauseMs: number;
      if (hint === undefined) {
        pauseMs = backoff;
        backoff = Math.min(backoff * 2, maxBackoff);
      } else {
        pauseMs = hint * 1000;
      }
      pauseMs = Math.max(pauseMs, 50); // Retry-After: 0 must not become a busy loop
      const left = deadline - Date.now();
      if (left <= 0) throw new WaitTimeoutError(operationId(operation), last);
      await sleep(Math.min(pauseMs, left), options.signal);
    }
  }

  /** `POST /operations/{id}:wait`: one server-side long poll of at most `timeoutMs` (Herald caps it at 60 s). */
  waitLongPoll(operation: string, timeoutMs = 30_000): Promise<Operation> {
    return this.#json("POST", `/operations/${seg(operationId(operation))}:wait`, { timeout: duration(timeoutMs) }, {
      timeoutMs: this.timeoutMs + timeoutMs,
    });
  }
  /** Not started: done with `CANCELLED` at once. Running: the worker is told on its next heartbeat. */
  cancel(operation: string): Promise<Operation> {
    return this.#json("POST", `/operations/${seg(operationId(operation))}:cancel`);
  }
  /** Hides the operation from reads; does not cancel the work. */
  async deleteOperation(operation: string): Promise<void> {
    await this.request("DELETE", `/operations/${seg(operationId(operation))}`);
  }

  // -- the worker's side --------------------------------------------------------

  /** `POST /operations:claim` (worker key): a long poll of at most `waitMs`. `leaseMs` (≥ 1 s) or the type's lease. */
  async claim(
    options: { types?: string[]; leaseMs?: number; max?: number; waitMs?: number; signal?: AbortSignal } = {},
  ): Promise<ClaimedOperation[]> {
    const waitMs = options.waitMs ?? 20_000;
    const body = compact({
      types: options.types && options.types.length > 0 ? options.types : undefined,
      lease: options.leaseMs !== undefined ? duration(options.leaseMs) : undefined,
      max: options.max ?? 1,
      wait: duration(waitMs),
    });
    const answer = await this.#json<{ operations?: ClaimedOperation[] }>("POST", "/operations:claim", body, {
      timeoutMs: this.timeoutMs + waitMs,
      signal: options.signal,
    });
    if (!Array.isArray(answer?.operations)) throw new DecodeError("claim: no operations in the answer");
    return answer.operations;
  }
  /** Extends the lease, merges `metadata` (e.g. `progress_percent`), and says whether a cancel was requested. */
  heartbeat(
    operation: string,
    leaseToken: string,
    options: { metadata?: Record<string, unknown>; leaseMs?: number } = {},
  ): Promise<HeartbeatReply> {
    const body = compact({
      lease_token: leaseToken,
      metadata: options.metadata && Object.keys(options.metadata).length > 0 ? options.metadata : undefined,
      lease: options.leaseMs !== undefined ? duration(options.leaseMs) : undefined,
    });
    return this.#json("POST", `/operations/${seg(operationId(operation))}:heartbeat`, body);
  }
  complete(operation: string, leaseToken: string, response: unknown): Promise<Operation> {
    return this.#json("POST", `/operations/${seg(operationId(operation))}:complete`, { lease_token: leaseToken, response: response ?? null });
  }
  /** `retryable: true` hands the operation back to the queue (up to `max_attempts`). */
  fail(operation: string, leaseToken: string, error: OperationError, options: { retryable?: boolean } = {}): Promise<Operation> {
    return this.#json("POST", `/operations/${seg(operationId(operation))}:fail`, {
      lease_token: leaseToken,
      error,
      retryable: options.retryable ?? false,
    });
  }
}

export interface PageRequest {
  page_size?: number;
  page_token?: string;
}
export interface EventFilter {
  type?: string;
  key?: string;
  after?: string;
  tenant?: string;
}
export interface DeliveryFilter {
  webhook?: string;
  status?: DeliveryStatus;
  event_type?: string;
  since?: string;
  until?: string;
  tenant?: string;
}
