//! What machine the numbers come from, and when.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The machine and the date of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Online CPUs.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// `uname -srm`.
    pub kernel: String,
    /// MemTotal from /proc/meminfo, in GiB.
    pub memory_gib: f64,
    /// Start of the run, UTC, `YYYY-MM-DD HH:MM:SS UTC`.
    pub date_utc: String,
    /// The Debian package version of the reference plugins.
    pub reference_version: String,
    /// 1-, 5- and 15-minute load averages at the start: other work on the
    /// machine makes every number noisier.
    pub load_at_start: [f64; 3],
}

impl Machine {
    /// Reads it all now.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            kernel: command_line("uname", &["-srm"]).unwrap_or_else(|| "unknown".into()),
            memory_gib: mem_total_kib(&meminfo).map_or(0.0, |k| k as f64 / (1024.0 * 1024.0)),
            date_utc: utc_string(SystemTime::now()),
            reference_version: command_line(
                "dpkg-query",
                &["-W", "-f=${Version}", "containernetworking-plugins"],
            )
            .unwrap_or_else(|| "unknown".into()),
            load_at_start: load_average(),
        }
    }

    /// One line for a report.
    pub fn describe(&self) -> String {
        let [l1, l5, l15] = self.load_at_start;
        format!(
            "{} CPUs ({}), {:.1} GiB memory, {} (load average at start {l1:.2} {l5:.2} {l15:.2})",
            self.nproc, self.cpu_model, self.memory_gib, self.kernel
        )
    }
}

/// `/proc/loadavg`'s first three fields.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|f| f.parse().unwrap_or(0.0));
    [(); 3].map(|()| it.next().unwrap_or(0.0))
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_string(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(utc_string(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_661); // 2000-02-29 01:01:01
        assert_eq!(utc_string(t), "2000-02-29 01:01:01 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_767_225_599); // 2025-12-31 23:59:59
        assert_eq!(utc_string(t), "2025-12-31 23:59:59 UTC");
    }

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

    #[test]
    fn proc_files() {
        let cpu = "processor\t: 0\nmodel name\t: AMD EPYC 7R13 Processor\nflags: x\n";
        assert_eq!(cpu_model(cpu).as_deref(), Some("AMD EPYC 7R13 Processor"));
        let mem = "MemTotal:       24576000 kB\nMemFree: 1 kB\n";
        assert_eq!(mem_total_kib(mem), Some(24_576_000));
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
