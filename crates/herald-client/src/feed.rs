//! The pull feed from the SDK: consumers (a reader whose acknowledged cursor Herald
//! keeps), their long-polled reads, and acks. `herald listen` is built on these.

use crate::client::{Client, ClientError, ClientResult};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// A consumer as Herald answers it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Consumer {
    pub name: String,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub types: Vec<String>,
    /// The acknowledged cursor.
    pub cursor: String,
}

/// One read: the events (each as `GET /events/{id}` answers it) and the cursor after them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct FeedPage {
    pub events: Vec<Value>,
    pub next_cursor: String,
}

/// Where a new consumer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
}

fn tenant_query(tenant: Option<&str>, first: bool) -> String {
    match tenant {
        Some(t) => format!("{}tenant={t}", if first { '?' } else { '&' }),
        None => String::new(),
    }
}

impl Client {
    /// `POST /consumers`. `tenant` only with an admin key.
    pub async fn create_consumer(
        &self,
        name: &str,
        types: &[String],
        start: Start,
        tenant: Option<&str>,
    ) -> ClientResult<Consumer> {
        let mut body = json!({
            "name": name,
            "types": types,
            "start": match start { Start::Earliest => "earliest", Start::Latest => "latest" },
        });
        if let Some(t) = tenant {
            body["tenant"] = json!(t);
        }
        self.decode_call(reqwest::Method::POST, "/consumers", Some(&body))
            .await
    }

    /// `GET /consumers/{name}`.
    pub async fn get_consumer(&self, name: &str, tenant: Option<&str>) -> ClientResult<Consumer> {
        let path = format!("/consumers/{name}{}", tenant_query(tenant, true));
        self.decode_call(reqwest::Method::GET, &path, None).await
    }

    /// The consumer `name`, created (from `start`, with `types`) when it does not exist.
    pub async fn ensure_consumer(
        &self,
        name: &str,
        types: &[String],
        start: Start,
        tenant: Option<&str>,
    ) -> ClientResult<Consumer> {
        match self.get_consumer(name, tenant).await {
            Err(ClientError::Api { status: 404, .. }) => {
                match self.create_consumer(name, types, start, tenant).await {
                    // Another process made it in between: use it.
                    Err(ClientError::Api { status: 409, .. }) => {
                        self.get_consumer(name, tenant).await
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    /// `GET /consumers/{name}/events`: the events after its acknowledged cursor,
    /// waiting up to `wait` (at most 60 s) for one.
    pub async fn consumer_events(
        &self,
        name: &str,
        wait: Duration,
        page_size: u32,
        tenant: Option<&str>,
    ) -> ClientResult<FeedPage> {
        let path = format!(
            "/consumers/{name}/events?wait={}ms&page_size={page_size}{}",
            wait.as_millis(),
            tenant_query(tenant, false)
        );
        self.decode_call(reqwest::Method::GET, &path, None).await
    }

    /// `POST /consumers/{name}:ack`: everything up to `cursor` is done with.
    pub async fn ack(
        &self,
        name: &str,
        cursor: &str,
        tenant: Option<&str>,
    ) -> ClientResult<Consumer> {
        let path = format!("/consumers/{name}:ack{}", tenant_query(tenant, true));
        self.decode_call(
            reqwest::Method::POST,
            &path,
            Some(&json!({ "cursor": cursor })),
        )
        .await
    }

    /// `GET /feed` after `after`, waiting up to `wait`, with `types` patterns.
    pub async fn read_feed(
        &self,
        after: &str,
        wait: Duration,
        types: &[String],
    ) -> ClientResult<FeedPage> {
        let mut path = format!("/feed?after={after}&wait={}ms", wait.as_millis());
        if !types.is_empty() {
            path.push_str(&format!("&types={}", types.join(",")));
        }
        self.decode_call(reqwest::Method::GET, &path, None).await
    }
}
