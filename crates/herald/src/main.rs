//! The `herald` binary: `serve` runs the API and its delivery engine on one store;
//! `migrate` prepares a database; `tenants create` and `keys create` talk to a running
//! Herald (`keys create --offline` writes to the database); `verify` checks a webhook
//! signature; `contract` prints the async contract, OpenAPI or AsyncAPI from a config;
//! `listen` forwards a tenant's feed to a local URL, signed ([`listen`]).

use anyhow::{bail, Context};
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

mod listen;

/// mimalloc: per-thread free lists instead of glibc's arenas, whose malloc/free (and their
/// lock wake-ups) were the largest self cost of a loaded Herald. With its `override`
/// feature it also serves the C libraries' malloc (SQLite's above all, which showed as
/// glibc's _int_malloc/_int_free in the profile).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Manage tenants on a running Herald.
    Tenants {
        #[command(subcommand)]
        command: TenantsCommand,
    },
    /// Mint API keys, on a running Herald or (`--offline`) directly in the database.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Check a webhook request's signature (Herald or Standard Webhooks format).
    /// Exits 0 when it is genuine and fresh, 1 otherwise.
    Verify(VerifyArgs),
    /// Follow a tenant's feed and POST each event, signed as a delivery is, to a local
    /// URL (local development: no inbound connection needed). Ctrl-C stops after the
    /// current event; the next run resumes after the last one acknowledged.
    Listen(listen::ListenArgs),
    /// Print the async contract (Markdown), OpenAPI 3.1 or AsyncAPI 3.0 for a config.
    Contract {
        /// TOML config file; without one, the defaults.
        #[arg(long, env = "HERALD_CONFIG")]
        config: Option<PathBuf>,
        /// Emit OpenAPI 3.1 (JSON) for the whole HTTP API.
        #[arg(long, conflicts_with = "asyncapi")]
        openapi: bool,
        /// Emit AsyncAPI 3.0 (JSON) for webhook events.
        #[arg(long)]
        asyncapi: bool,
        /// The server URL written into the documents.
        #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8288")]
        url: String,
    },
}

/// Where a running Herald is, and the key to use.
#[derive(clap::Args, Clone)]
struct RemoteArgs {
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8288")]
    url: String,
    /// An admin key.
    #[arg(long, env = "HERALD_KEY", hide_env_values = true)]
    key: Option<String>,
}

impl RemoteArgs {
    fn client(&self) -> anyhow::Result<herald_client::Client> {
        let Some(key) = self.key.as_deref().filter(|k| !k.is_empty()) else {
            bail!("an admin key is needed: pass --key or set HERALD_KEY");
        };
        Ok(herald_client::Client::new(&self.url, key))
    }
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// Create a tenant; prints its id.
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Mint a key and print it once. `tenant` keys need `--tenant`; `worker` keys may be
    /// scoped with `--type` and `--tenant` (each repeatable).
    Create {
        #[arg(long, value_parser = ["admin", "worker", "tenant"])]
        role: String,
        /// The tenant a `tenant` key belongs to; for a `worker` key, a tenant whose
        /// operations it may work on (repeat for several; none: every tenant's).
        #[arg(long = "tenant", required_if_eq("role", "tenant"))]
        tenants: Vec<String>,
        /// For a `worker` key: an operation type it may claim (repeat for several; none:
        /// every type).
        #[arg(long = "type")]
        types: Vec<String>,
        /// Write an admin or worker key straight into the database, with no server running.
        #[arg(long)]
        offline: bool,
        #[command(flatten)]
        remote: RemoteArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The signing secret, exactly as Herald showed it (`hsec_…` or `whsec_…`); repeat while rotating.
    #[arg(
        long,
        env = "HERALD_WEBHOOK_SECRET",
        hide_env_values = true,
        required = true
    )]
    secret: Vec<String>,
    /// The raw request body, byte for byte (`-` for standard input).
    #[arg(long)]
    body: PathBuf,
    /// A request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// A file of `Name: value` lines (e.g. `curl -D` output); status lines are skipped.
    #[arg(long)]
    headers_file: Option<PathBuf>,
    /// How far the signed timestamp may be from now.
    #[arg(long, default_value = "5m")]
    tolerance: String,
    /// Verify as if it were this time (RFC 3339), e.g. to check a captured request.
    #[arg(long)]
    at: Option<String>,
}

async fn open_store(args: &StoreArgs) -> anyhow::Result<Arc<dyn Store>> {
    open_store_with(args, &herald_server::config::StoreSettings::default()).await
}

/// The store, with its queues bounded as `[store]` in the config says.
async fn open_store_with(
    args: &StoreArgs,
    queues: &herald_server::config::StoreSettings,
) -> anyhow::Result<Arc<dyn Store>> {
    let url = args.database.trim();
    if is_postgres_url(url) {
        let store = PgStore::connect_with_queues(
            url,
            args.database_pool_size,
            queues.write_queue,
            queues.read_queue,
        )
        .await
        .context("opening the PostgreSQL database")?;
        return Ok(Arc::new(store));
    }
    let path = path_from_url(url);
    let store = SqliteStore::open_with(&path, queues.write_queue)
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
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // `HERALD_LOG_FORMAT=json`: one JSON object per line, with the request span's fields
    // (request_id, method, route) on every line logged inside a request.
    let json = std::env::var("HERALD_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        logs.init();
    }
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
        Command::Tenants {
            command: TenantsCommand::Create { name, remote },
        } => {
            let tenant = remote.client()?.create_tenant(&name).await?;
            println!("{}", tenant.id);
            Ok(())
        }
        Command::Keys {
            command:
                KeysCommand::Create {
                    role,
                    tenants,
                    types,
                    offline,
                    remote,
                    store,
                },
        } => {
            let scoped = !types.is_empty() || (role == "worker" && !tenants.is_empty());
            if role == "tenant" && tenants.len() != 1 {
                bail!("a tenant key belongs to one tenant: pass --tenant once");
            }
            if role == "admin" && (!types.is_empty() || !tenants.is_empty()) {
                bail!("only worker keys take --type and --tenant");
            }
            if role == "tenant" && !types.is_empty() {
                bail!("only worker keys take --type");
            }
            if offline {
                if scoped {
                    bail!("scoped worker keys are minted by a running Herald, which checks --type against its config and --tenant against its tenants: leave out --offline");
                }
                let role = match role.as_str() {
                    "admin" => Role::Admin,
                    "worker" => Role::Worker,
                    _ => bail!("--offline mints admin and worker keys only; tenant keys need a running Herald"),
                };
                let store = open_store(&store).await?;
                let key = create_key(&*store, role).await?;
                println!("{key}");
            } else if scoped {
                let key = remote.client()?.create_worker_key(&types, &tenants).await?;
                println!("{}", key.key);
            } else {
                let key = remote
                    .client()?
                    .create_key(&role, tenants.first().map(String::as_str))
                    .await?;
                println!("{}", key.key);
            }
            Ok(())
        }
        Command::Verify(args) => verify(args),
        Command::Listen(args) => listen::listen(args).await,
        Command::Contract {
            config,
            openapi,
            asyncapi,
            url,
        } => {
            let config = match &config {
                Some(path) => Config::load(path)?,
                None => Config::default(),
            };
            let out = if openapi {
                serde_json::to_string_pretty(&herald_server::contract::openapi(&config, &url))?
            } else if asyncapi {
                serde_json::to_string_pretty(&herald_server::contract::asyncapi(&config, &url))?
            } else {
                herald_server::contract::markdown(&config)
            };
            println!("{out}");
            Ok(())
        }
    }
}

fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let body = if args.body.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        buf
    } else {
        std::fs::read(&args.body)
            .with_context(|| format!("reading the body from {}", args.body.display()))?
    };
    let mut lines: Vec<String> = args.headers.clone();
    if let Some(path) = &args.headers_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading headers from {}", path.display()))?;
        lines.extend(text.lines().map(str::to_owned));
    }
    let headers: Vec<(String, String)> = lines
        .iter()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("HTTP/"))
        .map(|l| match l.split_once(':') {
            Some((k, v)) => Ok((k.trim().to_owned(), v.trim().to_owned())),
            None => Err(anyhow::anyhow!("header {l:?} is not `Name: value`")),
        })
        .collect::<anyhow::Result<_>>()?;
    let tolerance = herald_core::duration::parse(&args.tolerance)
        .map_err(|e| anyhow::anyhow!("--tolerance: {e}"))?;
    let now = match &args.at {
        Some(t) => herald_core::Timestamp::parse_rfc3339(t)
            .with_context(|| format!("--at {t:?} is not an RFC 3339 time"))?
            .unix_seconds(),
        None => SystemClock.now().unix_seconds(),
    };
    let verifier =
        herald_client::WebhookVerifier::with_secrets(args.secret.clone()).tolerance(tolerance);
    match verifier.verify_at(&headers, &body, now) {
        Ok(v) => {
            println!(
                "valid: {} signature, event {}, signed at unix {}",
                v.format.as_str(),
                v.event_id,
                v.timestamp
            );
            Ok(())
        }
        Err(e) => {
            eprintln!("invalid: {e}");
            std::process::exit(1);
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
            scope: Default::default(),
        })
        .await?;
    Ok(minted.plaintext)
}

async fn serve(
    listen: String,
    store_args: StoreArgs,
    config_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut config = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    // `HERALD_ADMIN_KEY` and `HERALD_SECRET_KEY` override the file's keys.
    config.apply_env(|name| std::env::var(name).ok())?;
    let store = open_store_with(&store_args, &config.store).await?;
    if config.admin_key.is_none() && store.count_live_admin_keys().await? == 0 {
        let key = create_key(&*store, Role::Admin).await?;
        // Printed once, on the first start of a fresh database; only its hash is stored.
        println!(
            "Created the first admin key (shown only this once, keep it safe):\n\n    {key}\n"
        );
    }
    let shutdown = CancellationToken::new();
    let state = AppState::new(store, config, Arc::new(SystemClock), None, shutdown.clone()).await?;
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
