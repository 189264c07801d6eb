//! Schema, versioned by `PRAGMA user_version`; applied at start in one transaction.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    role TEXT NOT NULL,
    tenant_id TEXT,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
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
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    lease_token TEXT,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deadline_at INTEGER,
    retention_ms INTEGER NOT NULL,
    purge_at INTEGER,
    deleted INTEGER NOT NULL DEFAULT 0
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
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys(created_at);
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    type TEXT NOT NULL,
    key TEXT,
    sequence INTEGER,
    data TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX events_by_tenant ON events(tenant_id, id);
CREATE INDEX events_by_key ON events(tenant_id, key, id) WHERE key IS NOT NULL;
CREATE TABLE event_keys (
    tenant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    last_sequence INTEGER NOT NULL,
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
    secret_version INTEGER NOT NULL,
    previous_secret TEXT,
    previous_secret_until INTEGER,
    schedule TEXT,
    max_concurrency INTEGER,
    disabled INTEGER NOT NULL DEFAULT 0,
    disabled_reason TEXT,
    description TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX webhooks_by_tenant ON webhooks(tenant_id) WHERE deleted = 0;
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    tenant_id TEXT,
    event_type TEXT NOT NULL,
    event_created_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    window_attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_until INTEGER,
    last_status_code INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_webhook ON deliveries(webhook_id, event_created_at);
CREATE INDEX deliveries_by_tenant ON deliveries(tenant_id, id);
CREATE TABLE attempts (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    status_code INTEGER,
    latency_ms INTEGER NOT NULL,
    error TEXT,
    response_excerpt TEXT
);
CREATE INDEX attempts_by_delivery ON attempts(delivery_id, id);
"#,
    // 2: the dashboard reads attempts by time.
    r#"
CREATE INDEX attempts_by_time ON attempts(at);
"#,
    // 3: retention finds old events by time and their deliveries by event.
    r#"
CREATE INDEX events_by_time ON events(created_at);
CREATE INDEX deliveries_by_event ON deliveries(event_id);
"#,
    // 4: broker routes share the delivery log. A delivery goes to a webhook or to a route
    // (`webhook_id` NULL, `route` set), with the ordering key that lines route deliveries up.
    // SQLite cannot drop NOT NULL in place, so the table is rebuilt, rowids and all.
    r#"
CREATE TABLE deliveries_v2 (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    webhook_id TEXT,
    route TEXT,
    ordering_key TEXT,
    tenant_id TEXT,
    event_type TEXT NOT NULL,
    event_created_at INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    window_attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_until INTEGER,
    last_status_code INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    CHECK ((webhook_id IS NULL) != (route IS NULL))
);
INSERT INTO deliveries_v2 (rowid, id, event_id, webhook_id, tenant_id, event_type, event_created_at, status,
    attempts, window_attempts, next_attempt_at, lease_until, last_status_code, last_error, created_at, updated_at)
SELECT rowid, id, event_id, webhook_id, tenant_id, event_type, event_created_at, status,
    attempts, window_attempts, next_attempt_at, lease_until, last_status_code, last_error, created_at, updated_at
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_v2 RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries(next_attempt_at) WHERE status = 'pending' AND route IS NULL;
CREATE INDEX deliveries_by_webhook ON deliveries(webhook_id, event_created_at) WHERE webhook_id IS NOT NULL;
CREATE INDEX deliveries_by_tenant ON deliveries(tenant_id, id);
CREATE INDEX deliveries_by_route ON deliveries(route, id) WHERE route IS NOT NULL;
CREATE INDEX deliveries_route_due ON deliveries(next_attempt_at) WHERE status = 'pending' AND route IS NOT NULL;
CREATE INDEX deliveries_route_lines ON deliveries(route, ordering_key, id) WHERE status = 'pending' AND route IS NOT NULL;
CREATE INDEX deliveries_by_event ON deliveries(event_id);
"#,
    // 5: worker keys scoped to operation types and tenants (JSON arrays; NULL: no limit).
    r#"
ALTER TABLE api_keys ADD COLUMN scope_types TEXT;
ALTER TABLE api_keys ADD COLUMN scope_tenants TEXT;
"#,
    // 6: ordered webhooks. A webhook with `ordering = 'key'` lines up its deliveries per event
    // key (`ordering_key`), in the event's `sequence`; the index finds a line's head.
    r#"
ALTER TABLE webhooks ADD COLUMN ordering TEXT;
ALTER TABLE deliveries ADD COLUMN sequence INTEGER;
CREATE INDEX deliveries_webhook_lines ON deliveries(webhook_id, ordering_key, sequence)
    WHERE webhook_id IS NOT NULL AND ordering_key IS NOT NULL AND status IN ('pending', 'failed');
"#,
    // 7: the pull feed: each event's commit-ordered position, drawn from a counter that never
    // goes back (the rowid may, once retention has deleted every event), and consumers with
    // their acknowledged positions. Events stored before are placed in rowid order, which is
    // their commit order (one writer).
    r#"
ALTER TABLE events ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
UPDATE events SET position = rowid;
CREATE TABLE feed_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO feed_counter (id, last) VALUES (1, COALESCE((SELECT MAX(position) FROM events), 0));
CREATE INDEX events_feed ON events(tenant_id, position);
CREATE TABLE consumers (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    types TEXT NOT NULL,
    acked_major INTEGER NOT NULL,
    acked_minor INTEGER NOT NULL,
    delivered_major INTEGER NOT NULL,
    delivered_minor INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
"#,
    // Subscription settings: custom headers (a JSON object), a payload filter (its JSON as
    // registered) and a rate limit (deliveries per second); NULL: none.
    r#"
ALTER TABLE webhooks ADD COLUMN headers TEXT;
ALTER TABLE webhooks ADD COLUMN filter TEXT;
ALTER TABLE webhooks ADD COLUMN rate_limit INTEGER;
"#,
    // The portal: sessions (tokens and cookies kept as SHA-256 hashes) and each tenant's
    // portal settings (JSON).
    r#"
CREATE TABLE portal_sessions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    cookie_hash TEXT UNIQUE,
    csrf_token TEXT NOT NULL,
    read_only INTEGER NOT NULL,
    event_types TEXT,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    exchanged_at INTEGER,
    revoked INTEGER NOT NULL
);
CREATE TABLE portal_settings (
    tenant_id TEXT PRIMARY KEY,
    frame_origins TEXT NOT NULL,
    branding TEXT NOT NULL
);
"#,
    // Per webhook, when it last raised `delivery.failed` and the final failures held since
    // (at most one such event per webhook a minute).
    r#"
CREATE TABLE failure_notices (
    webhook_id TEXT PRIMARY KEY,
    raised_at INTEGER NOT NULL,
    held INTEGER NOT NULL
);
"#,
];

/// The schema version this build writes and expects.
pub const EXPECTED_VERSION: u32 = MIGRATIONS.len() as u32;

/// The version recorded in the database.
pub fn applied_version(conn: &Connection) -> rusqlite::Result<u32> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok(v.max(0) as u32)
}

pub fn apply(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_migration_keeps_webhook_deliveries() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch("PRAGMA user_version = 1").unwrap();
        conn.execute(
            "INSERT INTO deliveries (id, event_id, webhook_id, event_type, event_created_at, status, \
             next_attempt_at, created_at, updated_at) VALUES ('dlv_1', 'evt_1', 'wh_1', 'a.b', 5, 'pending', 5, 5, 5)",
            [],
        )
        .unwrap();
        apply(&mut conn).unwrap();
        let row: (String, Option<String>, Option<String>, i64) = conn
            .query_row(
                "SELECT webhook_id, route, ordering_key, next_attempt_at FROM deliveries WHERE id = 'dlv_1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(row, ("wh_1".into(), None, None, 5));
        // A delivery names exactly one destination.
        assert!(conn
            .execute(
                "INSERT INTO deliveries (id, event_id, event_type, event_created_at, status, created_at, updated_at) \
                 VALUES ('dlv_2', 'evt_1', 'a.b', 5, 'pending', 5, 5)",
                [],
            )
            .is_err());
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
    }
}
