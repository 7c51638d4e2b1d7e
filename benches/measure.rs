//! What the end-to-end benches read of a contender's process, and how they summarise rounds:
//! CPU time and peak RSS from `/proc`, medians, settings from the environment, and whether
//! the Python contender can run. Shared by the
//! pipeline bench's two lanes (`pipeline.rs` on the embedded broker, `drain.rs` on Apache Kafka).

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// User plus system CPU seconds of a process so far, from `/proc/PID/stat`; 0 once it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces): state is
    // field 3, utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    })
}

/// Peak resident set size of a process so far (`VmHWM`), in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The median (the upper one of an even count); NaN for none.
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// A numeric setting from the environment, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

/// The last 20 lines of a contender's log.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Stops a contender as Kubernetes would (SIGTERM) and checks it exits 0 within 60 s.
pub fn terminate(mut child: Child, label: &str, log: &Path) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "{label} exited with {status}:\n{}",
                tail(log)
            );
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{label} did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether Debian's python3-confluent-kafka, which `benches/python_fanout.py` needs, is there.
pub fn python_available() -> Result<(), String> {
    let output = Command::new("/usr/bin/python3")
        .args(["-c", "import confluent_kafka"])
        .output()
        .map_err(|e| format!("/usr/bin/python3: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "python3-confluent-kafka is not installed (make setup installs it): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
