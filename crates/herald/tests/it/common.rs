//! The real `herald serve` in a child process, on port 0 over `dir/herald.db` (or a
//! PostgreSQL database), for the process-level tests (crash, restart, signals, nodes).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub struct Herald {
    pub child: Child,
    pub base: String,
}

impl Herald {
    /// Writes `config` beside the database, starts Herald with `admin` as its admin key,
    /// and waits until it listens.
    pub fn start(dir: &Path, config: &str, admin: &str, log: &str) -> Self {
        Self::start_under(&[], dir, config, admin, log)
    }

    /// The same, run by `wrapper` (a command that ends by running the rest of its
    /// arguments, such as `unshare --mount sh -c '…; exec "$@"' sh`).
    pub fn start_under(wrapper: &[&str], dir: &Path, config: &str, admin: &str, log: &str) -> Self {
        let config_path = dir.join("herald.toml");
        std::fs::write(&config_path, config).unwrap();
        let database = format!("sqlite://{}", dir.join("herald.db").display());
        Self::start_on(wrapper, &database, &config_path, admin, log)
    }

    /// Starts Herald on `database` (a `sqlite://` path or a PostgreSQL URL) with the
    /// config file at `config_path`, run by `wrapper` when it is not empty.
    pub fn start_on(
        wrapper: &[&str],
        database: &str,
        config_path: &Path,
        admin: &str,
        log: &str,
    ) -> Self {
        let herald = env!("CARGO_BIN_EXE_herald");
        let mut command = match wrapper.split_first() {
            None => Command::new(herald),
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(herald);
                c
            }
        };
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--database", database])
            .arg("--config")
            .arg(config_path)
            .env("HERALD_ADMIN_KEY", admin)
            .env("HERALD_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("herald exited before listening")
                .unwrap();
            if let Some(addr) = line.strip_prefix("herald listening on ") {
                break addr.trim().to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Herald { child, base }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        self.child.wait().unwrap();
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
