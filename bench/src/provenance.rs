//! Where and when a benchmark ran: the machine, the date, the load, and
//! the commit it measured. Every section of `bench/RESULTS.md` opens with
//! this, so a number that no longer describes `main` can be told apart.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// The commit of the source tree the benchmark was built from, with
    /// `-dirty` when files other than the results differ from it.
    pub commit: String,
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
            commit: commit(Path::new(env!("CARGO_MANIFEST_DIR"))),
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

    /// "commit `abc123`, <date>, <machine>": the opening of a results section.
    pub fn headline(&self) -> String {
        format!(
            "commit `{}`, {}, {}",
            self.commit,
            self.date_utc,
            self.describe()
        )
    }
}

/// The results this repository keeps; rewriting them does not make the
/// measured tree differ from its commit.
const RESULT_PATHS: [&str; 2] = ["bench/RESULTS.md", "bench/results/"];

/// `git rev-parse --short=12 HEAD` of the tree holding `dir`, with `-dirty`
/// if anything but the results differs from it; "unknown" outside git.
pub fn commit(dir: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let Some(head) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no", "--", ":/"])
        .is_some_and(|s| is_dirty(&s));
    format!("{}{}", head.trim(), if dirty { "-dirty" } else { "" })
}

/// Whether `git status --porcelain` lists a change outside the results.
fn is_dirty(porcelain: &str) -> bool {
    porcelain
        .lines()
        .filter_map(|l| l.get(3..))
        .any(|path| !RESULT_PATHS.iter().any(|r| path.starts_with(r)))
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
    fn proc_files() {
        let cpu = "processor\t: 0\nmodel name\t: AMD EPYC 7R13 Processor\nflags: x\n";
        assert_eq!(cpu_model(cpu).as_deref(), Some("AMD EPYC 7R13 Processor"));
        let mem = "MemTotal:       24576000 kB\nMemFree: 1 kB\n";
        assert_eq!(mem_total_kib(mem), Some(24_576_000));
    }

    #[test]
    fn results_do_not_make_a_tree_dirty() {
        assert!(!is_dirty(
            " M bench/RESULTS.md\n M bench/results/pod-churn.json\n"
        ));
        assert!(is_dirty(" M bench/RESULTS.md\n M ipamd/src/pod.rs\n"));
        assert!(!is_dirty(""));
    }

    #[test]
    fn this_tree_has_a_commit() {
        let c = commit(Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(c == "unknown" || c.len() >= 12, "{c}");
    }
}
