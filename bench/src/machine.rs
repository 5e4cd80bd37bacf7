//! The machine a result was measured on (CPU count and model, kernel, memory, load average) and
//! the date, for the results file: numbers without their machine mean little.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the results file says about the machine.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPUs available to this process.
    pub cpus: usize,
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Total memory in MiB.
    pub mem_mib: u64,
}

impl Machine {
    /// Reads the machine's description (fields that cannot be read say `unknown`).
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let mem_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kib| kib / 1024);
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
            mem_mib,
        }
    }

    /// One line: `2 CPUs (model), Linux 6.x, 4096 MiB`.
    pub fn summary(&self) -> String {
        format!(
            "{} CPUs ({}), Linux {}, {} MiB RAM",
            self.cpus, self.cpu_model, self.kernel, self.mem_mib
        )
    }
}

/// The 1-, 5- and 15-minute load averages, if `/proc/loadavg` is readable.
pub fn loadavg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    parse_loadavg(&text)
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    Some([it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?])
}

/// Waits (polling every 10 s) until the 1-minute load average is below `below` or `max_wait`
/// has passed; returns the load seen last and whether it got below.
pub async fn wait_for_quiet(below: f64, max_wait: Duration) -> (f64, bool) {
    let deadline = tokio::time::Instant::now() + max_wait;
    loop {
        let load = loadavg().map_or(0.0, |l| l[0]);
        if load < below {
            return (load, true);
        }
        if tokio::time::Instant::now() >= deadline {
            return (load, false);
        }
        eprintln!("load average {load:.2} >= {below}: waiting for a quieter machine");
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// The UTC date and time now, `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

fn utc(secs: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs);
    // `YYYY-MM-DDTHH:MM:SSZ` → `YYYY-MM-DD HH:MM UTC`.
    let rfc = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} {} UTC", &rfc[..10], &rfc[11..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_767_225_600 + 3_661), "2026-01-01 01:01 UTC");
    }

    #[test]
    fn loadavg_parses_and_rejects_garbage() {
        assert_eq!(
            parse_loadavg("0.52 1.10 2.00 3/200 12345\n"),
            Some([0.52, 1.10, 2.00])
        );
        assert_eq!(parse_loadavg("x y z"), None);
        assert_eq!(parse_loadavg("1.0"), None);
    }

    #[test]
    fn machine_is_described() {
        let m = Machine::detect();
        assert!(m.cpus >= 1);
        assert!(m.summary().contains("CPUs"));
    }
}
