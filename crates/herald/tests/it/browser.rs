//! The dashboard and the tenant portal in a real headless browser (Debian's chromium driven
//! by playwright-core): log in, find a failed delivery, press Redeliver, see it succeed; open
//! a portal link, add a filtered endpoint, send a test event, replay a failure. The tests
//! themselves are `tests/browser/*.test.mjs`; this runs them with the `herald` binary cargo
//! just built.
//! It needs `scripts/install-browser-deps.sh` and runs when `HERALD_TEST_BROWSER=1`.

use std::process::Command;

#[test]
fn dashboard_in_a_headless_browser() {
    if std::env::var("HERALD_TEST_BROWSER").as_deref() != Ok("1") {
        println!("skipped: set HERALD_TEST_BROWSER=1 (after scripts/install-browser-deps.sh) to run the browser test");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tools =
        std::env::var("HERALD_TOOLS_DIR").unwrap_or_else(|_| "/var/cache/herald-tools".into());
    let status = Command::new("node")
        .args(["--test", "--test-reporter=spec", "tests/browser/"])
        .current_dir(&root)
        .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
        .env("HERALD_TOOLS_DIR", tools)
        .status()
        .expect("node is installed");
    assert!(status.success(), "the browser test failed");
}
