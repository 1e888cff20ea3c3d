//! `ipamd demo`: a throwaway node on the simulated cloud.

use std::process::ExitCode;

use serde_json::Value;

/// Entry point of `ipamd demo`.
pub fn main(_args: &[String]) -> ExitCode {
    eprintln!("ipamd demo: not built yet");
    ExitCode::FAILURE
}

/// Renders the INTROSPECT view as text for `ipamd status`.
pub fn render_status(view: &Value) -> String {
    serde_json::to_string_pretty(view).unwrap_or_default()
}
