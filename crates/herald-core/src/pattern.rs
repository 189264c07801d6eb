//! Event-type patterns as webhooks and routes write them: an exact type
//! (`payment.succeeded`), a prefix wildcard (`payment.*`), or `*` for everything.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not an event type pattern: use letters, digits, `_`, `-` and dots, optionally ending in `.*` (or `*` alone)")]
pub struct PatternError(pub String);

/// A checked event-type pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPattern(String);

impl EventPattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text == "*" {
            return Ok(Self(text.into()));
        }
        let body = text.strip_suffix(".*").unwrap_or(text);
        if is_event_type(body) {
            Ok(Self(text.into()))
        } else {
            Err(PatternError(text.into()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, event_type: &str) -> bool {
        if self.0 == "*" {
            return true;
        }
        match self.0.strip_suffix(".*") {
            Some(prefix) => event_type
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1),
            None => self.0 == event_type,
        }
    }
}

/// `payment.succeeded`: dot-separated words of letters, digits, `_` and `-`, at most 200 bytes.
pub fn is_event_type(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 200
        && text.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// Whether any of `patterns` matches `event_type`.
pub fn any_matches(patterns: &[EventPattern], event_type: &str) -> bool {
    patterns.iter().any(|p| p.matches(event_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_below_prefix_only() {
        let p = EventPattern::parse("payment.*").unwrap();
        assert!(p.matches("payment.succeeded"));
        assert!(p.matches("payment.refund.created"));
        assert!(!p.matches("payment"));
        assert!(!p.matches("payments.succeeded"));
        assert!(EventPattern::parse("*").unwrap().matches("anything.at.all"));
        assert!(EventPattern::parse("payment.succeeded")
            .unwrap()
            .matches("payment.succeeded"));
        assert!(!EventPattern::parse("payment.succeeded")
            .unwrap()
            .matches("payment.failed"));
    }

    #[test]
    fn rejects_malformed_patterns() {
        for bad in ["", "pay*", "payment..x", "payment.*.x", "a b", ".x"] {
            assert!(EventPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
