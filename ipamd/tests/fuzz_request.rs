//! Property tests: ipamd's request decoding never panics on any bytes, and
//! answers every frame it cannot take with the spec's error (code 6, or 105
//! for another protocol version); what it takes re-encodes to itself.
//!
//! CI runs a modest number of cases; `VPC_CNI_FUZZ_CASES=1000000` runs the
//! long mode (README, "Fuzzing").

use cni_plugin::wire::{Command, PodArgs, Request, PROTOCOL_VERSION};
use ipamd::server::decode_request;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

fn config() -> Config {
    let cases = std::env::var("VPC_CNI_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-zA-Z0-9_.\\-/]{0,40}",
        any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{0,12}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn request() -> impl Strategy<Value = Request> {
    let command = prop_oneof![
        Just(Command::Add),
        Just(Command::Del),
        Just(Command::Check),
        Just(Command::Status),
        Just(Command::Gc),
        Just(Command::Introspect),
    ];
    (
        command,
        text(),
        text(),
        text(),
        proptest::option::of(text()),
        proptest::option::of(text()),
        json_value(),
    )
        .prop_map(
            |(command, container_id, netns, ifname, ns, name, config)| Request {
                v: PROTOCOL_VERSION,
                command,
                container_id,
                netns,
                ifname,
                args: PodArgs {
                    namespace: ns,
                    name,
                    ..PodArgs::default()
                },
                config,
            },
        )
}

/// Frames: well-formed requests, requests with one field replaced by any
/// JSON, truncated or bit-flipped requests, and raw bytes.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        Just("v"),
        Just("command"),
        Just("containerId"),
        Just("netns"),
        Just("ifname"),
        Just("args"),
        Just("config"),
    ];
    prop_oneof![
        request().prop_map(|r| serde_json::to_vec(&r).expect("serialises")),
        (request(), key, json_value()).prop_map(|(r, k, v)| {
            let mut doc = serde_json::to_value(&r).expect("serialises");
            doc[k] = v;
            serde_json::to_vec(&doc).expect("serialises")
        }),
        (request(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(r, at, bits)| {
            let mut b = serde_json::to_vec(&r).expect("serialises");
            let i = at.index(b.len());
            b[i] ^= bits;
            b
        }),
        (request(), any::<prop::sample::Index>()).prop_map(|(r, at)| {
            let mut b = serde_json::to_vec(&r).expect("serialises");
            b.truncate(at.index(b.len()));
            b
        }),
        json_value().prop_map(|v| serde_json::to_vec(&v).expect("serialises")),
        proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

#[test]
fn any_frame_decodes_or_gets_a_spec_error() {
    let mut runner = TestRunner::new(config());
    let cases = runner.config().cases;
    let taken = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&frame(), |bytes| {
            match decode_request(&bytes) {
                Ok(req) => {
                    taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    prop_assert_eq!(req.v, PROTOCOL_VERSION);
                    // What ipamd took re-encodes to the same request (the
                    // config's floats aside: serde_json may round their
                    // last digit).
                    let again = serde_json::to_vec(&req).expect("serialises");
                    let back = decode_request(&again);
                    prop_assert!(back.is_ok(), "{:?}", back);
                    let mut back = back.expect("checked");
                    back.config = req.config.clone();
                    prop_assert_eq!(back, req);
                }
                Err(e) => {
                    prop_assert!(e.code == 6 || e.code == 105, "code {}: {}", e.code, e.msg);
                    prop_assert!(!e.msg.is_empty());
                }
            }
            Ok(())
        })
        .unwrap();
    let taken = taken.into_inner();
    eprintln!(
        "fuzz: {cases} request frames, {taken} decoded, {} refused with a spec error",
        cases as u64 - taken
    );
    assert!(
        taken > 0,
        "no frame was a valid request: the generator is broken"
    );
}

#[test]
fn an_oversized_frame_is_refused() {
    let big = vec![b' '; cni_plugin::wire::MAX_FRAME_BYTES + 1];
    assert_eq!(decode_request(&big).unwrap_err().code, 6);
}
