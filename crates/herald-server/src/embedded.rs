//! Herald in-process: the real server on `127.0.0.1:0` over a fresh SQLite file in a
//! temporary folder, for examples and other crates' integration tests.

use crate::{AppState, Config};
use herald_core::SystemClock;
use herald_store::sqlite::SqliteStore;
use herald_store::Store;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A running Herald. [`EmbeddedHerald::stop`] shuts it down and waits for it.
pub struct EmbeddedHerald {
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    /// The admin key it accepts.
    pub admin_key: String,
    pub state: AppState,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl EmbeddedHerald {
    /// Starts Herald with `config` (TOML) and the database file `database`, accepting `admin_key`.
    pub async fn start(config: &str, database: &Path, admin_key: &str) -> anyhow::Result<Self> {
        let config = Config::parse(config)?;
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_with(database, config.store.write_queue)?);
        let shutdown = CancellationToken::new();
        let state = AppState::new(
            store,
            config,
            Arc::new(SystemClock),
            Some(admin_key.to_owned()),
            shutdown.clone(),
        )
        .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(crate::start(state.clone(), listener));
        Ok(Self {
            base_url,
            admin_key: admin_key.to_owned(),
            state,
            shutdown,
            server,
        })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.server.await?
    }
}
