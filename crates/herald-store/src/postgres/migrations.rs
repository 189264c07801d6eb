//! Schema, versioned in `herald_migrations`; applied at start under an advisory lock,
//! so several nodes starting at once apply each migration exactly once.

use crate::StoreResult;
use deadpool_postgres::Client;

/// Key of the advisory lock that serialises migrations ("herald" in ASCII).
const MIGRATION_LOCK: i64 = 0x6865_7261_6c64;

/// Same tables as the SQLite schema: timestamps are milliseconds since the epoch,
/// JSON is kept as text so both backends read and write it the same way.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    role TEXT NOT NULL,
    tenant_id TEXT,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE TABLE operations (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    metadata TEXT NOT NULL,
    input TEXT NOT NULL,
    response TEXT,
    error_code TEXT,
    error_message TEXT,
    attempt BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    lease_token TEXT,
    lease_expires_at BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deadline_at BIGINT,
    retention_ms BIGINT NOT NULL,
    purge_at BIGINT,
    deleted BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX operations_queue ON operations(type, created_at) WHERE state = 'queued';
CREATE INDEX operations_leases ON operations(lease_expires_at) WHERE state = 'running';
CREATE INDEX operations_deadlines ON operations(deadline_at) WHERE deadline_at IS NOT NULL AND state IN ('queued', 'running');
CREATE INDEX operations_purge ON operations(purge_at) WHERE purge_at IS NOT NULL;
CREATE INDEX operations_by_tenant ON operations(tenant_id, id);
CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys(created_at);
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    type TEXT NOT NULL,
    key TEXT,
    sequence BIGINT,
    data TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_by_tenant ON events(tenant_id, id);
CREATE INDEX events_by_key ON events(tenant_id, key, id) WHERE key IS NOT NULL;
CREATE TABLE event_keys (
    tenant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    last_sequence BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE TABLE event_types (
    name TEXT PRIMARY KEY,
    schema TEXT NOT NULL
);
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    format TEXT NOT NULL,
    secret TEXT NOT NULL,
    secret_version BIGINT NOT NULL,
    previous_secret TEXT,
    previous_secret_until BIGINT,
    schedule TEXT,
    max_concurrency BIGINT,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    disabled_reason TEXT,
    description TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX webhooks_by_tenant ON webhooks(tenant_id) WHERE NOT deleted;
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    tenant_id TEXT,
    event_type TEXT NOT NULL,
    event_created_at BIGINT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    window_attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_until BIGINT,
    last_status_code BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_webhook ON deliveries(webhook_id, event_created_at);
CREATE INDEX deliveries_by_tenant ON deliveries(tenant_id, id);
CREATE TABLE attempts (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    status_code BIGINT,
    latency_ms BIGINT NOT NULL,
    error TEXT,
    response_excerpt TEXT
);
CREATE INDEX attempts_by_delivery ON attempts(delivery_id, id);
"#,
    // The dashboard's charts read attempts by time.
    "CREATE INDEX IF NOT EXISTS attempts_by_time ON attempts(at);",
    // Retention purges settled events oldest first, with their deliveries.
    "CREATE INDEX IF NOT EXISTS events_by_time ON events(created_at); \
     CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries(event_id);",
    // Broker routes share the delivery log: a delivery goes to a webhook or to a route, with
    // the ordering key that lines route deliveries up, in `line_seq` order.
    "ALTER TABLE deliveries ALTER COLUMN webhook_id DROP NOT NULL; \
     ALTER TABLE deliveries ADD COLUMN route TEXT; \
     ALTER TABLE deliveries ADD COLUMN ordering_key TEXT; \
     ALTER TABLE deliveries ADD COLUMN line_seq BIGSERIAL; \
     ALTER TABLE deliveries ADD CONSTRAINT deliveries_one_destination CHECK ((webhook_id IS NULL) <> (route IS NULL)); \
     CREATE INDEX deliveries_route_due ON deliveries(next_attempt_at) WHERE status = 'pending' AND route IS NOT NULL; \
     CREATE INDEX deliveries_route_lines ON deliveries(route, ordering_key, line_seq) WHERE status = 'pending' AND route IS NOT NULL; \
     CREATE INDEX deliveries_by_route ON deliveries(route, id) WHERE route IS NOT NULL;",
    // Room on each page for a row's next version: a claim changes only `lease_until`, which
    // no index holds, so with free space on the page it is a HOT update that writes no index
    // entries. Applies to pages filled from now on.
    "ALTER TABLE deliveries SET (fillfactor = 80);",
    // Worker keys scoped to operation types and tenants (JSON arrays as text; NULL: no limit).
    "ALTER TABLE api_keys ADD COLUMN scope_types TEXT; \
     ALTER TABLE api_keys ADD COLUMN scope_tenants TEXT;",
    // Ordered webhooks: a webhook with `ordering = 'key'` lines up its deliveries per event
    // key (`ordering_key`), in the event's `sequence`; the index finds a line's head.
    "ALTER TABLE webhooks ADD COLUMN ordering TEXT; \
     ALTER TABLE deliveries ADD COLUMN sequence BIGINT; \
     CREATE INDEX deliveries_webhook_lines ON deliveries(webhook_id, ordering_key, sequence) \
       WHERE webhook_id IS NOT NULL AND ordering_key IS NOT NULL AND status IN ('pending', 'failed');",
    // The pull feed: each event's position is (the id of the transaction that stored it,
    // a sequence value), and readers only return events of transactions older than every
    // one still running, so a position handed out is never preceded by a later commit
    // (see feed.rs). Events stored before sit at transaction 0, ahead of all new ones.
    // Consumers keep their acknowledged positions.
    "ALTER TABLE events ADD COLUMN feed_xid BIGINT NOT NULL DEFAULT 0; \
     ALTER TABLE events ALTER COLUMN feed_xid SET DEFAULT (pg_current_xact_id()::text::bigint); \
     ALTER TABLE events ADD COLUMN feed_pos BIGSERIAL; \
     CREATE INDEX events_feed ON events(tenant_id, feed_xid, feed_pos); \
     CREATE TABLE consumers ( \
         tenant_id TEXT NOT NULL, \
         name TEXT NOT NULL, \
         types TEXT NOT NULL, \
         acked_major BIGINT NOT NULL, \
         acked_minor BIGINT NOT NULL, \
         delivered_major BIGINT NOT NULL, \
         delivered_minor BIGINT NOT NULL, \
         created_at BIGINT NOT NULL, \
         updated_at BIGINT NOT NULL, \
         PRIMARY KEY (tenant_id, name));",
    // Subscription settings: custom headers (a JSON object), a payload filter (its JSON as
    // registered) and a rate limit (deliveries per second); NULL: none.
    "ALTER TABLE webhooks ADD COLUMN headers TEXT; \
     ALTER TABLE webhooks ADD COLUMN filter TEXT; \
     ALTER TABLE webhooks ADD COLUMN rate_limit BIGINT;",
    // The portal: sessions (tokens and cookies kept as SHA-256 hashes) and each tenant's
    // portal settings (JSON).
    "CREATE TABLE portal_sessions ( \
         id TEXT PRIMARY KEY, \
         tenant_id TEXT NOT NULL, \
         token_hash TEXT NOT NULL UNIQUE, \
         cookie_hash TEXT UNIQUE, \
         csrf_token TEXT NOT NULL, \
         read_only BOOLEAN NOT NULL, \
         event_types TEXT, \
         expires_at BIGINT NOT NULL, \
         created_at BIGINT NOT NULL, \
         exchanged_at BIGINT, \
         revoked BOOLEAN NOT NULL); \
     CREATE TABLE portal_settings ( \
         tenant_id TEXT PRIMARY KEY, \
         frame_origins TEXT NOT NULL, \
         branding TEXT NOT NULL);",
    // Per webhook, when it last raised `delivery.failed` and the final failures held since
    // (at most one such event per webhook a minute).
    "CREATE TABLE failure_notices ( \
         webhook_id TEXT PRIMARY KEY, \
         raised_at BIGINT NOT NULL, \
         held BIGINT NOT NULL);",
];

/// The schema version this build expects (readiness compares it with what is applied).
pub const EXPECTED_VERSION: u32 = MIGRATIONS.len() as u32;

/// The version recorded in the database.
pub async fn applied_version(client: &Client) -> StoreResult<u32> {
    let v: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM herald_migrations",
            &[],
        )
        .await?
        .get(0);
    Ok(v.max(0) as u32)
}

pub async fn apply(client: &mut Client) -> StoreResult<()> {
    let tx = client.transaction().await?;
    // Held until commit: a second node starting now waits here, then finds nothing to do.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // Quiet the "already exists, skipping" notice every start after the first.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS herald_migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM herald_migrations",
            &[],
        )
        .await?
        .get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO herald_migrations (version) VALUES ($1)",
            &[&(i as i64 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
