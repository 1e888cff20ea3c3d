//! The nf_tables message layer against the real kernel, in a namespace of
//! its own: what it programs is read back with `nft` (the operator's view)
//! and refusals come back typed, naming the message.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;

use ipamd::policy::nft::{
    ct_established_or_related, ifname_key, ip_addr, is_ipv4, th_dport, AddrField, Batch, Element,
    Expr, Field, Hook, MetaKey, NftSocket, SetSpec, Verdict, VerdictData, HOOK_FORWARD,
};
use nix::sched::{setns, CloneFlags};
use vpc_cni_e2e::Netns;

/// Opens an nf_tables socket inside `ns` from a throwaway thread, so the
/// test thread never changes namespace.
fn socket_in(ns: &Netns) -> NftSocket {
    let path = ns.path().to_path_buf();
    std::thread::spawn(move || {
        let f = File::open(&path).expect("open netns");
        setns(&f, CloneFlags::CLONE_NEWNET).expect("setns");
        NftSocket::open().expect("nf_tables socket")
    })
    .join()
    .expect("socket thread")
}

fn nft(ns: &Netns, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft"])
        .args(args)
        .output()
        .expect("nft runs");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn concat_key(addr: Ipv4Addr, proto: u8, port: u16) -> Vec<u8> {
    let mut k = addr.octets().to_vec();
    k.extend_from_slice(&[proto, 0, 0, 0]);
    k.extend_from_slice(&port.to_be_bytes());
    k.extend_from_slice(&[0, 0]);
    k
}

const T: &str = "vpc_cni_layer";

fn sample_table() -> Batch {
    let mut b = Batch::new();
    b.add_table(T, true);
    b.add_chain(T, "pod_in", None);
    b.add_set(
        T,
        &SetSpec {
            name: "peers".into(),
            fields: vec![Field::IPV4, Field::PROTO, Field::PORT],
            interval: true,
            verdict_map: false,
        },
    );
    b.add_elements(
        T,
        "peers",
        &[Element {
            key: concat_key(Ipv4Addr::new(10, 0, 0, 1), 6, 80),
            key_end: Some(concat_key(Ipv4Addr::new(10, 0, 0, 9), 6, 81)),
            verdict: None,
        }],
    );
    let mut rule = is_ipv4();
    rule.extend([
        ip_addr(AddrField::Source, 8),
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: 9,
        },
        th_dport(10),
        Expr::Lookup {
            set: "peers".into(),
            sreg: 8,
            dreg: None,
        },
        Expr::Immediate(Verdict::Return),
    ]);
    b.add_rule(T, "pod_in", &rule);
    b.add_rule(T, "pod_in", &[Expr::Immediate(Verdict::Drop)]);
    b.add_set(
        T,
        &SetSpec {
            name: "ingress".into(),
            fields: vec![Field::IFNAME],
            interval: false,
            verdict_map: true,
        },
    );
    b.add_elements(
        T,
        "ingress",
        &[Element {
            key: ifname_key("eni0123456789a"),
            key_end: None,
            verdict: Some(VerdictData::Jump("pod_in".into())),
        }],
    );
    b.add_chain(
        T,
        "forward",
        Some(Hook {
            hooknum: HOOK_FORWARD,
            priority: 0,
        }),
    );
    let mut est = ct_established_or_related();
    est.push(Expr::Immediate(Verdict::Accept));
    b.add_rule(T, "forward", &est);
    b.add_rule(
        T,
        "forward",
        &[
            Expr::Meta {
                key: MetaKey::OifName,
                dreg: 1,
            },
            Expr::Lookup {
                set: "ingress".into(),
                sreg: 1,
                dreg: Some(0),
            },
        ],
    );
    b
}

#[test]
#[ignore = "privileged: needs CAP_NET_ADMIN"]
fn a_table_with_concat_interval_set_and_verdict_map_reads_back_as_nft_prints_it() {
    let ns = Netns::new();
    let mut sock = socket_in(&ns);
    sock.apply(&sample_table()).expect("transaction applies");
    let listed = nft(&ns, &["list", "table", "inet", T]);
    for want in [
        "type ipv4_addr . inet_proto . inet_service",
        "flags interval",
        "10.0.0.1-10.0.0.9 . tcp . 80-81",
        "type ifname : verdict",
        "\"eni0123456789a\" : jump pod_in",
        "type filter hook forward priority filter; policy accept;",
        "ct state established,related accept",
        "oifname vmap @ingress",
        "ip saddr . meta l4proto . th dport @peers return",
        "drop",
    ] {
        assert!(listed.contains(want), "missing {want:?} in:\n{listed}");
    }
}

#[test]
#[ignore = "privileged: needs CAP_NET_ADMIN"]
fn a_refused_message_is_named_and_nothing_of_its_batch_is_applied() {
    let ns = Netns::new();
    let mut sock = socket_in(&ns);
    let mut b = sample_table();
    b.add_rule(T, "no_such_chain", &[Expr::Immediate(Verdict::Accept)]);
    let err = sock
        .apply(&b)
        .expect_err("a rule in a missing chain is refused");
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("no_such_chain"), "{err}");
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft", "list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(T),
        "the table of the failed batch must not exist"
    );
    // The same batch without the bad rule goes through; again, the
    // exclusive table create is refused as EEXIST.
    sock.apply(&sample_table()).expect("applies");
    let err = sock.apply(&sample_table()).expect_err("exists");
    assert!(err.is_exists(), "{err}");
    assert!(err.to_string().contains("add table inet"), "{err}");
}
