//! The machine while a run is going: waiting for it to be idle, and how
//! much CPU other processes took.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use vpc_cni_bench::provenance::Machine;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_line() {
        assert_eq!(
            parse_cpu_line("cpu  100 5 50 800 40 3 2 0 0 0"),
            (160, 1000)
        );
        assert_eq!(parse_cpu_line(""), (0, 0));
    }

    #[test]
    fn proc_stat() {
        let text =
            "42 (tokio rt) worker) S 7 42 42 0 -1 4194560 1 0 0 0 150 25 0 0 20 0 4 0 9876 0 0";
        let st = parse_stat(text).unwrap();
        assert_eq!(st.ppid, 7);
        assert_eq!(st.ticks, 175);
        assert_eq!(st.start, 9876);
        assert!(!st.kernel_thread);
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 3 0 0 20 0 1 0 1 0 0";
        assert!(parse_stat(kthread).unwrap().kernel_thread);
        assert!(others().keys().all(|&p| p != std::process::id()));
    }
}

/// Waits until the machine's CPUs are at most `max_busy` (0..1) busy over
/// a 250 ms window, or `timeout` passes: creating hundreds of namespaces
/// leaves the kernel busy for a while, and the first calls measured should
/// not pay for it.
pub fn wait_until_idle(max_busy: f64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut last = cpu_ticks();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = cpu_ticks();
        let (busy, total) = (now.0 - last.0, now.1 - last.1);
        if total > 0 && (busy as f64) <= max_busy * total as f64 {
            return;
        }
        last = now;
    }
}

/// (busy, total) jiffies of all CPUs from `/proc/stat`.
fn cpu_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    parse_cpu_line(text.lines().next().unwrap_or(""))
}

fn parse_cpu_line(line: &str) -> (u64, u64) {
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle and iowait are the 4th and 5th numbers.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU time of the machine's other user processes (not this process or
/// its descendants, not kernel threads), to tell a quiet run from a noisy one.
#[derive(Debug, Clone)]
pub struct OtherLoad {
    started: Instant,
    /// pid → (start time, CPU ticks) at the start.
    before: HashMap<u32, (u64, u64)>,
}

/// What other processes did during the run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OtherCpu {
    /// CPU-seconds they used (a lower bound: processes that came and went
    /// in between are not seen).
    pub cpu_s: f64,
    /// Wall time of the run.
    pub wall_s: f64,
}

impl OtherCpu {
    /// Average number of CPUs they kept busy.
    pub fn cpus(&self) -> f64 {
        self.cpu_s / self.wall_s.max(f64::MIN_POSITIVE)
    }
}

impl OtherLoad {
    /// Takes the first snapshot.
    pub fn start() -> Self {
        OtherLoad {
            started: Instant::now(),
            before: others(),
        }
    }

    /// CPU time other processes used since [`OtherLoad::start`].
    pub fn since(&self) -> OtherCpu {
        let ticks: u64 = others()
            .into_iter()
            .map(|(pid, (start, now))| match self.before.get(&pid) {
                Some(&(s, then)) if s == start => now.saturating_sub(then),
                _ => now,
            })
            .sum();
        OtherCpu {
            cpu_s: ticks as f64 / TICKS_PER_SEC,
            wall_s: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// One process from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    ppid: u32,
    kernel_thread: bool,
    start: u64,
    ticks: u64,
}

/// Parses `/proc/<pid>/stat` (the name in parentheses may hold spaces).
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the name, 0-based: 1 ppid, 6 flags, 11 utime, 12 stime, 19 starttime.
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    const PF_KTHREAD: u64 = 0x0020_0000;
    Some(ProcStat {
        ppid: num(1)? as u32,
        kernel_thread: num(6)? & PF_KTHREAD != 0,
        ticks: num(11)? + num(12)?,
        start: num(19)?,
    })
}

/// pid → (start time, CPU ticks) of every user process outside this
/// process's tree.
fn others() -> HashMap<u32, (u64, u64)> {
    let mut all = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        if let Some(st) = stat.as_deref().and_then(parse_stat) {
            all.insert(pid, st);
        }
    }
    let me = std::process::id();
    let mine = |mut pid: u32| {
        for _ in 0..64 {
            if pid == me {
                return true;
            }
            match all.get(&pid) {
                Some(st) if st.ppid != 0 => pid = st.ppid,
                _ => return false,
            }
        }
        false
    };
    all.iter()
        .filter(|(&pid, st)| !st.kernel_thread && !mine(pid))
        .map(|(&pid, st)| (pid, (st.start, st.ticks)))
        .collect()
}
