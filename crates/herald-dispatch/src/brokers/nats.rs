//! NATS JetStream: subject `<topic>.<key>` (or `<topic>`), `Nats-Msg-Id` = event id so
//! JetStream drops duplicates, and a stream over `<topic>` and `<topic>.>` created when
//! no stream covers them.

use super::{BrokerKind, BrokerMessage, PublishError, PublishFuture, Publisher};
use async_nats::jetstream;
use std::collections::HashSet;
use tokio::sync::Mutex;

#[derive(Debug, Clone)]
pub struct NatsSettings {
    pub url: String,
}

pub struct NatsPublisher {
    settings: NatsSettings,
    state: Mutex<Option<Connected>>,
}

struct Connected {
    jetstream: jetstream::Context,
    /// Topics known to be covered by a stream.
    streams: HashSet<String>,
}

impl NatsPublisher {
    pub fn new(settings: NatsSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(None),
        }
    }

    async fn connected(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<Connected>>, PublishError> {
        let mut state = self.state.lock().await;
        if state.is_none() {
            // Without retry_on_initial_connect an unreachable server is an error now (reported,
            // and tried again on the next publish); once connected, the client reconnects itself.
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(std::time::Duration::from_secs(5))
                .connect(&self.settings.url)
                .await
                .map_err(|e| {
                    PublishError::Unavailable(format!(
                        "cannot connect to NATS at {}: {e}",
                        self.settings.url
                    ))
                })?;
            *state = Some(Connected {
                jetstream: jetstream::new(client),
                streams: HashSet::new(),
            });
        }
        Ok(state)
    }

    async fn ensure_stream(connected: &mut Connected, topic: &str) -> Result<(), PublishError> {
        if connected.streams.contains(topic) {
            return Ok(());
        }
        let js = &connected.jetstream;
        let covered = js.stream_by_subject(format!("{topic}.>")).await.is_ok()
            && js.stream_by_subject(topic).await.is_ok();
        if !covered {
            let name = stream_name(topic);
            js.get_or_create_stream(jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![topic.to_owned(), format!("{topic}.>")],
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                PublishError::Unavailable(format!(
                    "cannot create JetStream stream {name} over {topic}: {e}"
                ))
            })?;
            tracing::info!(stream = %name, %topic, "created a JetStream stream");
        }
        connected.streams.insert(topic.to_owned());
        Ok(())
    }
}

/// `payments.events` -> `HERALD_payments_events` (stream names take no dots or wildcards).
fn stream_name(topic: &str) -> String {
    let body: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("HERALD_{body}")
}

/// A key is appended as subject tokens: no whitespace, wildcards, or empty tokens.
pub(crate) fn subject(topic: &str, key: Option<&str>) -> Result<String, PublishError> {
    match key {
        None => Ok(topic.to_owned()),
        Some(k) => {
            let bad = k.is_empty()
                || k.split('.').any(|t| t.is_empty())
                || k.chars().any(|c| c.is_whitespace() || c == '*' || c == '>');
            if bad {
                return Err(PublishError::Refused(format!(
                    "the key {k:?} cannot be part of a NATS subject (no spaces, `*`, `>` or empty tokens)"
                )));
            }
            Ok(format!("{topic}.{k}"))
        }
    }
}

impl Publisher for NatsPublisher {
    fn kind(&self) -> BrokerKind {
        BrokerKind::Nats
    }

    fn connect(&self) -> PublishFuture<'_> {
        Box::pin(async move { self.connected().await.map(|_| ()) })
    }

    fn publish<'a>(&'a self, message: &'a BrokerMessage) -> PublishFuture<'a> {
        Box::pin(async move {
            let subject = subject(&message.topic, message.key.as_deref())?;
            let mut state = self.connected().await?;
            let connected = state.as_mut().expect("connected above");
            Self::ensure_stream(connected, &message.topic).await?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                message.event_id.as_str(),
            );
            headers.insert("Herald-Event-Type", message.event_type.as_str());
            headers.insert("traceparent", message.traceparent.as_str());
            let js = connected.jetstream.clone();
            drop(state);
            let ack = js
                .publish_with_headers(subject, headers, message.payload.clone().into())
                .await
                .map_err(classify)?;
            ack.await.map_err(classify)?;
            Ok(())
        })
    }
}

fn classify(e: impl std::fmt::Display) -> PublishError {
    let text = e.to_string();
    let lower = text.to_lowercase();
    if lower.contains("payload")
        && (lower.contains("exceed") || lower.contains("maximum") || lower.contains("too large"))
        || lower.contains("message size exceeds")
        || lower.contains("invalid subject")
    {
        PublishError::Refused(format!("NATS refused the message: {text}"))
    } else {
        PublishError::Unavailable(format!("NATS publish failed: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_stream_names() {
        assert_eq!(
            subject("payments.events", Some("pay_42")).unwrap(),
            "payments.events.pay_42"
        );
        assert_eq!(subject("payments.events", None).unwrap(), "payments.events");
        assert!(matches!(
            subject("t", Some("a b")),
            Err(PublishError::Refused(_))
        ));
        assert!(matches!(
            subject("t", Some("a.>")),
            Err(PublishError::Refused(_))
        ));
        assert_eq!(stream_name("payments.events"), "HERALD_payments_events");
    }
}
