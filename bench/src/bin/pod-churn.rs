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
    let options = match churn::cli::Options::parse(std::env::args().skip(1)) {
        Ok(churn::cli::Parsed::Run(o)) => o,
        Ok(churn::cli::Parsed::Help) => {
            print!("{}", churn::cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pod-churn: {e}\n\n{}", churn::cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match churn::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pod-churn: {e}");
            ExitCode::FAILURE
        }
    }
}
