//! The policy table's nf_tables messages, byte for byte. `golden/` holds
//! what the hand-written encoder this crate had before the netlink crate
//! (and netlink-packet-netfilter's message types) produced for the same
//! batch: the move changed no byte the kernel sees. Set ids come from a
//! process-wide counter, so they are zeroed on both sides.

use std::net::Ipv4Addr;

use vpc_cni_netlink::encode_into;
use vpc_cni_policy::compile::{self, Direction};
use vpc_cni_policy::ir::{Allow, Peers, PortRange, Ports, Proto};
use vpc_cni_policy::nft::{ifname_key, Batch, CmpOp, Element, Expr, MetaKey, Verdict, VerdictData};

/// `NLM_F_REQUEST | NLM_F_ACK`, as the socket sends every message.
const REQUEST_ACK: u16 = 0x1 | 0x4;

fn sample() -> Batch {
    let mut b = Batch::new();
    compile::skeleton(&mut b, true);
    let allows = vec![
        Allow {
            peers: Peers::Any,
            ports: Ports::Any,
        },
        Allow {
            peers: Peers::Ranges(vec![(
                Ipv4Addr::new(10, 0, 0, 0),
                Ipv4Addr::new(10, 0, 0, 9),
            )]),
            ports: Ports::Ranges(vec![PortRange {
                proto: Proto::Tcp,
                first: 80,
                last: 81,
            }]),
        },
    ];
    let objs = compile::policy_chain(&mut b, Direction::Ingress, "p1", &allows);
    compile::policy_chain(&mut b, Direction::Egress, "p2", &[]);
    b.add_elements(
        compile::TABLE,
        "ingress",
        &[compile::pod_element("eni0123456789a", "p1")],
    );
    b.add_elements(
        compile::TABLE,
        "egress",
        &[Element {
            key: ifname_key("eni1"),
            key_end: None,
            verdict: Some(VerdictData::Drop),
        }],
    );
    b.del_elements(
        compile::TABLE,
        "ingress",
        &[compile::pod_key("eni0123456789a")],
    );
    b.add_rule(
        compile::TABLE,
        "p1",
        &[
            Expr::Immediate(Verdict::Accept),
            Expr::Immediate(Verdict::Drop),
        ],
    );
    b.add_rule(
        compile::TABLE,
        "p1",
        &[
            Expr::Meta {
                key: MetaKey::OifName,
                dreg: 1,
            },
            Expr::Cmp {
                sreg: 1,
                op: CmpOp::Neq,
                data: ifname_key("x"),
            },
            Expr::Lookup {
                set: "s".into(),
                sreg: 1,
                dreg: None,
            },
        ],
    );
    compile::del_policy_chain(&mut b, &objs);
    b.del_set(compile::TABLE, "zz");
    b.del_chain(compile::TABLE, "p2");
    b.del_table(compile::TABLE);
    b.add_table("t2", false);
    b
}

/// Zeroes `NFTA_SET_ID` (10) of a `NFT_MSG_NEWSET` message.
fn zero_set_id(msg: &mut [u8]) {
    if u16::from_ne_bytes([msg[4], msg[5]]) != (10 << 8) | 9 {
        return;
    }
    let mut at = 20;
    while at + 4 <= msg.len() {
        let len = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]) & 0x3fff;
        if kind == 10 {
            msg[at + 4..at + 8].fill(0);
        }
        at += len.next_multiple_of(4);
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn the_policy_batch_is_byte_for_byte_what_it_was() {
    let golden = include_str!("golden/policy-batch.txt");
    let batch = sample();
    let want: Vec<(&str, &str)> = golden
        .lines()
        .map(|l| l.rsplit_once(' ').expect("label hex"))
        .collect();
    assert_eq!(batch.len(), want.len());
    for (i, (op, (label, hex))) in batch.ops().iter().zip(want).enumerate() {
        assert_eq!(op.label, label);
        let mut got = Vec::new();
        encode_into(&op.msg, REQUEST_ACK | op.flags, i as u32 + 1, &mut got);
        let mut want = unhex(hex);
        zero_set_id(&mut got);
        zero_set_id(&mut want);
        assert_eq!(got, want, "message {i}: {label}");
    }
}
