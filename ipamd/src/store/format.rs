//! What the checkpoint looks like on disk, every version of it.
//!
//! * `checkpoint.json`, version 2: a snapshot, `{"version": 2, "generation":
//!   G, "allocations": [...]}`, followed by the journal `journal-G.log`,
//!   one JSON [`JournalEntry`] per line, appended (and fsynced, in groups)
//!   as allocations change.
//! * `checkpoint.json`, version 1 (before the journal): `{"version": 1,
//!   "allocations": [...]}`, the same records, written whole in the
//!   background. Still read; the first start rewrites it as version 2.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The version this build writes.
pub const CURRENT_VERSION: u32 = 2;

/// Who holds an allocation: the CNI spec's key (the network is implied:
/// ipamd serves one).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordKey {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

/// The snapshot, as written.
#[derive(Serialize)]
pub(super) struct SnapshotOut<'a, R> {
    pub version: u32,
    pub generation: u64,
    pub allocations: &'a [R],
}

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum JournalEntry<R> {
    /// The allocation of `record`'s key is now `record`.
    Put {
        /// The whole record.
        record: R,
    },
    /// The allocation of `key` is gone.
    Del {
        /// Whose.
        key: RecordKey,
    },
}

/// A snapshot read back, before its records are decoded.
pub(super) struct SnapshotIn {
    pub version: u32,
    pub generation: u64,
    pub allocations: Vec<Value>,
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Not JSON, or not an object with `version` and `allocations`.
    #[error("not a checkpoint: {0}")]
    Shape(String),
    /// A version this build does not know.
    #[error("checkpoint version {0} is not one this build reads (1 or 2)")]
    Version(u64),
}

/// Reads either version of the snapshot. Records are decoded one by one by
/// the caller, so one bad record does not hide the others.
pub(super) fn parse_snapshot(bytes: &[u8]) -> Result<SnapshotIn, FormatError> {
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| FormatError::Shape(e.to_string()))?;
    let version = doc
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| FormatError::Shape("no numeric `version`".into()))?;
    if version != 1 && version != u64::from(CURRENT_VERSION) {
        return Err(FormatError::Version(version));
    }
    let allocations = match doc.get("allocations") {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Null) | None if version == 1 => Vec::new(),
        _ => return Err(FormatError::Shape("`allocations` is not a list".into())),
    };
    // Version 1 had no journal: it is generation 0 with nothing after it.
    let generation = doc.get("generation").and_then(Value::as_u64).unwrap_or(0);
    Ok(SnapshotIn {
        version: version as u32,
        generation,
        allocations,
    })
}

/// The journal file of `generation`.
pub fn journal_name(generation: u64) -> String {
    format!("journal-{generation}.log")
}

/// The generation of a journal file name, if it is one.
pub(super) fn journal_generation(name: &str) -> Option<u64> {
    name.strip_prefix("journal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_are_read() {
        let v1 = parse_snapshot(br#"{"version": 1, "allocations": [{"a": 1}]}"#).unwrap();
        assert_eq!((v1.version, v1.generation, v1.allocations.len()), (1, 0, 1));
        let v2 = parse_snapshot(br#"{"version": 2, "generation": 7, "allocations": []}"#).unwrap();
        assert_eq!((v2.version, v2.generation), (2, 7));
        assert!(matches!(
            parse_snapshot(br#"{"version": 9, "allocations": []}"#),
            Err(FormatError::Version(9))
        ));
        assert!(parse_snapshot(b"\0\0\0").is_err());
        assert!(parse_snapshot(br#"{"version": 2, "allocations": 3}"#).is_err());
    }

    #[test]
    fn journal_names_round_trip() {
        assert_eq!(journal_generation(&journal_name(42)), Some(42));
        assert_eq!(journal_generation("journal-x.log"), None);
        assert_eq!(journal_generation("checkpoint.json"), None);
    }
}
