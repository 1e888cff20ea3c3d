//! Transactions: a [`Batch`] collects nf_tables objects to create or delete
//! and is sent as one nfnetlink batch, which the kernel applies atomically
//! (all or nothing, and no packet sees half of it). Messages are
//! netlink-packet-netfilter's typed `NfTablesMessage`s.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use netlink_packet_core::{
    DefaultNla, Emitable, NLA_F_NESTED, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, DataAttribute, Hook as NfHook, HookNumber, ListAttribute,
    NfTablesMessage, RuleAttribute, RuleMessage, SetAttribute, SetDescription, SetElementAttribute,
    SetElementFlags, SetElementList, SetElementMessage, SetFlags, SetMessage, TableAttribute,
    TableFlags, TableMessage,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};

use super::expr::{Expr, Verdict, NF_ACCEPT};

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

/// `NFT_DATA_VERDICT`: the data type of a verdict map.
const DATA_VERDICT: u32 = 0xffff_ff00;

/// nft's set user data (libnftnl's `NFTNL_UDATA_SET_*`): TLVs of u8 type,
/// u8 length. The kernel keeps them for `nft list`, which reads the key's
/// byte order and whether the set merges ranges from them.
mod udata {
    pub const SET_KEYBYTEORDER: u8 = 0;
    pub const SET_MERGE_ELEMENTS: u8 = 2;
    /// `NFTNL_UDATA_SET_ELEM_FLAGS` in an element's user data.
    pub const SET_ELEM_FLAGS: u8 = 1;
    /// `NFTNL_SET_ELEM_F_INTERVAL_OPEN`: a range open to the top.
    pub const SET_ELEM_F_INTERVAL_OPEN: u32 = 1;
    /// nft's `BYTEORDER_HOST_ENDIAN`.
    pub const HOST_ENDIAN: u32 = 1;
    /// nft's `BYTEORDER_BIG_ENDIAN`.
    pub const BIG_ENDIAN: u32 = 2;

    /// One TLV with a host-endian u32 value.
    pub fn u32(out: &mut Vec<u8>, kind: u8, value: u32) {
        out.extend_from_slice(&[kind, 4]);
        out.extend_from_slice(&value.to_ne_bytes());
    }
}

/// `NFTA_SET_DESC_CONCAT` and `NFTA_SET_FIELD_LEN`: a
/// concatenation's field lengths (netlink-packet-netfilter carries the
/// description's content as raw attributes).
const SET_DESC_CONCAT: u16 = 2;
const SET_FIELD_LEN: u16 = 1;
/// `NFTA_LIST_ELEM`.
const LIST_ELEM: u16 = 1;
/// `NFTA_DATA_VALUE`, inside `NFTA_SET_ELEM_KEY_END`.
const DATA_VALUE: u16 = 1;

/// The table family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `inet`: IPv4 and IPv6.
    Inet,
    /// `ip`: IPv4 only.
    Ip,
}

impl Family {
    /// As `nft` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
        }
    }

    fn proto(self) -> NetfilterProtoFamily {
        match self {
            Family::Inet => NetfilterProtoFamily::Inet,
            Family::Ip => NetfilterProtoFamily::IPv4,
        }
    }
}

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

    /// nft's byte order for keys of this type.
    fn byteorder(self) -> u32 {
        if self.datatype == datatype::IFNAME {
            udata::HOST_ENDIAN
        } else {
            udata::BIG_ENDIAN
        }
    }
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

    fn flags(&self) -> SetFlags {
        let mut flags = SetFlags::empty();
        if self.interval {
            flags |= SetFlags::Interval;
        }
        if self.fields.len() > 1 {
            flags |= SetFlags::Concat;
        }
        if self.verdict_map {
            flags |= SetFlags::Map;
        }
        flags
    }
}

/// One set element: a key (or range) and, in a verdict map, its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element {
    /// The key (the first of the range in an interval set).
    pub key: Vec<u8>,
    /// The last key of the range (concatenated interval sets).
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

/// `NF_INET_PRE_ROUTING`.
pub const HOOK_PREROUTING: u32 = 0;
/// `NF_INET_LOCAL_IN`.
pub const HOOK_INPUT: u32 = 1;
/// `NF_INET_FORWARD`.
pub const HOOK_FORWARD: u32 = 2;
/// `NF_INET_POST_ROUTING`.
pub const HOOK_POSTROUTING: u32 = 4;
/// `priority mangle` (`NF_IP_PRI_MANGLE`).
pub const PRIORITY_MANGLE: i32 = -150;
/// `priority srcnat` (`NF_IP_PRI_NAT_SRC`).
pub const PRIORITY_SRCNAT: i32 = 100;

/// A base chain's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    /// `type filter`.
    Filter,
    /// `type nat`.
    Nat,
}

impl ChainType {
    fn name(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        }
    }
}

/// One message of a batch, with what it does for error messages.
#[derive(Debug, Clone)]
pub struct Op {
    /// The message.
    pub msg: NetfilterMessage,
    /// Netlink flags beyond `NLM_F_REQUEST`.
    pub flags: u16,
    /// E.g. `add chain inet vpc_cni i_0123`.
    pub label: String,
}

impl Op {
    /// The nf_tables message inside.
    pub fn nft(&self) -> Option<&NfTablesMessage> {
        match &self.msg.inner {
            NetfilterMessageInner::NfTables(m) => Some(m),
            _ => None,
        }
    }
}

/// Largest element list per message: the nest length is a u16.
const ELEMS_PER_MSG_BYTES: usize = 48 * 1024;

/// A transaction under construction, for tables of one family.
#[derive(Debug, Clone)]
pub struct Batch {
    family: Family,
    ops: Vec<Op>,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

static NEXT_SET_ID: AtomicU32 = AtomicU32::new(1);

impl Batch {
    /// An empty transaction on `inet` tables.
    pub fn new() -> Self {
        Self::for_family(Family::Inet)
    }

    /// An empty transaction on tables of `family`.
    pub fn for_family(family: Family) -> Self {
        Self {
            family,
            ops: Vec::new(),
        }
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

    fn push(&mut self, msg: NfTablesMessage, flags: u16, label: String) {
        self.ops.push(Op {
            msg: NetfilterMessage::new(NetfilterHeader::new(self.family.proto(), 0, 0), msg),
            flags,
            label,
        });
    }

    fn f(&self) -> &'static str {
        self.family.name()
    }

    /// `nft add table <family> <name>`; with `exclusive`, EEXIST if it exists.
    pub fn add_table(&mut self, name: &str, exclusive: bool) {
        let msg = NfTablesMessage::NewTable(TableMessage {
            attributes: vec![
                TableAttribute::Name(name.to_string()),
                TableAttribute::Flags(TableFlags::empty()),
            ],
        });
        let flags = NLM_F_CREATE | if exclusive { NLM_F_EXCL } else { 0 };
        let label = format!("add table {} {name}", self.f());
        self.push(msg, flags, label);
    }

    /// `nft delete table <family> <name>`.
    pub fn del_table(&mut self, name: &str) {
        let msg = NfTablesMessage::DeleteTable(TableMessage {
            attributes: vec![TableAttribute::Name(name.to_string())],
        });
        let label = format!("delete table {} {name}", self.f());
        self.push(msg, 0, label);
    }

    /// `nft add chain <family> <table> <name> [{ type filter hook ..
    /// priority ..; policy accept; }]`.
    pub fn add_chain(&mut self, table: &str, name: &str, hook: Option<Hook>) {
        self.chain(table, name, hook.map(|h| (ChainType::Filter, h)));
    }

    /// `nft add chain <family> <table> <name> { type <kind> hook ..
    /// priority ..; policy accept; }`.
    pub fn add_base_chain(&mut self, table: &str, name: &str, kind: ChainType, hook: Hook) {
        self.chain(table, name, Some((kind, hook)));
    }

    fn chain(&mut self, table: &str, name: &str, base: Option<(ChainType, Hook)>) {
        let mut a = vec![
            ChainAttribute::Table(table.to_string()),
            ChainAttribute::Name(name.to_string()),
        ];
        if let Some((kind, h)) = base {
            a.push(ChainAttribute::Hook(vec![
                NfHook::Number(HookNumber::Inet(h.hooknum.into())),
                NfHook::Priority(h.priority as u32),
            ]));
            a.push(ChainAttribute::Policy(NF_ACCEPT));
            a.push(ChainAttribute::Type(kind.name().to_string()));
        }
        let label = format!("add chain {} {table} {name}", self.f());
        self.push(
            NfTablesMessage::NewChain(ChainMessage { attributes: a }),
            NLM_F_CREATE,
            label,
        );
    }

    /// `nft delete chain <family> <table> <name>` (the chain must be empty
    /// of references; its own rules go with it).
    pub fn del_chain(&mut self, table: &str, name: &str) {
        let msg = NfTablesMessage::DeleteChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(table.to_string()),
                ChainAttribute::Name(name.to_string()),
            ],
        });
        let label = format!("delete chain {} {table} {name}", self.f());
        self.push(msg, 0, label);
    }

    /// `nft add set|map <family> <table> <name> { type ..; flags ..; }`.
    pub fn add_set(&mut self, table: &str, spec: &SetSpec) {
        let udata = (spec.fields == [Field::IFNAME]).then(|| {
            // Key byte order = host, so `nft list` prints interface names
            // as strings.
            let mut u = Vec::new();
            udata::u32(&mut u, udata::SET_KEYBYTEORDER, udata::HOST_ENDIAN);
            u
        });
        self.set(table, spec, udata);
    }

    /// `nft add set <family> <table> <name> { type <field>; flags interval;
    /// auto-merge; }`: a set of ranges of one field, with the user data nft
    /// itself writes (key byte order, auto-merge) so that `nft list` prints
    /// the set as `nft -f` would have made it. Its elements go in with
    /// [`Self::add_ipv4_intervals`].
    pub fn add_merged_interval_set(&mut self, table: &str, name: &str, field: Field) {
        let spec = SetSpec {
            name: name.to_string(),
            fields: vec![field],
            interval: true,
            verdict_map: false,
        };
        let mut u = Vec::new();
        udata::u32(&mut u, udata::SET_KEYBYTEORDER, field.byteorder());
        udata::u32(&mut u, udata::SET_MERGE_ELEMENTS, 1);
        self.set(table, &spec, Some(u));
    }

    fn set(&mut self, table: &str, spec: &SetSpec, udata: Option<Vec<u8>>) {
        // Set ids only need to be unique within one batch; a process-wide
        // counter keeps them unique when batches are appended to each other.
        let id = NEXT_SET_ID.fetch_add(1, Ordering::Relaxed);
        let mut a = vec![
            SetAttribute::Table(table.to_string()),
            SetAttribute::Name(spec.name.clone()),
            SetAttribute::Flags(spec.flags()),
            SetAttribute::KeyType(spec.key_type()),
            SetAttribute::KeyLen(spec.key_len()),
        ];
        if spec.verdict_map {
            a.push(SetAttribute::DataType(DATA_VERDICT));
            a.push(SetAttribute::DataLen(0));
        }
        a.push(SetAttribute::Id(id));
        if let Some(u) = udata {
            a.push(SetAttribute::UserData(u));
        }
        if spec.fields.len() > 1 {
            a.push(SetAttribute::Description(vec![concat_desc(&spec.fields)]));
        }
        let label = format!("add set {} {table} {}", self.f(), spec.name);
        self.push(
            NfTablesMessage::NewSet(SetMessage { attributes: a }),
            NLM_F_CREATE,
            label,
        );
    }

    /// `nft delete set <family> <table> <name>`.
    pub fn del_set(&mut self, table: &str, name: &str) {
        let msg = NfTablesMessage::DeleteSet(SetMessage {
            attributes: vec![
                SetAttribute::Table(table.to_string()),
                SetAttribute::Name(name.to_string()),
            ],
        });
        let label = format!("delete set {} {table} {name}", self.f());
        self.push(msg, 0, label);
    }

    /// `nft add element <family> <table> <set> { .. }`, split over as many
    /// messages as the element list needs.
    pub fn add_elements(&mut self, table: &str, set: &str, elems: &[Element]) {
        let list: Vec<_> = elems.iter().map(element).collect();
        self.elements(true, "add", table, set, list);
    }

    /// `nft delete element <family> <table> <set> { .. }`.
    pub fn del_elements(&mut self, table: &str, set: &str, elems: &[Element]) {
        let list: Vec<_> = elems.iter().map(element).collect();
        self.elements(false, "delete", table, set, list);
    }

    /// `nft add element <family> <table> <set> { a-b, c-d, .. }` for a
    /// single-field IPv4 interval set, encoded as nft encodes intervals:
    /// each range is its first address and, flagged as an interval end,
    /// the address after its last; a set not starting at 0.0.0.0 gets an
    /// interval end at 0.0.0.0, and a range up to 255.255.255.255 has no
    /// end element but is marked open in its user data. `ranges` must be
    /// sorted, disjoint and not adjacent (merged), as auto-merge makes them.
    pub fn add_ipv4_intervals(&mut self, table: &str, set: &str, ranges: &[(Ipv4Addr, Ipv4Addr)]) {
        let mut list = Vec::with_capacity(2 * ranges.len() + 1);
        let end_flag = SetElementAttribute::Flags(SetElementFlags::IntervalEnd);
        let key =
            |ip: u32| SetElementAttribute::Key(DataAttribute::Value(ip.to_be_bytes().to_vec()));
        if ranges
            .first()
            .is_some_and(|(first, _)| u32::from(*first) != 0)
        {
            list.push(encoded(vec![end_flag.clone(), key(0)]));
        }
        for (first, last) in ranges {
            let mut start = vec![key(u32::from(*first))];
            match u32::from(*last).checked_add(1) {
                Some(end) => {
                    list.push(encoded(start));
                    list.push(encoded(vec![end_flag.clone(), key(end)]));
                }
                None => {
                    let mut u = Vec::new();
                    udata::u32(
                        &mut u,
                        udata::SET_ELEM_FLAGS,
                        udata::SET_ELEM_F_INTERVAL_OPEN,
                    );
                    start.push(SetElementAttribute::UserData(u));
                    list.push(encoded(start));
                }
            }
        }
        self.elements(true, "add", table, set, list);
    }

    fn elements(
        &mut self,
        add: bool,
        verb: &str,
        table: &str,
        set: &str,
        list: Vec<ListAttribute<SetElementAttribute>>,
    ) {
        let mut rest = list.into_iter().peekable();
        while rest.peek().is_some() {
            let mut chunk = Vec::new();
            let mut bytes = 0;
            while bytes < ELEMS_PER_MSG_BYTES {
                let Some(e) = rest.next() else { break };
                bytes += e.buffer_len();
                chunk.push(e);
            }
            let n = chunk.len();
            let attributes = vec![
                SetElementList::Table(table.to_string()),
                SetElementList::Set(set.to_string()),
                SetElementList::Elements(chunk),
            ];
            let msg = SetElementMessage { attributes };
            let label = format!("{verb} {n} elements in set {} {table} {set}", self.f());
            if add {
                self.push(NfTablesMessage::NewSetElement(msg), NLM_F_CREATE, label);
            } else {
                self.push(NfTablesMessage::DeleteSetElement(msg), 0, label);
            }
        }
    }

    /// `nft add rule <family> <table> <chain> <exprs>` (appended).
    pub fn add_rule(&mut self, table: &str, chain: &str, exprs: &[Expr]) {
        let msg = NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(table.to_string()),
                RuleAttribute::Chain(chain.to_string()),
                RuleAttribute::Expressions(exprs.iter().map(Expr::to_list_elem).collect()),
            ],
        });
        let label = format!("add rule {} {table} {chain}", self.f());
        self.push(msg, NLM_F_CREATE | NLM_F_APPEND, label);
    }
}

fn element(e: &Element) -> ListAttribute<SetElementAttribute> {
    let mut a = vec![SetElementAttribute::Key(DataAttribute::Value(
        e.key.clone(),
    ))];
    if let Some(end) = &e.key_end {
        a.push(SetElementAttribute::KeyEnd(vec![DefaultNla::new(
            DATA_VALUE,
            end.clone(),
        )]));
    }
    if let Some(v) = &e.verdict {
        let v = match v {
            VerdictData::Jump(c) => Verdict::Jump(c.clone()),
            VerdictData::Drop => Verdict::Drop,
        };
        a.push(SetElementAttribute::Data(v.data()));
    }
    encoded(a)
}

/// One `NFTA_LIST_ELEM` of an element list, encoded once, here.
///
/// Element lists are the one place with thousands of nested attributes,
/// and netlink-packet-core's encoder recomputes a nest's length at every
/// level below it (twice per level): left typed, a 10 000-element rebuild
/// took five times as long to encode. Each element is still built from
/// netlink-packet-netfilter's attributes; it is only encoded early.
fn encoded(attrs: Vec<SetElementAttribute>) -> ListAttribute<SetElementAttribute> {
    let mut bytes = vec![0; attrs.as_slice().buffer_len()];
    attrs.as_slice().emit(&mut bytes);
    ListAttribute::Other(DefaultNla::new(LIST_ELEM | NLA_F_NESTED, bytes))
}

/// `NFTA_SET_DESC_CONCAT`: one list element per field with its length.
fn concat_desc(fields: &[Field]) -> SetDescription {
    let list: Vec<ListAttribute<DefaultNla>> = fields
        .iter()
        .map(|f| {
            ListAttribute::Element(vec![DefaultNla::new(
                SET_FIELD_LEN,
                f.len.to_be_bytes().to_vec(),
            )])
        })
        .collect();
    let mut bytes = vec![0; list.as_slice().buffer_len()];
    list.as_slice().emit(&mut bytes);
    SetDescription::Other(DefaultNla::new(SET_DESC_CONCAT | NLA_F_NESTED, bytes))
}

#[cfg(test)]
mod tests {
    use netlink_packet_netfilter::nftables::SetElementFlags;

    use super::*;
    use crate::socket::{decode, encode_into};

    /// The message as the kernel gets it, parsed back.
    fn reparsed(op: &Op) -> NetfilterMessage {
        let mut out = Vec::new();
        encode_into(&op.msg, op.flags, 1, &mut out);
        let mut back = decode::<NetfilterMessage>(&out).unwrap();
        assert_eq!(back.len(), 1);
        match back.remove(0).payload {
            netlink_packet_core::NetlinkPayload::InnerMessage(m) => m,
            other => panic!("{other:?}"),
        }
    }

    fn elements(op: &Op) -> Vec<(bool, Vec<u8>, bool)> {
        let NetfilterMessageInner::NfTables(NfTablesMessage::NewSetElement(m)) = reparsed(op).inner
        else {
            panic!("not an element message: {}", op.label)
        };
        let list = m
            .attributes
            .iter()
            .find_map(|a| match a {
                SetElementList::Elements(l) => Some(l),
                _ => None,
            })
            .expect("elements");
        list.iter()
            .map(|e| {
                let ListAttribute::Element(attrs) = e else {
                    panic!("not an element")
                };
                let mut end = false;
                let mut key = Vec::new();
                let mut open = false;
                for a in attrs {
                    match a {
                        SetElementAttribute::Flags(f) => {
                            end = f.contains(SetElementFlags::IntervalEnd)
                        }
                        SetElementAttribute::Key(DataAttribute::Value(k)) => key = k.clone(),
                        SetElementAttribute::UserData(u) => open = u == &[1, 4, 1, 0, 0, 0],
                        _ => {}
                    }
                }
                (end, key, open)
            })
            .collect()
    }

    #[test]
    fn intervals_are_encoded_as_nft_encodes_them() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mut b = Batch::for_family(Family::Ip);
        b.add_ipv4_intervals(
            "t",
            "s",
            &[
                (ip("10.0.0.0"), ip("10.1.255.255")),
                (ip("192.168.0.0"), ip("192.168.255.255")),
            ],
        );
        assert_eq!(b.ops()[0].label, "add 5 elements in set ip t s");
        assert_eq!(
            elements(&b.ops()[0]),
            vec![
                (true, vec![0, 0, 0, 0], false),
                (false, vec![10, 0, 0, 0], false),
                (true, vec![10, 2, 0, 0], false),
                (false, vec![192, 168, 0, 0], false),
                (true, vec![192, 169, 0, 0], false),
            ]
        );
        // From 0.0.0.0: no leading end; up to the top: no end, marked open.
        let mut b = Batch::for_family(Family::Ip);
        b.add_ipv4_intervals(
            "t",
            "s",
            &[
                (ip("0.0.0.0"), ip("0.255.255.255")),
                (ip("224.0.0.0"), ip("255.255.255.255")),
            ],
        );
        assert_eq!(
            elements(&b.ops()[0]),
            vec![
                (false, vec![0, 0, 0, 0], false),
                (true, vec![1, 0, 0, 0], false),
                (false, vec![224, 0, 0, 0], true),
            ]
        );
    }

    #[test]
    fn a_merged_interval_set_carries_nfts_user_data() {
        let mut b = Batch::for_family(Family::Ip);
        b.add_merged_interval_set("t", "no_snat", Field::IPV4);
        let Some(NfTablesMessage::NewSet(m)) = b.ops()[0].nft() else {
            panic!("not a set")
        };
        assert!(m
            .attributes
            .contains(&SetAttribute::Flags(SetFlags::Interval)));
        assert!(m.attributes.contains(&SetAttribute::KeyType(7)));
        assert!(m.attributes.contains(&SetAttribute::KeyLen(4)));
        // What nft 1.0.6 writes: key byte order big-endian, auto-merge.
        let mut u = vec![0, 4];
        u.extend_from_slice(&2u32.to_ne_bytes());
        u.extend_from_slice(&[2, 4]);
        u.extend_from_slice(&1u32.to_ne_bytes());
        assert!(m.attributes.contains(&SetAttribute::UserData(u)));
    }

    #[test]
    fn base_chains_name_their_type_and_hook() {
        let mut b = Batch::for_family(Family::Ip);
        b.add_base_chain(
            "t",
            "snat",
            ChainType::Nat,
            Hook {
                hooknum: HOOK_POSTROUTING,
                priority: PRIORITY_SRCNAT,
            },
        );
        b.add_base_chain(
            "t",
            "mark",
            ChainType::Filter,
            Hook {
                hooknum: HOOK_PREROUTING,
                priority: PRIORITY_MANGLE,
            },
        );
        let chain = |i: usize| {
            let Some(NfTablesMessage::NewChain(m)) = b.ops()[i].nft() else {
                panic!("not a chain")
            };
            m.attributes.clone()
        };
        assert!(chain(0).contains(&ChainAttribute::Type("nat".into())));
        assert!(chain(0).contains(&ChainAttribute::Hook(vec![
            NfHook::Number(HookNumber::Inet(4.into())),
            NfHook::Priority(100),
        ])));
        assert!(chain(1).contains(&ChainAttribute::Hook(vec![
            NfHook::Number(HookNumber::Inet(0.into())),
            NfHook::Priority(-150i32 as u32),
        ])));
        assert_eq!(b.ops()[1].label, "add chain ip t mark");
    }

    #[test]
    fn messages_survive_a_round_trip_through_the_parser() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mut b = Batch::for_family(Family::Ip);
        b.add_table("t", false);
        b.del_table("t");
        b.add_merged_interval_set("t", "s", Field::IPV4);
        b.add_ipv4_intervals("t", "s", &[(ip("10.0.0.0"), ip("10.0.255.255"))]);
        b.add_rule(
            "t",
            "c",
            &[
                Expr::Immediate(Verdict::Jump("x".into())),
                Expr::NotInSet {
                    set: "s".into(),
                    sreg: 1,
                },
            ],
        );
        b.add_elements(
            "t",
            "m",
            &[Element {
                key: ifname_key("eni1"),
                key_end: None,
                verdict: Some(VerdictData::Jump("p1".into())),
            }],
        );
        for op in b.ops() {
            let back = reparsed(op);
            // Element lists travel pre-encoded (see `encoded`): compare
            // their bytes; everything else compares as typed messages.
            let (mut first, mut again) = (Vec::new(), Vec::new());
            encode_into(&op.msg, op.flags, 1, &mut first);
            encode_into(&back, op.flags, 1, &mut again);
            assert_eq!(first, again, "{}", op.label);
            if !op.label.contains("elements") {
                assert_eq!(back, op.msg, "{}", op.label);
            }
        }
        assert_eq!(elements(&b.ops()[3]).len(), 3);
    }

    #[test]
    fn large_element_lists_are_split_under_the_nest_limit() {
        let elems: Vec<Element> = (0..5000u32)
            .map(|i| Element {
                key: i.to_be_bytes().to_vec(),
                key_end: Some(i.to_be_bytes().to_vec()),
                verdict: None,
            })
            .collect();
        let mut b = Batch::new();
        b.add_elements("t", "s", &elems);
        assert!(b.len() > 1);
        let mut total = 0;
        for op in b.ops() {
            let mut out = Vec::new();
            encode_into(&op.msg, 0, 1, &mut out);
            // nlmsghdr + nfgenmsg, then the list's attributes.
            let list = netlink_packet_core::NlasIterator::new(&out[20..])
                .map(|a| a.unwrap())
                .find(|a| a.kind() == 3)
                .expect("NFTA_SET_ELEM_LIST_ELEMENTS");
            total += netlink_packet_core::NlasIterator::new(list.value()).count();
            assert!(out.len() < 64 * 1024, "{} bytes", out.len());
        }
        assert_eq!(total, 5000);
    }
}
