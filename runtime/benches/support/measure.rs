//! What the throughput bench measures of its own process (`/proc/self`) and of Redis (`INFO`).

/// The peak resident set size of this process, in MiB.
pub(crate) fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU time (user and system) this process has used, in seconds (`/proc/self/stat`, ticks of
/// 10 ms: enough over a run of seconds).
pub(crate) fn own_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15: indices 11 and 12 counting from state.
    (ticks(11) + ticks(12)) / 100.0
}

/// Starts a new peak: the peak resident set size becomes the current one.
pub(crate) fn reset_peak_rss() {
    // Linux: writing 5 resets the peak resident set size to the current one.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Counters from `INFO commandstats` and `INFO memory`.
pub(crate) struct RedisStats {
    /// Every command executed, the ones scripts run included.
    pub(crate) commands: u64,
    /// Script calls (EVALSHA).
    pub(crate) script_calls: u64,
    pub(crate) used_memory: u64,
    /// Time spent in scripts (EVALSHA), in microseconds.
    pub(crate) script_usec: u64,
    /// Redis's CPU time (user and system), in seconds.
    pub(crate) cpu_secs: f64,
}

impl RedisStats {
    pub(crate) fn read(url: &str) -> Self {
        let mut conn = redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("redis");
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut conn)
            .expect("info");
        let memory: String = redis::cmd("INFO")
            .arg("memory")
            .query(&mut conn)
            .expect("info");
        let cpu: String = redis::cmd("INFO")
            .arg("cpu")
            .query(&mut conn)
            .expect("info");
        let field = |rest: &str, name: &str| -> u64 {
            rest.split(',')
                .find_map(|f| f.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let calls = |rest: &str| field(rest, "calls=");
        let mut commands = 0;
        let mut script_calls = 0;
        let mut script_usec = 0;
        for line in stats.lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            commands += calls(rest);
            if name == "evalsha" {
                script_calls += calls(rest);
                script_usec += field(rest, "usec=");
            }
        }
        let used_memory = memory
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let cpu_secs = cpu
            .lines()
            .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
            .filter_map(|l| l.split_once(':')?.1.trim().parse::<f64>().ok())
            .sum();
        Self {
            commands,
            script_calls,
            used_memory,
            script_usec,
            cpu_secs,
        }
    }
}
