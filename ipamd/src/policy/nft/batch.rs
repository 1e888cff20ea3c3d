//! Transactions: a [`Batch`] collects nf_tables objects to create or delete
//! and is sent as one nfnetlink batch, which the kernel applies atomically
//! (all or nothing, and no packet sees half of it).

use std::sync::atomic::{AtomicU32, Ordering};

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL};

use super::expr::{Expr, Verdict};
use super::wire::{attr, msg, set_flags, Attrs, NfMsg, DATA_VERDICT, NFPROTO_INET};

/// nft's datatype numbers (`enum datatypes` in nftables' `datatype.h`).
/// The kernel stores them opaquely; `nft list` uses them to print keys.
pub mod datatype {
    /// `ipv4_addr`.
    pub const IPV4_ADDR: u32 = 7;
    /// `inet_proto`.
    pub const INET_PROTO: u32 = 12;
    /// `inet_service`.
    pub const INET_SERVICE: u32 = 13;
    /// `ifname`.
    pub const IFNAME: u32 = 41;
    /// `verdict`.
    pub const VERDICT: u32 = 1;
}

/// `IFNAMSIZ`: interface names are 16-byte keys.
pub const IFNAME_LEN: usize = 16;

/// `NFTNL_UDATA_SET_KEYBYTEORDER` in nft's set user data.
const UDATA_SET_KEYBYTEORDER: u8 = 0;
/// nft's `BYTEORDER_HOST_ENDIAN`.
const BYTEORDER_HOST_ENDIAN: u32 = 1;

/// One field of a set key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Length in bytes (before padding to 4).
    pub len: u32,
    /// nft datatype.
    pub datatype: u32,
}

impl Field {
    /// `ipv4_addr`.
    pub const IPV4: Field = Field {
        len: 4,
        datatype: datatype::IPV4_ADDR,
    };
    /// `inet_proto`.
    pub const PROTO: Field = Field {
        len: 1,
        datatype: datatype::INET_PROTO,
    };
    /// `inet_service`.
    pub const PORT: Field = Field {
        len: 2,
        datatype: datatype::INET_SERVICE,
    };
    /// `ifname`.
    pub const IFNAME: Field = Field {
        len: IFNAME_LEN as u32,
        datatype: datatype::IFNAME,
    };
}

/// A named set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    /// Name, unique in the table.
    pub name: String,
    /// Key fields; more than one makes a concatenation.
    pub fields: Vec<Field>,
    /// Elements are ranges (`flags interval`).
    pub interval: bool,
    /// A verdict map (`: verdict`).
    pub verdict_map: bool,
}

impl SetSpec {
    /// Key length: every field padded to a 32-bit register.
    pub fn key_len(&self) -> u32 {
        if self.fields.len() == 1 {
            self.fields[0].len
        } else {
            self.fields.iter().map(|f| f.len.div_ceil(4) * 4).sum()
        }
    }

    /// nft's key type: concatenated types are folded 6 bits at a time.
    pub fn key_type(&self) -> u32 {
        self.fields.iter().fold(0, |acc, f| (acc << 6) | f.datatype)
    }

    fn flags(&self) -> u32 {
        let mut flags = 0;
        if self.interval {
            flags |= set_flags::INTERVAL;
        }
        if self.fields.len() > 1 {
            flags |= set_flags::CONCAT;
        }
        if self.verdict_map {
            flags |= set_flags::MAP;
        }
        flags
    }
}

/// One set element: a key (or range) and, in a verdict map, its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element {
    /// The key (the first of the range in an interval set).
    pub key: Vec<u8>,
    /// The last key of the range (interval sets).
    pub key_end: Option<Vec<u8>>,
    /// Verdict (verdict maps).
    pub verdict: Option<VerdictData>,
}

/// The verdict of a map element (`Verdict` without the base-chain-only cases).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VerdictData {
    /// `jump <chain>`.
    Jump(String),
    /// `drop`.
    Drop,
}

/// An interface name as a 16-byte key.
pub fn ifname_key(name: &str) -> Vec<u8> {
    let mut k = vec![0u8; IFNAME_LEN];
    let n = name.len().min(IFNAME_LEN - 1);
    k[..n].copy_from_slice(&name.as_bytes()[..n]);
    k
}

/// A base chain's hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    /// `NF_INET_*` hook number.
    pub hooknum: u32,
    /// Priority (0 = `filter`).
    pub priority: i32,
}

/// `NF_INET_LOCAL_IN`.
pub const HOOK_INPUT: u32 = 1;
/// `NF_INET_FORWARD`.
pub const HOOK_FORWARD: u32 = 2;

/// One message of a batch, with what it does for error messages.
#[derive(Debug, Clone)]
pub struct Op {
    /// The message.
    pub msg: NfMsg,
    /// Netlink flags beyond `NLM_F_REQUEST`.
    pub flags: u16,
    /// E.g. `add chain inet vpc_cni i_0123`.
    pub label: String,
}

/// Largest element list per message: the nest length is a u16.
const ELEMS_PER_MSG_BYTES: usize = 48 * 1024;

/// A transaction under construction.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<Op>,
}

static NEXT_SET_ID: AtomicU32 = AtomicU32::new(1);

impl Batch {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Its messages.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Appends another batch's messages after this one's.
    pub fn append(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }

    fn push(&mut self, msg_type: u16, flags: u16, attrs: Attrs, label: String) {
        self.ops.push(Op {
            msg: NfMsg::nftables(msg_type, NFPROTO_INET, attrs),
            flags,
            label,
        });
    }

    /// `nft add table inet <name>`; with `exclusive`, EEXIST if it exists.
    pub fn add_table(&mut self, name: &str, exclusive: bool) {
        let mut a = Attrs::new();
        a.str(attr::table::NAME, name).u32(attr::table::FLAGS, 0);
        let flags = NLM_F_CREATE | if exclusive { NLM_F_EXCL } else { 0 };
        self.push(msg::NEWTABLE, flags, a, format!("add table inet {name}"));
    }

    /// `nft delete table inet <name>`.
    pub fn del_table(&mut self, name: &str) {
        let mut a = Attrs::new();
        a.str(attr::table::NAME, name);
        self.push(msg::DELTABLE, 0, a, format!("delete table inet {name}"));
    }

    /// `nft add chain inet <table> <name> [{ type filter hook .. priority ..; policy accept; }]`.
    pub fn add_chain(&mut self, table: &str, name: &str, hook: Option<Hook>) {
        let mut a = Attrs::new();
        a.str(attr::chain::TABLE, table)
            .str(attr::chain::NAME, name);
        if let Some(h) = hook {
            a.nest(attr::chain::HOOK, |n| {
                n.u32(attr::hook::HOOKNUM, h.hooknum)
                    .u32(attr::hook::PRIORITY, h.priority as u32);
            })
            .u32(attr::chain::POLICY, super::wire::verdict::ACCEPT as u32)
            .str(attr::chain::TYPE, "filter");
        }
        self.push(
            msg::NEWCHAIN,
            NLM_F_CREATE,
            a,
            format!("add chain inet {table} {name}"),
        );
    }

    /// `nft delete chain inet <table> <name>` (the chain must be empty of
    /// references; its own rules go with it).
    pub fn del_chain(&mut self, table: &str, name: &str) {
        let mut a = Attrs::new();
        a.str(attr::chain::TABLE, table)
            .str(attr::chain::NAME, name);
        self.push(
            msg::DELCHAIN,
            0,
            a,
            format!("delete chain inet {table} {name}"),
        );
    }

    /// `nft add set|map inet <table> <name> { type ..; flags ..; }`.
    pub fn add_set(&mut self, table: &str, spec: &SetSpec) {
        // Set ids only need to be unique within one batch; a process-wide
        // counter keeps them unique when batches are appended to each other.
        let id = NEXT_SET_ID.fetch_add(1, Ordering::Relaxed);
        let mut a = Attrs::new();
        a.str(attr::set::TABLE, table)
            .str(attr::set::NAME, &spec.name)
            .u32(attr::set::FLAGS, spec.flags())
            .u32(attr::set::KEY_TYPE, spec.key_type())
            .u32(attr::set::KEY_LEN, spec.key_len());
        if spec.verdict_map {
            a.u32(attr::set::DATA_TYPE, DATA_VERDICT)
                .u32(attr::set::DATA_LEN, 0);
        }
        a.u32(attr::set::ID, id);
        if spec.fields == [Field::IFNAME] {
            // nft's user data (TLVs of u8 type, u8 length): key byte order
            // = host, so `nft list` prints interface names as strings.
            let mut udata = vec![UDATA_SET_KEYBYTEORDER, 4];
            udata.extend_from_slice(&BYTEORDER_HOST_ENDIAN.to_ne_bytes());
            a.bytes(attr::set::USERDATA, &udata);
        }
        if spec.fields.len() > 1 {
            a.nest(attr::set::DESC, |d| {
                d.nest(attr::set_desc::CONCAT, |c| {
                    for f in &spec.fields {
                        c.nest(attr::list::ELEM, |e| {
                            e.u32(attr::set_field::LEN, f.len);
                        });
                    }
                });
            });
        }
        self.push(
            msg::NEWSET,
            NLM_F_CREATE,
            a,
            format!("add set inet {table} {}", spec.name),
        );
    }

    /// `nft delete set inet <table> <name>`.
    pub fn del_set(&mut self, table: &str, name: &str) {
        let mut a = Attrs::new();
        a.str(attr::set::TABLE, table).str(attr::set::NAME, name);
        self.push(msg::DELSET, 0, a, format!("delete set inet {table} {name}"));
    }

    /// `nft add element inet <table> <set> { .. }`, split over as many
    /// messages as the element list needs.
    pub fn add_elements(&mut self, table: &str, set: &str, elems: &[Element]) {
        self.elements(msg::NEWSETELEM, NLM_F_CREATE, "add", table, set, elems);
    }

    /// `nft delete element inet <table> <set> { .. }`.
    pub fn del_elements(&mut self, table: &str, set: &str, elems: &[Element]) {
        self.elements(msg::DELSETELEM, 0, "delete", table, set, elems);
    }

    fn elements(
        &mut self,
        msg_type: u16,
        flags: u16,
        verb: &str,
        table: &str,
        set: &str,
        elems: &[Element],
    ) {
        let mut rest = elems;
        while !rest.is_empty() {
            let mut list = Attrs::new();
            let mut n = 0;
            for e in rest {
                if list.len() >= ELEMS_PER_MSG_BYTES {
                    break;
                }
                encode_element(&mut list, e);
                n += 1;
            }
            let list = list.into_bytes();
            let mut a = Attrs::new();
            a.str(attr::elem_list::TABLE, table)
                .str(attr::elem_list::SET, set)
                .nest(attr::elem_list::ELEMENTS, |l| {
                    l.raw(&list);
                });
            self.push(
                msg_type,
                flags,
                a,
                format!("{verb} {n} elements in set inet {table} {set}"),
            );
            rest = &rest[n..];
        }
    }

    /// `nft add rule inet <table> <chain> <exprs>` (appended).
    pub fn add_rule(&mut self, table: &str, chain: &str, exprs: &[Expr]) {
        let mut a = Attrs::new();
        a.str(attr::rule::TABLE, table)
            .str(attr::rule::CHAIN, chain)
            .nest(attr::rule::EXPRESSIONS, |l| {
                for e in exprs {
                    e.encode(l);
                }
            });
        self.push(
            msg::NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            a,
            format!("add rule inet {table} {chain}"),
        );
    }
}

fn encode_element(list: &mut Attrs, e: &Element) {
    list.nest(attr::list::ELEM, |el| {
        el.nest(attr::elem::KEY, |k| {
            k.bytes(attr::data::VALUE, &e.key);
        });
        if let Some(end) = &e.key_end {
            el.nest(attr::elem::KEY_END, |k| {
                k.bytes(attr::data::VALUE, end);
            });
        }
        if let Some(v) = &e.verdict {
            let v = match v {
                VerdictData::Jump(c) => Verdict::Jump(c.clone()),
                VerdictData::Drop => Verdict::Drop,
            };
            el.nest(attr::elem::DATA, |d| v.encode(d));
        }
    });
}
