//! RabbitMQ: a durable topic exchange named after the topic, routing key = the key,
//! persistent messages with `message_id` = event id, and publisher confirms.

use super::{BrokerKind, BrokerMessage, PublishError, PublishFuture, Publisher};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::collections::HashSet;
use tokio::sync::Mutex;

#[derive(Debug, Clone)]
pub struct RabbitMqSettings {
    pub url: String,
}

pub struct RabbitMqPublisher {
    settings: RabbitMqSettings,
    state: Mutex<Option<Connected>>,
}

struct Connected {
    /// Kept so the connection lives as long as its channel.
    _connection: Connection,
    channel: Channel,
    exchanges: HashSet<String>,
}

impl RabbitMqPublisher {
    pub fn new(settings: RabbitMqSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(None),
        }
    }

    async fn open(&self) -> Result<Connected, PublishError> {
        let unavailable =
            |e: lapin::Error| PublishError::Unavailable(format!("cannot connect to RabbitMQ: {e}"));
        let connection = Connection::connect(&self.settings.url, ConnectionProperties::default())
            .await
            .map_err(unavailable)?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unavailable)?;
        Ok(Connected {
            _connection: connection,
            channel,
            exchanges: HashSet::new(),
        })
    }

    async fn try_publish(
        connected: &mut Connected,
        message: &BrokerMessage,
    ) -> Result<(), PublishError> {
        let failed = |e: lapin::Error| classify(&e);
        if !connected.exchanges.contains(&message.topic) {
            connected
                .channel
                .exchange_declare(
                    message.topic.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(failed)?;
            connected.exchanges.insert(message.topic.clone());
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(message.event_id.as_str().into())
            .with_type(message.event_type.as_str().into())
            .with_headers({
                let mut headers = FieldTable::default();
                headers.insert(
                    "traceparent".into(),
                    lapin::types::AMQPValue::LongString(message.traceparent.as_str().into()),
                );
                headers
            });
        let confirm = connected
            .channel
            .basic_publish(
                message.topic.as_str().into(),
                message.key.as_deref().unwrap_or("").into(),
                BasicPublishOptions::default(),
                &message.payload,
                properties,
            )
            .await
            .map_err(failed)?
            .await
            .map_err(failed)?;
        match confirm {
            Confirmation::Ack(_) => Ok(()),
            // RabbitMQ nacks what a queue cannot take now (a full queue with
            // `x-overflow = reject-publish`, say): back-pressure, so retry, keeping the line's order.
            Confirmation::Nack(_) => Err(PublishError::Unavailable(
                "RabbitMQ did not take the message (nack): a queue bound to the exchange may be full (x-overflow = reject-publish); retrying"
                    .into(),
            )),
            Confirmation::NotRequested => Err(PublishError::Unavailable(
                "RabbitMQ channel is not in confirm mode".into(),
            )),
        }
    }
}

/// Which channel errors are the message's own and final, so retrying the same message
/// cannot help until someone changes the broker:
/// - 406 PRECONDITION_FAILED: the message is over the broker's `max_message_size`, or an
///   exchange named like the topic exists with another type or durability (Herald wants a
///   durable topic exchange);
/// - 403 ACCESS_REFUSED: the user may not declare or write to this exchange;
/// - 311 CONTENT_TOO_LARGE.
///
/// Everything else is retried: I/O, connection-level errors (a broker shutting down sends
/// CONNECTION_FORCED), 404 NOT_FOUND (an exchange deleted after Herald declared it is
/// declared again on the next channel), and a nack, see `try_publish`.
fn classify(e: &lapin::Error) -> PublishError {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    let for_good = match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => matches!(
            amqp.kind(),
            AMQPErrorKind::Soft(
                AMQPSoftError::PRECONDITIONFAILED
                    | AMQPSoftError::ACCESSREFUSED
                    | AMQPSoftError::CONTENTTOOLARGE
            )
        ),
        _ => false,
    };
    if for_good {
        PublishError::Refused(format!("RabbitMQ refused the message for good: {e}"))
    } else {
        PublishError::Unavailable(format!("RabbitMQ publish failed: {e}"))
    }
}

impl Publisher for RabbitMqPublisher {
    fn kind(&self) -> BrokerKind {
        BrokerKind::RabbitMq
    }

    fn connect(&self) -> PublishFuture<'_> {
        Box::pin(async move {
            let mut state = self.state.lock().await;
            if state.is_none() {
                *state = Some(self.open().await?);
            }
            Ok(())
        })
    }

    fn publish<'a>(&'a self, message: &'a BrokerMessage) -> PublishFuture<'a> {
        Box::pin(async move {
            // One channel, one publish at a time: confirms come back in order and a broken
            // channel is replaced before the next message.
            let mut state = self.state.lock().await;
            if state
                .as_ref()
                .is_some_and(|c| !c.channel.status().connected())
            {
                *state = None;
            }
            if state.is_none() {
                *state = Some(self.open().await?);
            }
            let result = Self::try_publish(state.as_mut().expect("opened above"), message).await;
            if result.is_err() {
                // A failed publish may have closed the channel; start afresh next time.
                *state = None;
            }
            result
        })
    }
}
