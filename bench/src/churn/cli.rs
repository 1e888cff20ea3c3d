//! Command-line options.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};

use super::Result;

/// The most pods one simulated m5.24xlarge holds (15 ENIs × 49 secondary IPs).
pub const MAX_PODS: usize = 735;

/// The command line; [`Options::parse`] turns it into [`Options`].
#[derive(Debug, Parser)]
#[command(
    name = "pod-churn",
    about = "The pod ADD/DEL benchmark of vpc-cni against ptp + host-local (run as root)",
    long_about = "Runs the same pod ADD/DEL workloads against vpc-cni (plugin + ipamd on the
simulated cloud) and against ptp + host-local from /usr/lib/cni, in one node
network namespace, and writes bench/results/pod-churn.{json,md},
bench/results/pod-churn-latency.svg and the pod-churn section of
bench/RESULTS.md (run as root).",
    // As before clap: a flag given twice takes its last value.
    args_override_self = true
)]
struct Cli {
    /// Sequential workload: ADD N pods, then DEL them (default 500, --quick 40; at most 735)
    #[arg(long, value_name = "N", value_parser = positive)]
    pods: Option<usize>,
    /// Concurrent churn: ADD+DEL pairs in total per plugin (default 400, --quick 64)
    #[arg(long, value_name = "N", value_parser = positive)]
    churn_pods: Option<usize>,
    /// Concurrent churn: worker threads (default 8)
    #[arg(long, value_name = "N", value_parser = positive)]
    workers: Option<usize>,
    /// ADDs started at the same instant on a warm node (default 30)
    #[arg(long, value_name = "N", value_parser = positive)]
    burst: Option<usize>,
    /// Bursts per plugin (default 10, --quick 2)
    #[arg(long, value_name = "N", value_parser = positive)]
    bursts: Option<usize>,
    /// Small counts for a smoke run; results go to bench/results/quick/ and
    /// bench/RESULTS.md is left alone
    #[arg(long)]
    quick: bool,
    /// Where vpc-cni and ipamd are (default: this executable's directory)
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// ipamd's VPC_CNI_DURABILITY: `sync` (ADD answers once its allocation is
    /// on disk) or `async`; results go to bench/results/durability-M/ and
    /// bench/RESULTS.md is left alone (its durability section compares the
    /// two runs)
    #[arg(long, value_name = "M", value_parser = ["sync", "async"])]
    durability: Option<String>,
    /// The binaries in --bin-dir were built from COMMIT, an earlier tree:
    /// results go to bench/results/before/, bench/RESULTS.md is left alone,
    /// and later runs show that run's headline and breakdown beside their
    /// own (the cold-node burst (f) is skipped)
    #[arg(long, value_name = "COMMIT")]
    before: Option<String>,
    /// The reference is vpc-cni built from COMMIT, its binaries in DIR (its
    /// own ipamd in a second node namespace), interleaved call by call with
    /// this build: a before/after in one run; results go to
    /// bench/results/versus/ and bench/RESULTS.md is left alone
    #[arg(long, num_args = 2, value_names = ["COMMIT", "DIR"])]
    versus: Option<Vec<String>>,
}

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
    /// defaults; explicit counts win over them whatever the order. Of
    /// `--durability`, `--before` and `--versus`, the last given picks where
    /// the results go. `--help` and every mistake come back as the
    /// [`clap::Error`] to `exit` with (0 for help, 2 with the usage otherwise).
    pub fn parse<I, T>(args: I) -> std::result::Result<Options, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let argv =
            std::iter::once(OsString::from("pod-churn")).chain(args.into_iter().map(Into::into));
        let matches = Cli::command().try_get_matches_from(argv)?;
        let cli = Cli::from_arg_matches(&matches)?;
        let invalid = |e: &dyn std::fmt::Display| {
            Cli::command().error(clap::error::ErrorKind::ValueValidation, e)
        };
        let mut o = Self::defaults(cli.quick).map_err(|e| invalid(&e))?;
        let set = |slot: &mut usize, v: Option<usize>| *slot = v.unwrap_or(*slot);
        set(&mut o.pods, cli.pods);
        set(&mut o.churn_pods, cli.churn_pods);
        set(&mut o.workers, cli.workers);
        set(&mut o.burst, cli.burst);
        set(&mut o.bursts, cli.bursts);
        if let Some(dir) = cli.bin_dir {
            o.bin_dir = dir;
        }
        o.durability = cli.durability;
        o.before = cli.before;
        // Given twice, clap keeps both pairs: the last one counts.
        o.versus = cli.versus.and_then(|mut v| {
            let dir = v.pop()?;
            Some((v.pop()?, PathBuf::from(dir)))
        });
        let redirect = [
            o.durability.as_ref().map(|mode| {
                (
                    "durability",
                    bench_dir()
                        .join("results")
                        .join(format!("durability-{mode}")),
                )
            }),
            o.before.as_ref().map(|_| ("before", before_dir())),
            o.versus
                .as_ref()
                .map(|_| ("versus", bench_dir().join("results").join("versus"))),
        ]
        .into_iter()
        .flatten()
        .map(|(id, dir)| {
            let last = matches.indices_of(id).and_then(Iterator::max);
            (last.unwrap_or(0), dir)
        })
        .max_by_key(|(index, _)| *index);
        if let Some((_, dir)) = redirect {
            o.out_dir = dir;
            o.update_results_md = false;
        }
        o.validate().map_err(|e| invalid(&e))?;
        Ok(o)
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

/// A count flag's value: a positive integer.
fn positive(value: &str) -> std::result::Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("takes a positive integer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use std::path::Path;

    fn parse(args: &[&str]) -> std::result::Result<Options, clap::Error> {
        Options::parse(args)
    }

    fn run(args: &[&str]) -> Options {
        parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_and_overrides() {
        let o = run(&[]);
        assert_eq!((o.pods, o.churn_pods, o.workers), (500, 400, 8));
        assert_eq!((o.burst, o.bursts), (30, 10));
        assert!(o.update_results_md);
        let q = run(&["--pods", "12", "--quick"]);
        assert_eq!(q.pods, 12);
        assert_eq!((q.churn_pods, q.bursts), (64, 2));
        assert!(q.quick && !q.update_results_md);
        assert!(q.out_dir.ends_with("results/quick"));
        assert_eq!(run(&["--pods=12", "--pods", "13"]).pods, 13);
        assert_eq!(run(&["--bin-dir", "/b"]).bin_dir, Path::new("/b"));
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            &["--pods"][..],
            &["--pods", "0"],
            &["--pods", "-1"],
            &["--pods", "800"],
            &["--workers", "9", "--churn-pods", "4"],
            &["--frobnicate"],
            &["--durability", "maybe"],
            &["--before"],
            &["--versus", "1b860c2"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert_ne!(e.kind(), ErrorKind::DisplayHelp, "{args:?}");
        }
        let d = run(&["--durability", "async"]);
        assert_eq!(d.durability.as_deref(), Some("async"));
        assert!(!d.update_results_md && d.out_dir.ends_with("results/durability-async"));
        let help = parse(&["--pods", "3", "--help"]).unwrap_err();
        assert_eq!((help.kind(), help.exit_code()), (ErrorKind::DisplayHelp, 0));
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
    }

    #[test]
    fn a_before_run_keeps_to_its_own_dir() {
        let b = run(&["--before", "1b860c2", "--quick"]);
        assert_eq!(b.before.as_deref(), Some("1b860c2"));
        assert!(!b.update_results_md && b.out_dir.ends_with("results/before"));
    }

    #[test]
    fn the_last_of_durability_before_versus_picks_the_results_dir() {
        let o = run(&["--before", "abc", "--durability", "sync"]);
        assert!(o.out_dir.ends_with("results/durability-sync"));
        assert_eq!(o.before.as_deref(), Some("abc"));
        let o = run(&[
            "--durability",
            "sync",
            "--versus",
            "abc",
            "/d",
            "--before",
            "x",
        ]);
        assert!(o.out_dir.ends_with("results/before"));
        let o = run(&[
            "--versus",
            "abc",
            "/d",
            "--durability",
            "sync",
            "--versus",
            "e",
            "/f",
        ]);
        assert!(o.out_dir.ends_with("results/versus"));
        assert_eq!(o.versus.unwrap().0, "e");
    }
}
