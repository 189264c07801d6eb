//! Ordered webhooks' lines: the deliveries of one webhook with `ordering: key` and one event
//! key, in the events' `sequence` order. Only a line's head is ever sent; the rest wait.
//!
//! A line's **head** is its pending or failed delivery with the lowest `sequence`. A failed
//! (dead) head holds its line until it is redelivered (and succeeds) or skipped; a succeeded
//! or skipped delivery holds nothing. Two mechanisms, both backends:
//!
//! - **Correctness:** the claim takes a pending ordered delivery only when it is its line's
//!   head ([`WEBHOOK_HEAD`]), so a key never has two deliveries in flight, whatever made the
//!   others due.
//! - **Cost:** the deliveries behind a head are *held*: pending with no due time, so no claim
//!   looks at them. Every write that ends a head makes the next one due: a success or a skip
//!   ([`release_next_sql`]), retention purging a dead head's event ([`release_line_sql`]);
//!   whatever makes many of a line's deliveries due or held at once (an enable, a replay, a
//!   redelivery) settles the webhook's lines ([`settle_lines_sql`]); a retry of a delivery no
//!   longer at the head is held ([`hold_if_behind_sql`]). On PostgreSQL the key's
//!   `event_keys` row orders a result against the next event of its key committing on
//!   another node. A sweep at start and every few minutes
//!   ([`crate::DeliveryStore::release_held_heads`]) is the safety net.
//!
//! The SQL below is written for both backends: booleans are tested as `w.disabled`, which
//! SQLite reads as its 0/1 integer.

/// A pending ordered webhook delivery (the row `deliveries`) is its line's head: no delivery
/// of its webhook and key with a lower sequence is pending or failed. True for every
/// unordered delivery.
pub const WEBHOOK_HEAD: &str = "(deliveries.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries AS earlier \
     WHERE earlier.webhook_id = deliveries.webhook_id AND earlier.ordering_key = deliveries.ordering_key \
     AND earlier.webhook_id IS NOT NULL AND earlier.ordering_key IS NOT NULL \
     AND earlier.status IN ('pending', 'failed') AND earlier.sequence < deliveries.sequence))";

/// For the claim (parameter: now): no other delivery of the line of the row `deliveries` is
/// in flight (pending and leased). With [`WEBHOOK_HEAD`] this keeps a key to one send at a
/// time even when a redelivery or a replay put an earlier delivery back in line while a
/// later one was being sent. A skipped delivery holds nothing, in flight or not.
pub fn line_idle_sql(now: &str) -> String {
    format!(
        "(deliveries.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries AS busy \
         WHERE busy.webhook_id = deliveries.webhook_id AND busy.ordering_key = deliveries.ordering_key \
         AND busy.webhook_id IS NOT NULL AND busy.ordering_key IS NOT NULL \
         AND busy.status IN ('pending', 'failed') AND busy.status = 'pending' \
         AND busy.lease_until > {now} AND busy.id <> deliveries.id))"
    )
}

/// For the dispatcher's sleep: when the row `deliveries` (a pending delivery with a due time)
/// can be claimed at the earliest: not before any lease on its line ends. 0 for an unordered one.
pub const LINE_LEASE: &str = "COALESCE((SELECT MAX(busy.lease_until) FROM deliveries AS busy \
     WHERE busy.webhook_id = deliveries.webhook_id AND busy.ordering_key = deliveries.ordering_key \
     AND busy.webhook_id IS NOT NULL AND busy.ordering_key IS NOT NULL \
     AND busy.status IN ('pending', 'failed') AND busy.status = 'pending' AND busy.id <> deliveries.id), 0)";

/// After a result that leaves a delivery (parameter) pending with a due time: if it is an
/// ordered delivery that is not its line's head (an earlier one was put back meanwhile),
/// it is held, so claims and the dispatcher's sleep do not keep finding it.
pub fn hold_if_behind_sql(delivery: &str) -> String {
    format!(
        "UPDATE deliveries SET next_attempt_at = NULL WHERE id = {delivery} AND {IN_LINE} \
         AND next_attempt_at IS NOT NULL AND NOT {WEBHOOK_HEAD}"
    )
}

/// A line (parameters: webhook, key) whose head may have gone (its event purged): the head
/// it has now, if held and its webhook is live, becomes due.
pub fn release_line_sql(webhook: &str, key: &str, now: &str) -> String {
    format!(
        "UPDATE deliveries SET next_attempt_at = {now} WHERE id = (SELECT h.id FROM deliveries h \
           WHERE h.webhook_id = {webhook} AND h.ordering_key = {key} \
           AND h.webhook_id IS NOT NULL AND h.ordering_key IS NOT NULL AND h.status IN ('pending', 'failed') \
           ORDER BY h.sequence LIMIT 1) \
         AND status = 'pending' AND next_attempt_at IS NULL AND {WEBHOOK_LIVE}"
    )
}

/// A delivery's place in line (parameters: the delivery, whether its webhook is ordered now,
/// as 1 or 0) set again from its event, as a redelivery or a replay puts it back: keyed and
/// numbered on an ordered webhook, unordered otherwise (whatever it was when made).
pub fn reline_sql(delivery: &str, ordered: &str) -> String {
    format!(
        "UPDATE deliveries SET \
           ordering_key = CASE WHEN {ordered} = 1 THEN (SELECT e.key FROM events e WHERE e.id = deliveries.event_id) END, \
           sequence = CASE WHEN {ordered} = 1 THEN (SELECT e.sequence FROM events e WHERE e.id = deliveries.event_id) END \
         WHERE id = {delivery} AND webhook_id IS NOT NULL"
    )
}

/// The webhook of the row `deliveries` may be sent to (neither disabled nor deleted).
pub const WEBHOOK_LIVE: &str =
    "EXISTS (SELECT 1 FROM webhooks w WHERE w.id = deliveries.webhook_id \
     AND NOT w.disabled AND NOT w.deleted)";

/// The rows of ordered lines that are pending (the index `deliveries_webhook_lines` holds them).
pub const IN_LINE: &str =
    "deliveries.webhook_id IS NOT NULL AND deliveries.ordering_key IS NOT NULL \
     AND deliveries.status IN ('pending', 'failed') AND deliveries.status = 'pending'";

/// The sweep (first parameter: now): every held head of a live webhook becomes due.
pub fn release_held_heads_sql(now: &str) -> String {
    format!(
        "UPDATE deliveries SET next_attempt_at = {now} WHERE {IN_LINE} \
         AND next_attempt_at IS NULL AND {WEBHOOK_HEAD} AND {WEBHOOK_LIVE}"
    )
}

/// One webhook's lines settled: deliveries behind a head are held (the first statement,
/// parameter: the webhook), and held heads are due if the webhook is live (the second,
/// parameters: the webhook, now). Run after whatever made many of them due or held at once
/// (an enable, a replay, a redelivery).
pub fn settle_lines_sql(webhook: &str, now: &str) -> [String; 2] {
    [
        format!(
            "UPDATE deliveries SET next_attempt_at = NULL WHERE deliveries.webhook_id = {webhook} AND {IN_LINE} \
             AND next_attempt_at IS NOT NULL AND NOT {WEBHOOK_HEAD}"
        ),
        format!(
            "UPDATE deliveries SET next_attempt_at = {now} WHERE deliveries.webhook_id = {webhook} AND {IN_LINE} \
             AND next_attempt_at IS NULL AND {WEBHOOK_HEAD} AND {WEBHOOK_LIVE}"
        ),
    ]
}

/// After a delivery (first parameter) succeeded or was skipped: its line's next delivery, if
/// held and its webhook is live, becomes due (second parameter: now).
pub fn release_next_sql(delivery: &str, now: &str) -> String {
    format!(
        "UPDATE deliveries SET next_attempt_at = {now} WHERE id = (SELECT n.id FROM deliveries d \
           JOIN deliveries n ON n.webhook_id = d.webhook_id AND n.ordering_key = d.ordering_key \
           WHERE d.id = {delivery} AND d.webhook_id IS NOT NULL AND d.ordering_key IS NOT NULL \
           AND n.webhook_id IS NOT NULL AND n.ordering_key IS NOT NULL AND n.status IN ('pending', 'failed') \
           ORDER BY n.sequence LIMIT 1) \
         AND status = 'pending' AND next_attempt_at IS NULL AND {WEBHOOK_LIVE}"
    )
}

/// PostgreSQL: [`release_next_sql`] for an array of deliveries (`ids`, a `text[]`).
pub fn release_next_of_many_sql(ids: &str, now: &str) -> String {
    format!(
        "UPDATE deliveries SET next_attempt_at = {now} WHERE id IN (SELECT (SELECT n.id FROM deliveries n \
           WHERE n.webhook_id = d.webhook_id AND n.ordering_key = d.ordering_key \
           AND n.webhook_id IS NOT NULL AND n.ordering_key IS NOT NULL AND n.status IN ('pending', 'failed') \
           ORDER BY n.sequence LIMIT 1) \
         FROM deliveries d WHERE d.id = ANY({ids}) AND d.webhook_id IS NOT NULL AND d.ordering_key IS NOT NULL) \
         AND status = 'pending' AND next_attempt_at IS NULL AND {WEBHOOK_LIVE}"
    )
}

/// The head holding a pending ordered delivery back (parameters: webhook, key, sequence).
pub fn head_of_sql(webhook: &str, key: &str, sequence: &str) -> String {
    format!(
        "SELECT id FROM deliveries WHERE webhook_id = {webhook} AND ordering_key = {key} \
         AND webhook_id IS NOT NULL AND ordering_key IS NOT NULL \
         AND status IN ('pending', 'failed') AND sequence < {sequence} ORDER BY sequence LIMIT 1"
    )
}

/// Whether a line (parameters: webhook, key) has a delivery that holds newcomers back.
pub fn line_busy_sql(webhook: &str, key: &str) -> String {
    format!(
        "SELECT 1 FROM deliveries WHERE webhook_id = {webhook} AND ordering_key = {key} \
         AND webhook_id IS NOT NULL AND ordering_key IS NOT NULL \
         AND status IN ('pending', 'failed') LIMIT 1"
    )
}

/// A webhook's ordering turned off (parameters: webhook, now): its lines dissolve, held
/// deliveries are due (if the webhook is live), and nothing is held any more.
pub fn dissolve_lines_sql(webhook: &str, now: &str) -> String {
    format!(
        "UPDATE deliveries SET ordering_key = NULL, sequence = NULL, \
           next_attempt_at = CASE WHEN status = 'pending' AND next_attempt_at IS NULL AND {WEBHOOK_LIVE} \
             THEN {now} ELSE next_attempt_at END \
         WHERE deliveries.webhook_id = {webhook} AND deliveries.ordering_key IS NOT NULL \
           AND deliveries.webhook_id IS NOT NULL AND deliveries.status IN ('pending', 'failed')"
    )
}
