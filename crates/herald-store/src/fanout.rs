//! Which webhooks and broker routes get an event: decided here, once, without I/O. The
//! backends only load the [`Target`]s (the live webhooks that may receive the event) and
//! insert the deliveries [`plan`] returns, in the event's own transaction.

use crate::model::OutboxRoute;
use crate::StoreResult;
use herald_core::event::Event;
use herald_core::ids::{DeliveryId, TenantId};
use herald_core::pattern::EventPattern;
use herald_core::payload_filter::PayloadFilter;
use std::collections::HashMap;
use std::sync::Arc;

/// A webhook that is neither deleted nor disabled, as fan-out sees it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The webhook's id as stored.
    pub webhook: String,
    pub tenant: Option<TenantId>,
    pub patterns: Arc<Vec<EventPattern>>,
    /// `ordering: key`: its deliveries of a keyed event line up per key.
    pub ordered: bool,
    /// The webhook's payload filter: an event whose body fails it gets no delivery.
    pub filter: Option<Arc<PayloadFilter>>,
}

/// One delivery to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned<'a> {
    pub id: DeliveryId,
    pub to: To<'a>,
}

/// Where a planned delivery goes.
#[derive(Debug, Clone, PartialEq)]
pub enum To<'a> {
    /// A webhook, by its stored id; on an ordered webhook, the event's key lines it up.
    Webhook {
        webhook: &'a str,
        ordering_key: Option<String>,
    },
    /// A broker route, with the event's ordering key on it.
    Route {
        name: &'a str,
        ordering_key: Option<String>,
    },
}

/// The deliveries `event` gets: one per target of the event's tenant with a pattern that
/// matches its type and a filter (if any) its body passes (in the targets' order; an
/// operational event never goes to the webhook it is about), then
/// one per matching route (in the routes' order, each with the ordering key its pointer
/// finds in the event).
pub fn plan<'a>(
    event: &Event,
    targets: &'a [Target],
    routes: &'a [OutboxRoute],
) -> Vec<Planned<'a>> {
    if event.event_type == crate::rules::WEBHOOK_TEST {
        let to = crate::rules::test_target(event);
        return targets
            .iter()
            .filter(|t| t.tenant == event.tenant && Some(t.webhook.as_str()) == to)
            .map(|t| Planned {
                id: DeliveryId::generate(),
                to: To::Webhook {
                    webhook: &t.webhook,
                    ordering_key: None,
                },
            })
            .collect();
    }
    // Built once per event, and only when a matching webhook has a filter.
    let mut body = None;
    let about = crate::rules::operational_subject(event);
    let webhooks = targets
        .iter()
        .filter(|t| {
            t.tenant == event.tenant
                && t.patterns
                    .iter()
                    .any(|p| crate::rules::subscribes(p, &event.event_type))
                && about != Some(t.webhook.as_str())
        })
        .filter(|t| match &t.filter {
            None => true,
            Some(f) => f.matches(body.get_or_insert_with(|| event.to_body())),
        })
        .map(|t| To::Webhook {
            webhook: &t.webhook,
            ordering_key: if t.ordered { event.key.clone() } else { None },
        });
    let routes = routes
        .iter()
        .filter(|r| {
            r.events
                .iter()
                .any(|p| crate::rules::subscribes(p, &event.event_type))
        })
        .map(|r| To::Route {
            name: &r.name,
            ordering_key: r.key_of(event),
        });
    webhooks
        .chain(routes)
        .map(|to| Planned {
            id: DeliveryId::generate(),
            to,
        })
        .collect()
}

/// A webhook's stored `events` column (a JSON array of patterns), parsed. A pattern that
/// no longer parses matches nothing, as before.
pub fn parse_patterns(stored: &str) -> StoreResult<Vec<EventPattern>> {
    let list: Vec<String> = serde_json::from_str(stored)?;
    Ok(list
        .iter()
        .filter_map(|p| EventPattern::parse(p).ok())
        .collect())
}

/// A webhook's stored `events` and `filter` texts, and what they parse to.
type Parsed = (
    (String, Option<String>),
    Arc<Vec<EventPattern>>,
    Option<Arc<PayloadFilter>>,
);

/// Webhooks' parsed event patterns and filters, kept across batches by the task that read
/// them, keyed by the webhook and its stored `events` and `filter` texts, so an edit of
/// either is seen at once.
#[derive(Default)]
pub struct PatternCache {
    parsed: HashMap<String, Parsed>,
}

impl PatternCache {
    /// Keeps the cache small: cleared once it holds more than 10,000 webhooks.
    pub fn trim(&mut self) {
        if self.parsed.len() > 10_000 {
            self.parsed.clear();
        }
    }

    /// The target for a webhook row as read: its id, tenant, stored patterns and filter.
    pub fn target(
        &mut self,
        webhook: String,
        tenant: Option<TenantId>,
        stored: String,
        filter: Option<String>,
        ordered: bool,
    ) -> StoreResult<Target> {
        let key = (stored, filter);
        let (patterns, filter) = match self.parsed.get(&webhook) {
            Some((seen, patterns, filter)) if *seen == key => (patterns.clone(), filter.clone()),
            _ => {
                let patterns = Arc::new(parse_patterns(&key.0)?);
                let filter = crate::rows::filter_of(key.1.clone())?.map(Arc::new);
                self.parsed
                    .insert(webhook.clone(), (key, patterns.clone(), filter.clone()));
                (patterns, filter)
            }
        };
        Ok(Target {
            webhook,
            tenant,
            patterns,
            ordered,
            filter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::ids::EventId;
    use herald_core::Timestamp;
    use serde_json::json;

    fn event(tenant: Option<TenantId>, event_type: &str) -> Event {
        Event {
            id: EventId::generate(),
            tenant,
            event_type: event_type.into(),
            key: None,
            sequence: None,
            data: json!({ "payment_id": "p_1", "amount": 5 }),
            created_at: Timestamp(1),
        }
    }

    fn target(webhook: &str, tenant: Option<TenantId>, patterns: &[&str]) -> Target {
        Target {
            webhook: webhook.into(),
            tenant,
            ordered: false,
            filter: None,
            patterns: Arc::new(
                patterns
                    .iter()
                    .map(|p| EventPattern::parse(p).unwrap())
                    .collect(),
            ),
        }
    }

    fn hook<'a>(webhook: &'a str, ordering_key: Option<&str>) -> To<'a> {
        To::Webhook {
            webhook,
            ordering_key: ordering_key.map(str::to_owned),
        }
    }

    #[test]
    fn an_ordered_webhook_lines_up_keyed_events_only() {
        let acme = Some(TenantId::generate());
        let mut ordered = target("wh_o", acme, &["*"]);
        ordered.ordered = true;
        let targets = [ordered, target("wh_u", acme, &["*"])];
        let mut keyed = event(acme, "payment.succeeded");
        keyed.key = Some("p_1".into());
        let to: Vec<_> = plan(&keyed, &targets, &[])
            .into_iter()
            .map(|p| p.to)
            .collect();
        assert_eq!(to, vec![hook("wh_o", Some("p_1")), hook("wh_u", None)]);
        let to: Vec<_> = plan(&event(acme, "payment.succeeded"), &targets, &[])
            .into_iter()
            .map(|p| p.to)
            .collect();
        assert_eq!(to, vec![hook("wh_o", None), hook("wh_u", None)]);
    }

    fn route(name: &str, pattern: &str, key: &str) -> OutboxRoute {
        OutboxRoute {
            name: name.into(),
            events: vec![EventPattern::parse(pattern).unwrap()],
            key: key.into(),
        }
    }

    #[test]
    fn webhooks_of_the_events_tenant_whose_patterns_match_then_routes() {
        let acme = Some(TenantId::generate());
        let other = Some(TenantId::generate());
        let targets = [
            target("wh_a", acme, &["payment.*"]),
            target("wh_b", acme, &["invoice.*"]),
            target("wh_c", other, &["payment.*"]),
            target("wh_d", None, &["payment.*"]),
            target("wh_e", acme, &["invoice.*", "payment.succeeded"]),
        ];
        let routes = [
            route("kafka", "payment.*", "/data/payment_id"),
            route("audit", "invoice.*", "/data/payment_id"),
            route("amounts", "*", "/data/amount"),
        ];
        let planned = plan(&event(acme, "payment.succeeded"), &targets, &routes);
        let to: Vec<_> = planned.iter().map(|p| p.to.clone()).collect();
        assert_eq!(
            to,
            vec![
                hook("wh_a", None),
                hook("wh_e", None),
                To::Route {
                    name: "kafka",
                    ordering_key: Some("p_1".into())
                },
                To::Route {
                    name: "amounts",
                    ordering_key: Some("5".into())
                },
            ]
        );
        let mut ids: Vec<_> = planned.iter().map(|p| p.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 4, "each delivery its own id");
    }

    #[test]
    fn an_event_of_no_tenant_goes_to_webhooks_of_no_tenant() {
        let targets = [
            target("wh_a", Some(TenantId::generate()), &["*"]),
            target("wh_b", None, &["*"]),
        ];
        let planned = plan(&event(None, "x.y"), &targets, &[]);
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].to, hook("wh_b", None));
        assert!(plan(&event(None, "x.y"), &[], &[]).is_empty());
    }

    #[test]
    fn stored_patterns_that_no_longer_parse_match_nothing() {
        let parsed = parse_patterns(r#"["payment.*", "", "a.b"]"#).unwrap();
        assert_eq!(parsed.len(), 2);
        assert!(parse_patterns("not json").is_err());
    }

    #[test]
    fn the_pattern_cache_sees_an_edit_at_once() {
        let mut cache = PatternCache::default();
        let a = cache
            .target("wh_a".into(), None, r#"["a.*"]"#.into(), None, false)
            .unwrap();
        let again = cache
            .target("wh_a".into(), None, r#"["a.*"]"#.into(), None, false)
            .unwrap();
        assert!(Arc::ptr_eq(&a.patterns, &again.patterns), "parsed once");
        let edited = cache
            .target("wh_a".into(), None, r#"["b.*"]"#.into(), None, false)
            .unwrap();
        assert_eq!(edited.patterns[0].as_str(), "b.*");
        assert!(edited.filter.is_none());
        let filtered = cache
            .target(
                "wh_a".into(),
                None,
                r#"["b.*"]"#.into(),
                Some(r#"{"/data/amount":5}"#.into()),
                false,
            )
            .unwrap();
        assert!(filtered.filter.is_some(), "a filter edit is seen at once");
    }

    #[test]
    fn a_test_event_goes_to_its_webhook_only() {
        let acme = Some(TenantId::generate());
        let mut filtered = target("wh_a", acme, &["payment.*"]);
        filtered.filter = Some(Arc::new(
            PayloadFilter::parse(&json!({"/data/never": true})).unwrap(),
        ));
        let targets = [
            filtered,
            target("wh_b", acme, &["*"]),
            target("wh_c", None, &["*"]),
        ];
        let mut test = event(acme, crate::rules::WEBHOOK_TEST);
        test.data = json!({ "webhook": "wh_a" });
        let routes = [route("all", "*", "/data/x")];
        let to: Vec<_> = plan(&test, &targets, &routes)
            .into_iter()
            .map(|p| p.to)
            .collect();
        assert_eq!(to, vec![hook("wh_a", None)]);
        test.data = json!({ "webhook": "wh_c" });
        assert!(plan(&test, &targets, &[]).is_empty(), "another tenant's");
    }

    #[test]
    fn an_operational_event_skips_the_webhook_it_is_about() {
        let acme = Some(TenantId::generate());
        let targets = [
            target("wh_a", acme, &["delivery.failed"]),
            target("wh_b", acme, &["delivery.*"]),
            target("wh_all", acme, &["*"]),
        ];
        let mut failed = event(acme, crate::rules::DELIVERY_FAILED);
        failed.data = json!({ "webhook": "wh_a", "delivery": "dlv_1" });
        let routes = [
            route("ops", "delivery.*", "/data/webhook"),
            route("all", "*", "/data/webhook"),
        ];
        let to: Vec<_> = plan(&failed, &targets, &routes)
            .into_iter()
            .map(|p| p.to)
            .collect();
        // Not to the webhook it is about, not to catch-all subscribers (webhooks or routes).
        assert_eq!(
            to,
            vec![
                hook("wh_b", None),
                To::Route {
                    name: "ops",
                    ordering_key: Some("wh_a".into())
                }
            ]
        );
        // Anyone else's event that names a webhook in its data goes to `*` as always.
        let mut own = event(acme, "delivery.retried");
        own.data = json!({ "webhook": "wh_b" });
        let to: Vec<_> = plan(&own, &targets, &[])
            .into_iter()
            .map(|p| p.to)
            .collect();
        assert_eq!(to, vec![hook("wh_b", None), hook("wh_all", None)]);
    }

    #[test]
    fn a_filter_keeps_events_its_body_fails_from_the_webhook() {
        let acme = Some(TenantId::generate());
        let mut filtered = target("wh_f", acme, &["payment.*"]);
        filtered.filter = Some(Arc::new(
            PayloadFilter::parse(
                &json!({"$or": [{"/data/amount": {"$in": [5, 6]}}, {"/key": "k"}]}),
            )
            .unwrap(),
        ));
        let targets = [filtered, target("wh_all", acme, &["payment.*"])];
        let to: Vec<_> = plan(&event(acme, "payment.succeeded"), &targets, &[])
            .into_iter()
            .map(|p| p.to)
            .collect();
        assert_eq!(to, vec![hook("wh_f", None), hook("wh_all", None)]);
        let mut other = event(acme, "payment.succeeded");
        other.data = json!({"amount": 7});
        let to: Vec<_> = plan(&other, &targets, &[])
            .into_iter()
            .map(|p| p.to)
            .collect();
        assert_eq!(to, vec![hook("wh_all", None)], "filtered out");
        other.key = Some("k".into());
        other.sequence = Some(1);
        assert_eq!(
            plan(&other, &targets, &[]).len(),
            2,
            "`/key` is in the body"
        );
    }
}
