//! What every part's settings share: the error a bad value gets.

use std::fmt::Display;

/// An invalid setting: the variable, its value as given, and what is wrong
/// with it. The operator sees exactly this at start (or in the tuning
/// endpoint's answer), so it names everything needed to fix the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct SettingError {
    /// The variable.
    pub var: String,
    /// Its value.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

impl SettingError {
    /// `var` set to `value` is wrong because of `reason`.
    pub fn new(var: &str, value: impl Display, reason: impl Into<String>) -> Self {
        SettingError {
            var: var.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
