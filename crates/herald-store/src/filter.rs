//! List filters as SQL, once for both backends: a [`Where`] builder parameterised by the
//! backend's [`Dialect`] (placeholder style, how a flag and a null-safe comparison read),
//! and the list queries built from the API's filters. Arguments are backend-neutral
//! [`Arg`]s; each backend turns them into its own parameter type.

use crate::model::*;
use crate::rows::{DELIVERY_COLUMNS, EVENT_COLUMNS, OPERATION_COLUMNS, WEBHOOK_COLUMNS};

/// How one backend spells what the filters need.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    /// The placeholder's sign: `?` for `?1`, `$` for `$1`.
    pub mark: char,
    /// A row that is not deleted.
    pub not_deleted: &'static str,
    /// A null-safe equality (`IS` in SQLite, `IS NOT DISTINCT FROM` in PostgreSQL).
    pub same_as: &'static str,
}

pub const SQLITE: Dialect = Dialect {
    mark: '?',
    not_deleted: "deleted = 0",
    same_as: "IS",
};

pub const POSTGRES: Dialect = Dialect {
    mark: '$',
    not_deleted: "NOT deleted",
    same_as: "IS NOT DISTINCT FROM",
};

/// One argument of a built query.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Text(String),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
    /// A text column's `NULL`.
    Null,
}

impl Arg {
    pub fn text(s: impl ToString) -> Self {
        Arg::Text(s.to_string())
    }
    pub fn opt_text<T: ToString>(s: Option<T>) -> Self {
        s.map(Arg::text).unwrap_or(Arg::Null)
    }
}

/// `WHERE` clauses and their arguments, built up from optional filters.
#[derive(Debug, Clone)]
pub struct Where {
    dialect: Dialect,
    clauses: Vec<String>,
    pub args: Vec<Arg>,
}

impl Where {
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            clauses: Vec::new(),
            args: Vec::new(),
        }
    }
    /// A clause with one `?`, numbered as the next argument.
    pub fn add(&mut self, clause: &str, arg: Arg) {
        self.args.push(arg);
        let mark = format!("{}{}", self.dialect.mark, self.args.len());
        self.clauses.push(clause.replace('?', &mark));
    }
    /// A clause with several `?`, numbered in order as the next arguments.
    pub fn add_all(&mut self, clause: &str, args: Vec<Arg>) {
        let mut out = String::with_capacity(clause.len() + 8);
        let mut args = args.into_iter();
        for ch in clause.chars() {
            if ch == '?' {
                self.args.push(args.next().expect("an argument per `?`"));
                out.push_str(&format!("{}{}", self.dialect.mark, self.args.len()));
            } else {
                out.push(ch);
            }
        }
        assert!(args.next().is_none(), "a `?` per argument");
        self.clauses.push(out);
    }
    pub fn fixed(&mut self, clause: &str) {
        self.clauses.push(clause.to_owned());
    }
    pub fn not_deleted(&mut self) {
        self.fixed(self.dialect.not_deleted);
    }
    pub fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// A list read: its statement and arguments.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub sql: String,
    pub args: Vec<Arg>,
}

fn list(columns: &str, table: &str, w: Where, order: &str, limit: u32) -> ListQuery {
    ListQuery {
        sql: format!(
            "SELECT {columns} FROM {table} {} ORDER BY {order} LIMIT {}",
            w.sql(),
            list_limit(limit)
        ),
        args: w.args,
    }
}

/// Operations, newest first.
pub fn operations(d: Dialect, f: &OperationFilter) -> ListQuery {
    let mut w = Where::new(d);
    w.not_deleted();
    if let Some(t) = f.tenant {
        w.add("tenant_id = ?", Arg::text(t));
    }
    if let Some(t) = &f.op_type {
        w.add("type = ?", Arg::text(t));
    }
    match f.done {
        Some(true) => w.fixed("state IN ('succeeded', 'failed', 'cancelled')"),
        Some(false) => w.fixed("state IN ('queued', 'running')"),
        None => {}
    }
    if let Some(b) = f.before {
        w.add("id < ?", Arg::text(b));
    }
    list(OPERATION_COLUMNS, "operations", w, "id DESC", f.limit)
}

/// Events, oldest first.
pub fn events(d: Dialect, f: &EventFilter) -> ListQuery {
    let mut w = Where::new(d);
    if let Some(t) = f.tenant {
        w.add("tenant_id = ?", Arg::text(t));
    }
    if let Some(t) = &f.event_type {
        w.add("type = ?", Arg::text(t));
    }
    if let Some(k) = &f.key {
        w.add("key = ?", Arg::text(k));
    }
    if let Some(a) = f.after {
        w.add("id > ?", Arg::text(a));
    }
    list(EVENT_COLUMNS, "events", w, "id ASC", f.limit)
}

/// Webhooks not deleted, oldest first.
pub fn webhooks(d: Dialect, f: &WebhookFilter) -> ListQuery {
    let mut w = Where::new(d);
    w.not_deleted();
    if !f.all_tenants {
        w.add(
            &format!("tenant_id {} ?", d.same_as),
            Arg::opt_text(f.tenant),
        );
    }
    if let Some(a) = f.after {
        w.add("id > ?", Arg::text(a));
    }
    list(WEBHOOK_COLUMNS, "webhooks", w, "id ASC", f.limit)
}

/// Deliveries, newest first.
pub fn deliveries(d: Dialect, f: &DeliveryFilter) -> ListQuery {
    let mut w = Where::new(d);
    if let Some(t) = f.tenant {
        w.add("tenant_id = ?", Arg::text(t));
    }
    if let Some(wh) = f.webhook {
        w.add("webhook_id = ?", Arg::text(wh));
    }
    if let Some(r) = &f.route {
        w.add("route = ?", Arg::text(r));
    }
    if f.webhooks_only {
        w.fixed("webhook_id IS NOT NULL");
    }
    if let Some(s) = f.status {
        w.add("status = ?", Arg::text(s.as_str()));
    }
    if let Some(t) = &f.event_type {
        w.add("event_type = ?", Arg::text(t));
    }
    if let Some(ids) = &f.webhooks_in {
        if ids.is_empty() {
            w.fixed("1 = 0");
        } else {
            let marks = vec!["?"; ids.len()].join(", ");
            w.add_all(
                &format!("webhook_id IN ({marks})"),
                ids.iter().map(Arg::text).collect(),
            );
        }
    }
    if let Some(ps) = &f.event_types_in {
        types_clause(&mut w, ps, false);
    }
    if let Some(ps) = &f.event_types_out {
        types_clause(&mut w, ps, true);
    }
    if let Some(t) = f.since {
        w.add("created_at >= ?", Arg::Int(t.0));
    }
    if let Some(t) = f.until {
        w.add("created_at < ?", Arg::Int(t.0));
    }
    if let Some(b) = f.before {
        w.add("id < ?", Arg::text(b));
    }
    list(DELIVERY_COLUMNS, "deliveries", w, "id DESC", f.limit)
}

/// `event_type` matches one of `patterns` (or, `negated`, none of them): `a.b` equal,
/// `a.*` by its prefix `a.` (compared with `substr`, not `LIKE`, whose `_` is a wildcard
/// and event types may hold underscores), `*` everything.
fn types_clause(w: &mut Where, patterns: &[herald_core::pattern::EventPattern], negated: bool) {
    let mut parts = Vec::with_capacity(patterns.len());
    let mut args = Vec::with_capacity(patterns.len());
    for p in patterns {
        match p.as_str() {
            "*" => parts.push("1 = 1".to_owned()),
            s => match s.strip_suffix('*') {
                Some(prefix) => {
                    parts.push(format!("substr(event_type, 1, {}) = ?", prefix.len()));
                    args.push(Arg::text(prefix));
                }
                None => {
                    parts.push("event_type = ?".to_owned());
                    args.push(Arg::text(s));
                }
            },
        }
    }
    let any = if parts.is_empty() {
        "1 = 0".to_owned()
    } else {
        format!("({})", parts.join(" OR "))
    };
    let clause = if negated { format!("NOT {any}") } else { any };
    w.add_all(&clause, args);
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::ids::TenantId;

    #[test]
    fn placeholders_follow_the_dialect() {
        let tenant = TenantId::generate();
        let f = WebhookFilter {
            tenant: Some(tenant),
            limit: 10,
            ..Default::default()
        };
        let q = webhooks(SQLITE, &f);
        assert!(
            q.sql.contains("WHERE deleted = 0 AND tenant_id IS ?1"),
            "{}",
            q.sql
        );
        let q = webhooks(POSTGRES, &f);
        assert!(
            q.sql
                .contains("WHERE NOT deleted AND tenant_id IS NOT DISTINCT FROM $1"),
            "{}",
            q.sql
        );
        assert_eq!(q.args, vec![Arg::text(tenant)]);
        assert!(q.sql.ends_with("ORDER BY id ASC LIMIT 10"));
    }
}
