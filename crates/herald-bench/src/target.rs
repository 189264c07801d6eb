//! The Herald under test: a child `herald serve` on 127.0.0.1 port 0 with a temp
//! database and a config allowing loopback destinations, or one already running at `--url`.
//!
//! With a PostgreSQL URL, each child gets a database of its own (`herald_bench_…`,
//! created through that URL and dropped when the child is gone), so no run sees another's
//! rows, unless `--no-fresh-database` asks to use the URL as it is.

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Operation type the `lro` scenario triggers through `POST /bench-jobs`.
pub const BENCH_OP_TYPE: &str = "bench";
pub const BENCH_TRIGGER: &str = "/bench-jobs";

const CONFIG: &str = r#"
[[operation_types]]
name = "bench"
trigger = "POST /bench-jobs"
lease = "60s"
max_attempts = 3

[webhooks]
allow_private_destinations = true
timeout = "5s"
# Short waits so the backlog scenario measures draining, not the retry schedule.
schedule = ["0s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]
"#;

pub struct Target {
    pub url: String,
    pub admin_key: String,
    /// The child, when the bench started Herald itself.
    child: Option<Child>,
    dir: Option<PathBuf>,
    /// The fresh PostgreSQL database (admin URL, name) to drop once the child is gone.
    fresh: Option<(String, String)>,
    /// The database URL the child was given.
    pub database_url: Option<String>,
}

/// Only loopback: the load generator must never point at another machine.
pub fn check_loopback(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .context("--url must start with http://")?;
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    if host != "127.0.0.1" && host != "localhost" {
        bail!("the load generator only targets 127.0.0.1 (got {host:?})");
    }
    Ok(())
}

impl Target {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The fresh PostgreSQL database made for this Herald, if any.
    pub fn database_name(&self) -> Option<&str> {
        self.fresh.as_ref().map(|(_, name)| name.as_str())
    }

    pub fn existing(url: &str, admin_key: &str) -> anyhow::Result<Self> {
        check_loopback(url)?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            admin_key: admin_key.to_owned(),
            child: None,
            dir: None,
            fresh: None,
            database_url: None,
        })
    }

    /// Starts `herald serve` and waits for its "listening" line.
    pub fn spawn(
        binary: &PathBuf,
        database: Option<&str>,
        fresh_database: bool,
    ) -> anyhow::Result<Self> {
        Self::launch(binary, database, fresh_database, "", |_| Ok(()))
    }

    /// The same on a temp SQLite file, with `extra_config` appended to the bench config
    /// and `prepare` run on the directory (which will hold `herald.db`) before Herald starts.
    pub fn spawn_with(
        binary: &PathBuf,
        extra_config: &str,
        prepare: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        Self::launch(binary, None, false, extra_config, prepare)
    }

    fn launch(
        binary: &PathBuf,
        database: Option<&str>,
        fresh_database: bool,
        extra_config: &str,
        prepare: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "herald-bench-{}-{}",
            std::process::id(),
            ulid::Ulid::new()
        ));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("herald.toml");
        std::fs::write(&config, format!("{CONFIG}\n{extra_config}"))?;
        if let Err(e) = prepare(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let mut fresh = None;
        let database = match database {
            Some(url) if fresh_database && herald_store::postgres::is_postgres_url(url) => {
                let name = format!(
                    "herald_bench_{}_{}",
                    std::process::id(),
                    ulid::Ulid::new().to_string().to_lowercase()
                );
                let fresh_url = postgres_admin(url, name.clone(), true)?
                    .context("creating the fresh database gave no URL")?;
                fresh = Some((url.to_owned(), name));
                fresh_url
            }
            Some(url) => url.to_owned(),
            None => format!("sqlite://{}", dir.join("herald.db").display()),
        };
        // From here on, dropping `guard` drops the fresh database if we fail to start.
        let mut guard = Self {
            url: String::new(),
            admin_key: String::new(),
            child: None,
            dir: Some(dir),
            fresh,
            database_url: Some(database.clone()),
        };
        let admin_key = format!("bench-admin-{}", ulid::Ulid::new());
        let child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--database", &database])
            .arg("--config")
            .arg(&config)
            .env("HERALD_ADMIN_KEY", &admin_key)
            .env(
                "HERALD_LOG",
                std::env::var("HERALD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (build it first: cargo build --release -p herald)",
                    binary.display()
                )
            })?;
        let child = guard.child.insert(child);
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("herald listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => url,
            Err(_) => bail!("herald did not report its address within 20s"),
        };
        check_loopback(&url)?;
        guard.url = url;
        guard.admin_key = admin_key;
        Ok(guard)
    }
}

/// Creates (`create`) or drops the database `name` through `admin_url`, on a runtime of
/// its own in a thread of its own, so it can be called from `Drop` and from async code.
pub fn postgres_admin(
    admin_url: &str,
    name: String,
    create: bool,
) -> anyhow::Result<Option<String>> {
    let admin_url = admin_url.to_owned();
    std::thread::spawn(move || -> anyhow::Result<Option<String>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            if create {
                Ok(Some(
                    herald_store::postgres::create_database(&admin_url, &name).await?,
                ))
            } else {
                herald_store::postgres::drop_database(&admin_url, &name).await?;
                Ok(None)
            }
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the PostgreSQL admin thread panicked"))?
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((admin_url, name)) = self.fresh.take() {
            if let Err(e) = postgres_admin(&admin_url, name.clone(), false) {
                eprintln!("herald-bench: could not drop database {name}: {e:#}");
            }
        }
    }
}
