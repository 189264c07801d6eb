//! The report: the machine it ran on, and the printed table's rows.

use crate::load::LoadResult;
use serde_json::{json, Value};

/// The machine: cores, CPU model and memory.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory": mem,
    })
}

/// One row of the printed table: measurement, figure, detail, load average.
pub struct Row(pub String, pub String, pub String, pub String);

/// A closed loop's detail column: its latency, its errors and `fraction` (of a limit).
pub fn load_detail(load: &LoadResult, fraction: String) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, {} errors; {}",
        load.latency.p50_ms, load.latency.p99_ms, load.errors, fraction
    )
}
