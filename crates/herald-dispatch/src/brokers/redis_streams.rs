//! Redis Streams: `XADD <topic> [MAXLEN ~ n] * id <event id> type <type> key <key> event <json>`.

use super::{BrokerKind, BrokerMessage, PublishError, PublishFuture, Publisher};
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// Trim each stream to about this many entries (`MAXLEN ~`); `None` keeps everything.
    pub maxlen: Option<u64>,
}

pub struct RedisPublisher {
    settings: RedisSettings,
    state: Mutex<Option<MultiplexedConnection>>,
}

impl RedisPublisher {
    pub fn new(settings: RedisSettings) -> Self {
        Self {
            settings,
            state: Mutex::new(None),
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, PublishError> {
        let mut state = self.state.lock().await;
        if let Some(c) = state.as_ref() {
            return Ok(c.clone());
        }
        let unavailable = |e: redis::RedisError| {
            PublishError::Unavailable(format!("cannot connect to Redis: {e}"))
        };
        let client = redis::Client::open(self.settings.url.as_str()).map_err(unavailable)?;
        let conn = client
            .get_multiplexed_tokio_connection()
            .await
            .map_err(unavailable)?;
        *state = Some(conn.clone());
        Ok(conn)
    }
}

/// The `XADD` command for one message (pure, for tests).
pub(crate) fn xadd(message: &BrokerMessage, maxlen: Option<u64>) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&message.topic);
    if let Some(n) = maxlen {
        cmd.arg("MAXLEN").arg("~").arg(n);
    }
    cmd.arg("*")
        .arg("id")
        .arg(&message.event_id)
        .arg("type")
        .arg(&message.event_type);
    if let Some(key) = &message.key {
        cmd.arg("key").arg(key);
    }
    cmd.arg("traceparent").arg(&message.traceparent);
    cmd.arg("event").arg(&message.payload);
    cmd
}

/// Errors the server answers for this command and these arguments: `ERR …` (bad arguments)
/// and `WRONGTYPE` (the key holds something other than a stream). Others (`OOM`, `LOADING`,
/// `READONLY`, connection trouble) pass.
fn is_refusal(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::ResponseError || e.code() == Some("WRONGTYPE")
}

impl Publisher for RedisPublisher {
    fn kind(&self) -> BrokerKind {
        BrokerKind::Redis
    }

    fn connect(&self) -> PublishFuture<'_> {
        Box::pin(async move { self.connection().await.map(|_| ()) })
    }

    fn publish<'a>(&'a self, message: &'a BrokerMessage) -> PublishFuture<'a> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            let result: Result<String, redis::RedisError> = xadd(message, self.settings.maxlen)
                .query_async(&mut conn)
                .await;
            match result {
                Ok(_) => Ok(()),
                // WRONGTYPE and other command errors come back the same however often we try.
                Err(e) if is_refusal(&e) => {
                    Err(PublishError::Refused(format!("Redis refused XADD: {e}")))
                }
                Err(e) => {
                    if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                        *self.state.lock().await = None;
                    }
                    Err(PublishError::Unavailable(format!("Redis XADD failed: {e}")))
                }
            }
        })
    }
}
