//! The `vpc-cni` CNI plugin: kubelet's runtime execs it once per call.
//! All logic lives in [`cni_plugin::plugin::run`]; this shell only does the
//! process I/O.

use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

use cni_plugin::config::FALLBACK_VERSION;
use cni_plugin::error::{CniError, INTERNAL, IO_FAILURE};
use cni_plugin::plugin::{run, Outcome};

fn main() {
    // Lossy, not `std::env::vars`, which panics on a non-UTF-8 variable that
    // may have nothing to do with CNI.
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().lock().read_to_end(&mut stdin) {
        Err(e) => Outcome::failure(
            FALLBACK_VERSION,
            &CniError::new(
                IO_FAILURE,
                "could not read the network configuration from stdin",
            )
            .with_details(e.to_string()),
        ),
        // A bug must still leave the runtime a CNI error to show, not an
        // empty stdout; the panic message itself goes to stderr.
        Ok(_) => catch_unwind(AssertUnwindSafe(|| run(env, &stdin))).unwrap_or_else(|_| {
            Outcome::failure(
                FALLBACK_VERSION,
                &CniError::new(INTERNAL, "vpc-cni failed unexpectedly; see its stderr"),
            )
        }),
    };
    if let Some(text) = &outcome.stdout {
        let mut out = std::io::stdout().lock();
        // Nothing useful can be done if stdout is gone; the exit code still
        // tells the runtime.
        let _ = writeln!(out, "{text}").and_then(|()| out.flush());
    }
    std::process::exit(outcome.exit_code);
}
