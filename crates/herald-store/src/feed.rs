//! The pull feed, once for both backends: the commit-ordered [`FeedPosition`] and its
//! opaque cursor text, the feed's read ([`FeedQuery`], [`FeedPage`]), named consumers
//! with an acknowledged position ([`Consumer`]), and the SQL both backends share.
//!
//! A position is `(major, minor)`, compared in that order. SQLite has one writer, so a
//! counter drawn inside the write is commit-ordered: `(0, counter)`. PostgreSQL records
//! each event's transaction id (`major`) and a sequence value (`minor`), and a reader
//! only returns events whose transaction id is below the oldest one still running, so
//! no event can later appear before a position already handed out (docs/design-notes.md).

use crate::filter::{Arg, Dialect, Where};
use crate::rows::{RowAccess, EVENT_COLUMNS};
use crate::StoreResult;
use herald_core::event::Event;
use herald_core::ids::TenantId;
use herald_core::pattern::EventPattern;
use herald_core::Timestamp;

/// Where a reader stands in a tenant's feed: after every event at or before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FeedPosition {
    major: i64,
    minor: i64,
}

/// A cursor that is not one Herald made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a feed cursor: pass back a `next_cursor` Herald answered, or nothing to start from the oldest event")]
pub struct BadCursor(pub String);

impl FeedPosition {
    /// Before every event.
    pub const START: FeedPosition = FeedPosition { major: 0, minor: 0 };

    pub fn new(major: i64, minor: i64) -> Self {
        Self { major, minor }
    }

    pub fn major(&self) -> i64 {
        self.major
    }

    pub fn minor(&self) -> i64 {
        self.minor
    }

    /// The cursor clients pass back; opaque to them. Empty text is the start.
    pub fn parse(text: &str) -> Result<Self, BadCursor> {
        if text.is_empty() {
            return Ok(Self::START);
        }
        let bad = || BadCursor(text.chars().take(100).collect());
        let (major, minor) = text.split_once('-').ok_or_else(bad)?;
        let part = |p: &str| -> Result<i64, BadCursor> {
            if p.is_empty() || p.len() > 16 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            let v = u64::from_str_radix(p, 16).map_err(|_| bad())?;
            i64::try_from(v).map_err(|_| bad())
        };
        Ok(Self {
            major: part(major)?,
            minor: part(minor)?,
        })
    }

    pub fn cursor(&self) -> String {
        format!("{:x}-{:x}", self.major, self.minor)
    }
}

impl std::fmt::Display for FeedPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.cursor())
    }
}

/// One read of a feed: a tenant's events (or the events of no tenant) after `after`,
/// matching `types` (none: every type), oldest first, at most `limit`.
#[derive(Debug, Clone)]
pub struct FeedQuery {
    pub tenant: Option<TenantId>,
    pub after: FeedPosition,
    pub types: Vec<EventPattern>,
    pub limit: u32,
}

/// What a read found.
#[derive(Debug, Clone, Default)]
pub struct FeedPage {
    /// Events with their positions, in feed order.
    pub events: Vec<(FeedPosition, Event)>,
    /// Nothing was returned, yet matching events after the cursor are committed: they
    /// wait for an older transaction still running (PostgreSQL only), so a long poll
    /// reads again shortly instead of waiting for the next event.
    pub held_back: bool,
    /// When the page is not full: a position every event up to which was looked at (those
    /// that match are in the page), so a reader whose `types` match little still moves on
    /// instead of scanning the same events again on every read.
    pub through: Option<FeedPosition>,
}

impl FeedPage {
    /// Where the next read starts: after the last event returned, or, when the page is not
    /// full, after everything looked at; never behind `after`.
    pub fn next(&self, after: FeedPosition) -> FeedPosition {
        let last = self.events.last().map(|(p, _)| *p);
        [Some(after), last, self.through]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(after)
    }
}

/// Where a new consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerStart {
    /// From the oldest event kept.
    Earliest,
    /// After every event readable now.
    Latest,
}

/// A named reader of one tenant's feed whose acknowledged position Herald keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Consumer {
    pub tenant: Option<TenantId>,
    pub name: String,
    pub types: Vec<EventPattern>,
    /// Everything at or before it is done with; reads start after it.
    pub acked: FeedPosition,
    /// The furthest position a read has handed this consumer: an ack may not pass it.
    pub delivered: FeedPosition,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A new consumer, before the store places its start.
#[derive(Debug, Clone)]
pub struct NewConsumer {
    pub tenant: Option<TenantId>,
    pub name: String,
    pub types: Vec<EventPattern>,
    pub start: ConsumerStart,
    pub created_at: Timestamp,
}

/// What an ack did.
#[derive(Debug, Clone, PartialEq)]
pub enum Acked {
    /// The position moved forward to the cursor.
    Moved(Consumer),
    /// The cursor is at or behind the acknowledged position: nothing changed.
    Unchanged(Consumer),
}

/// `tenant_id` of a consumer row: consumers of no tenant (an admin's) use `''`, so the
/// primary key `(tenant_id, name)` is unique for them too.
pub(crate) fn tenant_key(tenant: Option<TenantId>) -> String {
    tenant.map(|t| t.to_string()).unwrap_or_default()
}

pub(crate) const CONSUMER_COLUMNS: &str = "tenant_id, name, types, acked_major, acked_minor, \
     delivered_major, delivered_minor, created_at, updated_at";

pub(crate) fn consumer(row: &(impl RowAccess + ?Sized)) -> StoreResult<Consumer> {
    let tenant = row.text(0)?;
    let tenant = if tenant.is_empty() {
        None
    } else {
        Some(crate::rows::parse_id(&tenant, TenantId::parse)?)
    };
    let types: Vec<String> = serde_json::from_str(&row.text(2)?)?;
    let types = types
        .iter()
        .map(|t| EventPattern::parse(t).map_err(|e| crate::rows::bad("consumer", e)))
        .collect::<StoreResult<_>>()?;
    Ok(Consumer {
        tenant,
        name: row.text(1)?,
        types,
        acked: FeedPosition::new(row.int(3)?, row.int(4)?),
        delivered: FeedPosition::new(row.int(5)?, row.int(6)?),
        created_at: Timestamp(row.int(7)?),
        updated_at: Timestamp(row.int(8)?),
    })
}

pub(crate) fn types_json(types: &[EventPattern]) -> String {
    crate::rows::patterns_json(types)
}

/// How a backend names the feed's position columns.
pub(crate) struct FeedColumns {
    pub major: &'static str,
    pub minor: &'static str,
    /// `ORDER BY` for feed order (SQLite reads a bare `0` there as a column number).
    pub order: &'static str,
}

/// The feed's page: `EVENT_COLUMNS` then the position (`major`, `minor`) as columns 7
/// and 8, for [`feed_row`]. `visible` is the backend's extra condition (PostgreSQL's
/// "no older transaction still running"), if any.
pub(crate) fn page_sql(
    d: Dialect,
    c: &FeedColumns,
    q: &FeedQuery,
    visible: Option<&str>,
) -> (String, Vec<Arg>) {
    let w = where_after(d, c, q);
    let mut sql = w.sql();
    if let Some(v) = visible {
        sql.push_str(" AND ");
        sql.push_str(v);
    }
    (
        format!(
            "SELECT {EVENT_COLUMNS}, {major}, {minor} FROM events {sql} ORDER BY {order} LIMIT {limit}",
            major = c.major,
            minor = c.minor,
            order = c.order,
            limit = q.limit.clamp(1, 1000)
        ),
        w.args,
    )
}

/// Whether any matching event is stored after the cursor, whatever its visibility.
pub(crate) fn pending_sql(d: Dialect, c: &FeedColumns, q: &FeedQuery) -> (String, Vec<Arg>) {
    let w = where_after(d, c, q);
    (
        format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM events {} LIMIT 1) AS p",
            w.sql()
        ),
        w.args,
    )
}

fn where_after(d: Dialect, c: &FeedColumns, q: &FeedQuery) -> Where {
    let mut w = Where::new(d);
    // Equality (not a null-safe comparison), so the (tenant_id, position) index serves.
    match q.tenant {
        Some(t) => w.add("tenant_id = ?", Arg::text(t)),
        None => w.fixed("tenant_id IS NULL"),
    }
    // (major, minor) > (a, b), written out so both backends read it the same way (and the
    // index on (tenant_id, major, minor) serves its first half).
    let (a, b) = (Arg::Int(q.after.major), Arg::Int(q.after.minor));
    w.add_all(
        &format!(
            "{major} >= ? AND ({major} > ? OR {minor} > ?)",
            major = c.major,
            minor = c.minor
        ),
        vec![a.clone(), a, b],
    );
    if !q.types.is_empty() && !q.types.iter().any(|p| p.as_str() == "*") {
        let mut any = Vec::new();
        let mut args = Vec::new();
        for p in &q.types {
            match p.as_str().strip_suffix(".*") {
                Some(prefix) => {
                    let prefix = format!("{prefix}.");
                    let n = prefix.len();
                    any.push(format!("(substr(type, 1, {n}) = ? AND length(type) > {n})"));
                    args.push(Arg::Text(prefix));
                }
                None => {
                    any.push("type = ?".to_owned());
                    args.push(Arg::text(p.as_str()));
                }
            }
        }
        w.add_all(&format!("({})", any.join(" OR ")), args);
    }
    w
}

/// A row of [`page_sql`]: the event and its position.
pub(crate) fn feed_row(row: &(impl RowAccess + ?Sized)) -> StoreResult<(FeedPosition, Event)> {
    Ok((
        FeedPosition::new(row.int(7)?, row.int(8)?),
        crate::rows::event(row)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let p = FeedPosition::new(0x1f2e, 42);
        assert_eq!(FeedPosition::parse(&p.cursor()), Ok(p));
        assert_eq!(FeedPosition::parse(""), Ok(FeedPosition::START));
        for bad in [
            "x",
            "1",
            "1-",
            "-1",
            "1-2-3",
            "+1-2",
            "1-ffffffffffffffff",
            "1 -2",
            "g-1",
        ] {
            assert!(FeedPosition::parse(bad).is_err(), "{bad}");
        }
        assert!(FeedPosition::new(1, 0) > FeedPosition::new(0, 99));
        assert!(FeedPosition::new(1, 5) > FeedPosition::new(1, 4));
    }

    #[test]
    fn the_page_query_numbers_its_arguments() {
        let q = FeedQuery {
            tenant: None,
            after: FeedPosition::new(3, 4),
            types: vec![
                EventPattern::parse("a.*").unwrap(),
                EventPattern::parse("b.c").unwrap(),
            ],
            limit: 10,
        };
        let c = FeedColumns {
            major: "x",
            minor: "y",
            order: "x, y",
        };
        let (sql, args) = page_sql(crate::filter::POSTGRES, &c, &q, Some("x < 9"));
        assert!(
            sql.contains("tenant_id IS NULL AND x >= $1 AND (x > $2 OR y > $3) AND ((substr(type, 1, 2) = $4 AND length(type) > 2) OR type = $5) AND x < 9"),
            "{sql}"
        );
        assert_eq!(args.len(), 5);
    }
}
