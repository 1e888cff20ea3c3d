//! `pod-churn`: the pod ADD/DEL benchmark of vpc-cni against the reference
//! `ptp` + `host-local` plugins (containernetworking-plugins), in the same
//! run, on the same node namespace, with the same exec overhead.
//!
//! Run as root: `target/release/pod-churn [--quick] [--pods N] ...`
//! (or `scripts/bench.sh`). See `--help` and `bench/RESULTS.md`.

use std::process::ExitCode;

#[path = "../churn/mod.rs"]
mod churn;

fn main() -> ExitCode {
    // `--help` prints and exits 0; a mistake prints the usage and exits 2.
    let options =
        churn::cli::Options::parse(std::env::args_os().skip(1)).unwrap_or_else(|e| e.exit());
    match churn::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pod-churn: {e}");
            ExitCode::FAILURE
        }
    }
}
