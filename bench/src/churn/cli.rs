//! Command-line options.

use std::path::PathBuf;

use super::Result;

/// The most pods one simulated m5.24xlarge holds (15 ENIs × 49 secondary IPs).
pub const MAX_PODS: usize = 735;

/// `--help`.
pub const USAGE: &str = "usage: pod-churn [options]   (as root)

Runs the same pod ADD/DEL workloads against vpc-cni (plugin + ipamd on the
simulated cloud) and against ptp + host-local from /usr/lib/cni, in one node
network namespace, and writes bench/results/pod-churn.{json,md},
bench/results/pod-churn-latency.svg and the pod-churn section of
bench/RESULTS.md.

options:
  --pods N         sequential workload: ADD N pods, then DEL them (default 500, at most 735)
  --churn-pods N   concurrent churn: ADD+DEL pairs in total per plugin (default 400)
  --workers N      concurrent churn: worker threads (default 8)
  --burst N        ADDs started at the same instant on a warm node (default 30)
  --bursts N       bursts per plugin (default 10)
  --quick          small counts for a smoke run; results go to bench/results/quick/
                   and bench/RESULTS.md is left alone
  --bin-dir DIR    where vpc-cni and ipamd are (default: this executable's directory)
  --durability M   ipamd's VPC_CNI_DURABILITY: `sync` (ADD answers once its allocation
                   is on disk) or `async`; results go to bench/results/durability-M/
                   and bench/RESULTS.md is left alone (its durability section
                   compares the two runs)
  --before COMMIT  the binaries in --bin-dir were built from COMMIT, an earlier tree:
                   results go to bench/results/before/, bench/RESULTS.md is left
                   alone, and later runs show that run's headline and breakdown
                   beside their own (the cold-node burst (f) is skipped)
  --versus COMMIT DIR
                   the reference is vpc-cni built from COMMIT, its binaries in DIR
                   (its own ipamd in a second node namespace), interleaved call by
                   call with this build: a before/after in one run; results go to
                   bench/results/versus/ and bench/RESULTS.md is left alone
  -h, --help       this text
";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Pods of the sequential workload.
    pub pods: usize,
    /// ADD+DEL pairs of the churn workload, per plugin.
    pub churn_pods: usize,
    /// Churn worker threads.
    pub workers: usize,
    /// Churn rounds per plugin (the plugins alternate round by round).
    pub churn_rounds: usize,
    /// VERSION execs per plugin.
    pub starts: usize,
    /// In-process STATUS round trips.
    pub round_trips: usize,
    /// Concurrent ADDs of one burst.
    pub burst: usize,
    /// Bursts per implementation.
    pub bursts: usize,
    /// A smoke run.
    pub quick: bool,
    /// Where `vpc-cni` and `ipamd` are.
    pub bin_dir: PathBuf,
    /// Where the result files go.
    pub out_dir: PathBuf,
    /// Whether to rewrite the pod-churn section of `bench/RESULTS.md`.
    pub update_results_md: bool,
    /// `VPC_CNI_DURABILITY` for ipamd (`None`: its default, `sync`).
    pub durability: Option<String>,
    /// The commit an earlier build in `bin_dir` came from (`--before`).
    pub before: Option<String>,
    /// An earlier build (commit, binaries) to be the reference (`--versus`).
    pub versus: Option<(String, PathBuf)>,
}

/// The outcome of parsing.
#[derive(Debug)]
pub enum Parsed {
    /// Run with these options.
    Run(Box<Options>),
    /// Print the usage.
    Help,
}

/// The `bench/` directory of the source tree this binary was built from.
pub fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where a `--before` run's results go.
pub fn before_dir() -> PathBuf {
    bench_dir().join("results").join("before")
}

impl Options {
    /// Pods of the in-process workload (d): enough for a stable mean,
    /// fewer than the sequential workload's.
    pub fn in_process_pods(&self) -> usize {
        (self.pods / 5).clamp(10, 100)
    }

    fn defaults(quick: bool) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let bin_dir = exe
            .parent()
            .ok_or("cannot tell the directory of this executable")?
            .to_path_buf();
        let results = bench_dir().join("results");
        Ok(if quick {
            Options {
                pods: 40,
                churn_pods: 64,
                workers: 8,
                churn_rounds: 2,
                starts: 30,
                round_trips: 300,
                burst: 30,
                bursts: 2,
                quick,
                bin_dir,
                out_dir: results.join("quick"),
                update_results_md: false,
                durability: None,
                before: None,
                versus: None,
            }
        } else {
            Options {
                pods: 500,
                churn_pods: 400,
                workers: 8,
                churn_rounds: 4,
                starts: 200,
                round_trips: 2000,
                burst: 30,
                bursts: 10,
                quick,
                bin_dir,
                out_dir: results,
                update_results_md: true,
                durability: None,
                before: None,
                versus: None,
            }
        })
    }

    /// Parses the arguments (without the program name). `--quick` sets the
    /// defaults; explicit counts win over them whatever the order.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed> {
        let args: Vec<String> = args.into_iter().collect();
        if args.iter().any(|a| a == "-h" || a == "--help") {
            return Ok(Parsed::Help);
        }
        let mut o = Self::defaults(args.iter().any(|a| a == "--quick"))?;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| format!("{arg} needs a value"))
                    .cloned()
            };
            match arg.as_str() {
                "--quick" => {}
                "--pods" => o.pods = count(arg, &value()?)?,
                "--churn-pods" => o.churn_pods = count(arg, &value()?)?,
                "--workers" => o.workers = count(arg, &value()?)?,
                "--burst" => o.burst = count(arg, &value()?)?,
                "--bursts" => o.bursts = count(arg, &value()?)?,
                "--bin-dir" => o.bin_dir = PathBuf::from(value()?),
                "--durability" => {
                    let mode = value()?;
                    if mode != "sync" && mode != "async" {
                        return Err(
                            format!("--durability takes sync or async, got {mode:?}").into()
                        );
                    }
                    o.out_dir = bench_dir()
                        .join("results")
                        .join(format!("durability-{mode}"));
                    o.update_results_md = false;
                    o.durability = Some(mode);
                }
                "--before" => {
                    o.before = Some(value()?);
                    o.out_dir = before_dir();
                    o.update_results_md = false;
                }
                "--versus" => {
                    let commit = value()?;
                    let dir = PathBuf::from(value()?);
                    o.versus = Some((commit, dir));
                    o.out_dir = bench_dir().join("results").join("versus");
                    o.update_results_md = false;
                }
                other => return Err(format!("unknown argument {other:?}").into()),
            }
        }
        o.validate()?;
        Ok(Parsed::Run(Box::new(o)))
    }

    fn validate(&self) -> Result<()> {
        if self.pods > MAX_PODS {
            return Err(format!(
                "--pods {} is more than the simulated m5.24xlarge holds ({MAX_PODS})",
                self.pods
            )
            .into());
        }
        if self.workers > self.churn_pods {
            return Err(format!(
                "--workers {} is more than --churn-pods {}",
                self.workers, self.churn_pods
            )
            .into());
        }
        Ok(())
    }

    /// How many of our pods exist at once at most (sizes ipamd's pool).
    pub fn peak_pods(&self) -> usize {
        self.pods
            .max(self.workers)
            .max(self.in_process_pods())
            .max(self.burst)
    }
}

fn count(flag: &str, value: &str) -> Result<usize> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} takes a positive integer, got {value:?}").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(args: &[&str]) -> Result<Parsed> {
        Options::parse(args.iter().map(|s| s.to_string()))
    }

    fn run(args: &[&str]) -> Options {
        match parse(args).unwrap() {
            Parsed::Run(o) => *o,
            Parsed::Help => panic!("help"),
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let o = run(&[]);
        assert_eq!((o.pods, o.churn_pods, o.workers), (500, 400, 8));
        assert!(o.update_results_md);
        let q = run(&["--pods", "12", "--quick"]);
        assert_eq!(q.pods, 12);
        assert!(q.quick && !q.update_results_md);
        assert!(q.out_dir.ends_with("results/quick"));
    }

    #[test]
    fn rejects_bad_values() {
        assert!(parse(&["--pods"]).is_err());
        assert!(parse(&["--pods", "0"]).is_err());
        assert!(parse(&["--pods", "800"]).is_err());
        assert!(parse(&["--workers", "9", "--churn-pods", "4"]).is_err());
        assert!(parse(&["--frobnicate"]).is_err());
        assert!(parse(&["--durability", "maybe"]).is_err());
        let d = run(&["--durability", "async"]);
        assert_eq!(d.durability.as_deref(), Some("async"));
        assert!(!d.update_results_md && d.out_dir.ends_with("results/durability-async"));
        assert!(matches!(parse(&["--help"]).unwrap(), Parsed::Help));
        assert!(parse(&["--before"]).is_err());
    }

    #[test]
    fn a_versus_run_names_the_earlier_build() {
        let v = run(&["--versus", "1b860c2", "/old/bin", "--quick"]);
        let (commit, dir) = v.versus.clone().unwrap();
        assert_eq!(
            (commit.as_str(), dir.as_path()),
            ("1b860c2", Path::new("/old/bin"))
        );
        assert!(!v.update_results_md && v.out_dir.ends_with("results/versus"));
        assert!(parse(&["--versus", "1b860c2"]).is_err());
    }

    #[test]
    fn a_before_run_keeps_to_its_own_dir() {
        let b = run(&["--before", "1b860c2", "--quick"]);
        assert_eq!(b.before.as_deref(), Some("1b860c2"));
        assert!(!b.update_results_md && b.out_dir.ends_with("results/before"));
    }
}
