// Wire types generated from Herald's /openapi.json by scripts/gen-types.mjs. Do not edit.
// test/openapi.test.ts regenerates this file from a running Herald and fails on any difference.

export interface Attempt {
  id?: string;
  at?: string;
  status_code?: number | null;
  latency_ms?: number | null;
  error?: string | null;
  response_excerpt?: string | null;
}

export interface ClaimRequest {
  types?: string[];
  lease?: string;
  max?: number;
  wait?: string;
}

export interface ClaimedOperation {
  name: string;
  metadata: Record<string, unknown>;
  input: unknown;
  lease_token: string;
  lease_expires_at?: string;
  attempt: number;
}

export interface Complete {
  lease_token: string;
  response?: unknown;
}

export interface Consumer {
  name: string;
  tenant?: string;
  types: string[];
  cursor: string;
  created_at: string;
  updated_at: string;
}

export interface CreateConsumer {
  name: string;
  types?: string[];
  start?: "earliest" | "latest";
  tenant?: string;
}

export interface CreateEvent {
  id?: string;
  type: string;
  tenant?: string;
  key?: string;
  data: unknown;
}

export interface CreateKey {
  role: "admin" | "worker";
  types?: string[];
  tenants?: string[];
}

export interface CreateOperation {
  type: string;
  tenant?: string;
  metadata?: Record<string, unknown>;
  input?: unknown;
}

export interface CreateTenantKey {
  role: "tenant";
}

export interface CreateWebhook {
  url: string;
  events: string[];
  signing_secret_version?: number;
  format?: "herald" | "standard-webhooks" | "standard-webhooks-ed25519";
  tenant?: string;
  schedule?: string[];
  max_concurrency?: number;
  ordering?: "none" | "key";
  description?: string;
  headers?: Record<string, unknown>;
  filter?: Record<string, unknown>;
  rate_limit?: number;
}

export interface Delivery {
  id: string;
  event_id: string;
  event_type: string;
  webhook_id: string;
  tenant?: string | null;
  status: "pending" | "succeeded" | "failed" | "skipped";
  key?: string | null;
  sequence?: number | null;
  held_by?: string | null;
  attempts: number;
  next_attempt_at?: string | null;
  last_status_code?: number | null;
  last_error?: string | null;
  attempt_log?: Attempt[];
  created_at?: string;
  updated_at?: string;
}

export type Document = Record<string, unknown>;

export interface Event {
  id: string;
  type: string;
  created_at: string;
  key?: string;
  sequence?: number;
  tenant?: string;
  data: unknown;
}

export interface EventAccepted {
  id: string;
  sequence?: number | null;
}

export interface EventType {
  name: string;
  schema: Record<string, unknown>;
}

export interface Fail {
  lease_token: string;
  error: OperationError;
  retryable?: boolean;
}

export interface FeedPage {
  events: Event[];
  next_cursor: string;
}

export interface Heartbeat {
  lease_token: string;
  metadata?: Record<string, unknown>;
  lease?: string;
}

export interface HeartbeatReply {
  cancel_requested: boolean;
  lease_expires_at: string;
}

export interface Key {
  id: string;
  key: string;
  role: string;
  tenant?: string;
  types?: string[];
  tenants?: string[];
}

/** AIP-151. `done=false`: neither `response` nor `error`. `done=true`: exactly one of them. */
export interface Operation {
  name: string;
  metadata: Record<string, unknown>;
  done: boolean;
  response?: unknown;
  error?: OperationError;
}

export interface OperationError {
  code: string;
  message: string;
}

export interface PatchWebhook {
  url?: string;
  events?: string[];
  format?: "herald" | "standard-webhooks" | "standard-webhooks-ed25519";
  disabled?: boolean;
  description?: string;
  schedule?: string[];
  max_concurrency?: number;
  ordering?: "none" | "key";
  headers?: Record<string, unknown>;
  filter?: Record<string, unknown> | null;
  rate_limit?: number | null;
}

export interface PortalSession {
  id: string;
  tenant: string;
  read_only: boolean;
  event_types?: string[] | null;
  expires_at: string;
  created_at?: string;
  opened_at?: string | null;
  revoked?: boolean;
  token?: string;
  url?: string;
}

export interface PortalSettings {
  frame_origins?: string[];
  branding?: Record<string, unknown>;
}

/** RFC 9457 problem details with a stable `code`. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
}

export interface Replay {
  since?: string;
  until?: string;
  status?: "failed" | "succeeded" | "pending" | "skipped" | "all";
}

export interface Status {
  status?: string;
}

export interface Tenant {
  id: string;
  name: string;
  created_at?: string;
}

export interface Wait {
  timeout?: string;
}

export interface Webhook {
  id: string;
  tenant?: string | null;
  url: string;
  events: string[];
  format: "herald" | "standard-webhooks" | "standard-webhooks-ed25519";
  signing_secret_version: number;
  signing_secret?: string;
  public_key?: string | null;
  previous_public_key?: string | null;
  schedule?: string[] | null;
  max_concurrency?: number | null;
  ordering?: "none" | "key";
  headers?: Record<string, unknown>;
  filter?: Record<string, unknown> | null;
  rate_limit?: number | null;
  disabled: boolean;
  disabled_reason?: string | null;
  description?: string | null;
  created_at?: string;
  updated_at?: string;
}
