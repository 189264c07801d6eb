//! CPU time from `/proc`: user + system time (fields 14 and 15 of `stat`, in clock ticks)
//! of a process, of one of the bench's own threads, or of every `postgres` process.

use std::collections::HashMap;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, normally 100).
pub fn ticks_per_second() -> f64 {
    #[cfg(target_os = "linux")]
    {
        extern "C" {
            fn sysconf(name: std::os::raw::c_int) -> std::os::raw::c_long;
        }
        const SC_CLK_TCK: std::os::raw::c_int = 2; // <bits/confname.h>, glibc and musl
                                                   // SAFETY: sysconf takes an int and returns a long; it has no other effect.
        let ticks = unsafe { sysconf(SC_CLK_TCK) };
        if ticks > 0 {
            return ticks as f64;
        }
    }
    100.0
}

/// utime + stime, in ticks, out of the text of a `stat` file. The command name (field 2)
/// is in parentheses and may hold spaces, so fields are counted after its last `)`.
fn ticks_of(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 (state) is the first
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn seconds_of(path: &str) -> Option<f64> {
    let ticks = ticks_of(&std::fs::read_to_string(path).ok()?)?;
    Some(ticks as f64 / ticks_per_second())
}

/// CPU seconds of process `pid` so far (all its threads).
pub fn process_seconds(pid: u32) -> Option<f64> {
    seconds_of(&format!("/proc/{pid}/stat"))
}

/// CPU seconds of this process so far.
pub fn own_seconds() -> Option<f64> {
    seconds_of("/proc/self/stat")
}

/// CPU seconds so far of this process's thread `tid`.
pub fn thread_seconds(tid: u32) -> Option<f64> {
    seconds_of(&format!("/proc/self/task/{tid}/stat"))
}

/// The calling thread's id (from the `/proc/thread-self` link, `PID/task/TID`).
pub fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// CPU seconds so far of this process's threads whose name starts with `prefix`.
pub fn threads_named_seconds(prefix: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(prefix) {
            if let Some(s) = seconds_of(&path.join("stat").to_string_lossy()) {
                total += s;
                found = true;
            }
        }
    }
    found.then_some(total)
}

/// CPU seconds so far of every `postgres` process, by pid, and whether its command line
/// names `database` (a backend serving that database; the others are the server's own
/// processes and backends of other databases).
pub fn postgres_processes(database: Option<&str>) -> HashMap<u32, (f64, bool)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim_end() != "postgres" {
            continue;
        }
        let Some(seconds) = process_seconds(pid) else {
            continue;
        };
        let ours = database.is_some_and(|db| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&format!(" {db} ")))
                .unwrap_or(false)
        });
        out.insert(pid, (seconds, ours));
    }
    out
}

/// CPU time (seconds) used between two [`postgres_processes`] snapshots: (backends of
/// the database, all postgres processes). A process that started in between counts from
/// zero; one that ended in between is missed.
pub fn postgres_delta(
    before: &HashMap<u32, (f64, bool)>,
    after: &HashMap<u32, (f64, bool)>,
) -> (f64, f64) {
    let (mut ours, mut all) = (0.0, 0.0);
    for (pid, (seconds, is_ours)) in after {
        let d = (seconds - before.get(pid).map(|b| b.0).unwrap_or(0.0)).max(0.0);
        all += d;
        if *is_ours {
            ours += d;
        }
    }
    (ours, all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat =
            "1234 (tokio worker) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 123 0";
        assert_eq!(ticks_of(stat), Some(325));
    }

    #[test]
    fn reads_own_times() {
        assert!(own_seconds().is_some());
        let tid = current_tid().expect("tid");
        assert!(thread_seconds(tid).is_some());
        assert!(ticks_per_second() > 0.0);
    }
}
