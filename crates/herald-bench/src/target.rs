//! The Herald under test: a child `herald serve` on 127.0.0.1 port 0 with a temp
//! database and a config allowing loopback destinations, or one already running at `--url`.

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

    pub fn existing(url: &str, admin_key: &str) -> anyhow::Result<Self> {
        check_loopback(url)?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            admin_key: admin_key.to_owned(),
            child: None,
            dir: None,
        })
    }

    /// Starts `herald serve` and waits for its "listening" line.
    pub fn spawn(binary: &PathBuf, database: Option<&str>) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "herald-bench-{}-{}",
            std::process::id(),
            ulid::Ulid::new()
        ));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("herald.toml");
        std::fs::write(&config, CONFIG)?;
        let database = match database {
            Some(url) => url.to_owned(),
            None => format!("sqlite://{}", dir.join("herald.db").display()),
        };
        let admin_key = format!("bench-admin-{}", ulid::Ulid::new());
        let mut child = Command::new(binary)
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
            Err(_) => {
                let _ = child.kill();
                bail!("herald did not report its address within 20s");
            }
        };
        check_loopback(&url)?;
        Ok(Self {
            url,
            admin_key,
            child: Some(child),
            dir: Some(dir),
        })
    }
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
    }
}
