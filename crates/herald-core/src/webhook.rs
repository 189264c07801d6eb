//! A webhook subscription: where events go and how they are signed.

use crate::ids::*;
use crate::pattern::EventPattern;
use crate::retry::RetrySchedule;
use crate::signing::SignatureFormat;
use crate::Timestamp;

/// Whether a webhook's deliveries keep their events' order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ordering {
    /// As today: deliveries go concurrently, retries overtake (`sequence` lets a consumer
    /// rebuild order).
    #[default]
    None,
    /// Deliveries of one event key go one at a time, in `sequence` order, retries included;
    /// a failing or dead one holds back only its own key. Events without a key are unordered.
    Key,
}

impl Ordering {
    pub fn as_str(&self) -> &'static str {
        match self {
            Ordering::None => "none",
            Ordering::Key => "key",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "none" => Some(Self::None),
            "key" => Some(Self::Key),
            _ => None,
        }
    }
}

/// `Debug` leaves the secrets out, so a webhook can be logged.
#[derive(Clone, PartialEq)]
pub struct Webhook {
    pub id: WebhookId,
    pub tenant: Option<TenantId>,
    pub url: String,
    pub events: Vec<EventPattern>,
    pub format: SignatureFormat,
    pub secret: String,
    pub secret_version: u32,
    /// The secret before the last rotation, still signing until the instant given.
    pub previous_secret: Option<(String, Timestamp)>,
    /// Overrides the configured schedule.
    pub schedule: Option<RetrySchedule>,
    /// At most this many requests in flight to this webhook.
    pub max_concurrency: Option<u32>,
    /// Whether deliveries of one event key go in order (`"ordering": "key"`).
    pub ordering: Ordering,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub description: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("format", &self.format)
            .field("secret", &"<redacted>")
            .field("secret_version", &self.secret_version)
            .field(
                "previous_secret",
                &self
                    .previous_secret
                    .as_ref()
                    .map(|(_, until)| ("<redacted>", until)),
            )
            .field("schedule", &self.schedule)
            .field("max_concurrency", &self.max_concurrency)
            .field("ordering", &self.ordering)
            .field("disabled", &self.disabled)
            .field("disabled_reason", &self.disabled_reason)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// The secrets that sign a request sent at `now`: the current one, then the previous while its grace lasts.
    pub fn live_secrets(&self, now: Timestamp) -> Vec<&str> {
        let mut out = vec![self.secret.as_str()];
        if let Some((prev, until)) = &self.previous_secret {
            if now < *until {
                out.push(prev.as_str());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let w = Webhook {
            id: WebhookId::generate(),
            tenant: None,
            url: "https://example.com/h".into(),
            events: vec![EventPattern::parse("a.*").unwrap()],
            format: SignatureFormat::Herald,
            secret: "hsec_current_secret_value".into(),
            secret_version: 2,
            previous_secret: Some(("hsec_previous_secret_value".into(), Timestamp(5))),
            schedule: None,
            max_concurrency: None,
            ordering: Ordering::None,
            disabled: false,
            disabled_reason: None,
            description: None,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        };
        let text = format!("{w:?}");
        assert!(
            !text.contains("current_secret") && !text.contains("previous_secret_value"),
            "{text}"
        );
        assert!(text.contains("https://example.com/h"));
        assert_eq!(
            w.live_secrets(Timestamp(4)),
            vec!["hsec_current_secret_value", "hsec_previous_secret_value"]
        );
        assert_eq!(
            w.live_secrets(Timestamp(5)),
            vec!["hsec_current_secret_value"]
        );
    }
}
