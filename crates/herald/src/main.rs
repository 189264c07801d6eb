//! The `herald` binary: `serve` runs the API and its delivery engine on one store;
//! `migrate` prepares a database; `keys create` mints a key offline.

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald_core::auth::{mint_key, Role};
use herald_core::{Clock, SystemClock};
use herald_server::{AppState, Config};
use herald_store::postgres::{is_postgres_url, PgStore};
use herald_store::sqlite::{path_from_url, SqliteStore};
use herald_store::{ApiKey, Store};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: long-running operations, signed webhooks and broker events from one durable core."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct StoreArgs {
    /// `sqlite://path` (default `sqlite://herald.db`) or `postgres://user@host/db`
    /// (several nodes may share one PostgreSQL database).
    #[arg(
        long,
        env = "HERALD_DATABASE_URL",
        default_value = "sqlite://herald.db"
    )]
    database: String,
    /// PostgreSQL only: connections this node keeps open (plus one that listens for
    /// other nodes' changes).
    #[arg(long, env = "HERALD_DATABASE_POOL_SIZE", default_value_t = herald_store::postgres::DEFAULT_POOL_SIZE)]
    database_pool_size: usize,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API, the lease reaper and the webhook dispatcher.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "HERALD_LISTEN", default_value = "127.0.0.1:8288")]
        listen: String,
        #[command(flatten)]
        store: StoreArgs,
        /// TOML config file (operation types, event types, webhook settings).
        #[arg(long, env = "HERALD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Create the database and apply migrations, then exit.
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Manage API keys directly in the database.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Mint an admin or worker key and print it once.
    Create {
        #[arg(long, value_parser = ["admin", "worker"])]
        role: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

async fn open_store(args: &StoreArgs) -> anyhow::Result<Arc<dyn Store>> {
    let url = args.database.trim();
    if is_postgres_url(url) {
        let store = PgStore::connect_with(url, args.database_pool_size)
            .await
            .context("opening the PostgreSQL database")?;
        return Ok(Arc::new(store));
    }
    let path = path_from_url(url);
    let store = SqliteStore::open(&path)
        .with_context(|| format!("opening the database at {}", path.display()))?;
    Ok(Arc::new(store))
}

/// The database URL without its password, fit for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve {
            listen,
            store,
            config,
        } => serve(listen, store, config).await,
        Command::Migrate { store } => {
            open_store(&store).await?;
            println!("migrations applied to {}", redacted(&store.database));
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Create { role, store },
        } => {
            let store = open_store(&store).await?;
            let role = if role == "admin" {
                Role::Admin
            } else {
                Role::Worker
            };
            let key = create_key(&*store, role).await?;
            println!("{key}");
            Ok(())
        }
    }
}

async fn create_key(store: &dyn Store, role: Role) -> anyhow::Result<String> {
    let minted = mint_key();
    store
        .create_key(ApiKey {
            id: minted.id,
            hash: minted.hash,
            role,
            created_at: SystemClock.now(),
            revoked: false,
        })
        .await?;
    Ok(minted.plaintext)
}

async fn serve(
    listen: String,
    store_args: StoreArgs,
    config_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    let config = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let store = open_store(&store_args).await?;
    let admin_key = std::env::var("HERALD_ADMIN_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    if admin_key.is_none()
        && config.admin_key.is_none()
        && store.count_live_admin_keys().await? == 0
    {
        let key = create_key(&*store, Role::Admin).await?;
        // Printed once, on the first start of a fresh database; only its hash is stored.
        println!(
            "Created the first admin key (shown only this once, keep it safe):\n\n    {key}\n"
        );
    }
    let shutdown = CancellationToken::new();
    let state = AppState::new(
        store,
        config,
        Arc::new(SystemClock),
        admin_key,
        shutdown.clone(),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = %redacted(&store_args.database), "herald is listening");
    println!("herald listening on http://{addr}");
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    herald_server::start(state, listener).await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
