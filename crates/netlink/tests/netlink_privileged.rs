//! The netlink layer against the real kernel. Every test runs on a thread
//! of its own that `unshare`s a fresh network namespace first: the
//! machine's namespace is never touched, and the namespace goes away with
//! the thread. Programs a test runs (`ip`, `nft`) are started from that
//! thread and so run inside its namespace too.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use nix::sched::{unshare, CloneFlags};
use vpc_cni_core::mac::MacAddr;
use vpc_cni_netlink::netns::{self, NetnsError};
use vpc_cni_netlink::nft::{
    fib_daddr_is_local, iifname_prefix, ip_addr, reg, set_mark_bits, snat_to, AddrField, Batch,
    ChainType, Expr, Family, Field, Hook, NftSocket, Verdict, HOOK_POSTROUTING, HOOK_PREROUTING,
    PRIORITY_MANGLE, PRIORITY_SRCNAT,
};
use vpc_cni_netlink::route::{msg, Create, LinkId, Req, RouteSocket};
use vpc_cni_netlink::Error;

/// Runs `f` on a thread of its own inside a fresh network namespace.
fn in_private_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f()
    })
    .join()
    .expect("test thread")
}

/// Runs a program in the calling thread's namespace; its stdout.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(std::process::Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

#[test]
#[ignore = "privileged: needs CAP_NET_ADMIN"]
fn route_verbs_make_and_read_links_and_addresses() {
    in_private_netns(|| {
        let mut s = RouteSocket::open().unwrap();
        s.add_veth_pair("eth1", MAC, Some(9001), "vpc1").unwrap();
        let eth1 = s.get_link(LinkId::Name("eth1")).unwrap().expect("eth1");
        assert!(eth1.has_mac(MAC));
        assert_eq!(eth1.mtu, Some(9001));
        assert!(!eth1.up);
        assert!(s
            .dump_links()
            .unwrap()
            .iter()
            .any(|l| l.name == "vpc1" && l.index != eth1.index));

        s.set_up(eth1.index, None).unwrap();
        s.add_ifaddr(eth1.index, Ipv4Addr::new(10, 0, 0, 4), 20)
            .unwrap();
        let by_index = s.get_link(LinkId::Index(eth1.index)).unwrap().unwrap();
        assert!(by_index.up);
        assert_eq!(by_index.name, "eth1");
        assert_eq!(
            s.ipv4_addrs(eth1.index).unwrap(),
            vec![(Ipv4Addr::new(10, 0, 0, 4), 20)]
        );
        let shown = run("ip", &["-o", "-4", "addr", "show", "dev", "eth1"], None);
        assert!(shown.contains("10.0.0.4/20 brd 10.0.15.255"), "{shown}");

        let again = s.add_veth_pair("eth1", MAC, None, "vpc9").unwrap_err();
        assert!(again.is_exists(), "{again}");
        assert!(
            again
                .to_string()
                .starts_with("create veth eth1 (peer vpc9): "),
            "the error names the request: {again}"
        );

        s.del_link(eth1.index).unwrap();
        s.del_link(eth1.index).unwrap();
        assert!(s.get_link(LinkId::Name("eth1")).unwrap().is_none());
        assert!(s.get_link(LinkId::Name("vpc1")).unwrap().is_none());
    });
}

#[test]
#[ignore = "privileged: needs CAP_NET_ADMIN"]
fn a_batch_tries_every_request_and_reports_the_first_refusal() {
    in_private_netns(|| {
        let mut s = RouteSocket::open().unwrap();
        let lo = s.get_link(LinkId::Name("lo")).unwrap().unwrap().index;
        let addr = |last: u8| {
            Req::new(
                msg::new_addr(lo, Ipv4Addr::new(10, 9, 9, last), 32),
                Create::Excl,
                format!("add address 10.9.9.{last}/32"),
            )
        };
        let err = s
            .batch(vec![
                Req::new(msg::set_link_up(lo, 65536), Create::No, "set lo up"),
                addr(1),
                addr(1),
                addr(2),
                addr(2),
            ])
            .unwrap_err();
        match &err {
            Error::Kernel { op, source } => {
                assert_eq!(op, "add address 10.9.9.1/32");
                assert_eq!(source.raw_os_error(), Some(libc::EEXIST));
            }
            other => panic!("not a kernel refusal: {other:?}"),
        }
        let have = s.ipv4_addrs(lo).unwrap();
        assert!(have.contains(&(Ipv4Addr::new(10, 9, 9, 2), 32)), "{have:?}");
        // Tolerated errnos are success.
        s.batch(vec![addr(1).tolerate(&[libc::EEXIST])]).unwrap();
        // The socket is still in step after an error.
        assert!(s.get_link(LinkId::Name("lo")).unwrap().is_some());
    });
}

#[test]
#[ignore = "privileged: needs CAP_NET_ADMIN"]
fn a_created_veth_is_echoed_with_its_peer() {
    in_private_netns(|| {
        let here = File::open("/proc/thread-self/ns/net").unwrap();
        let mut s = RouteSocket::open().unwrap();
        let echoed = s
            .request_echo(Req::new(
                msg::new_veth(
                    "enih",
                    MAC,
                    "eth0",
                    MacAddr([2, 0, 0, 0, 0, 2]),
                    here.as_raw_fd(),
                    1500,
                ),
                Create::Excl,
                "create veth enih",
            ))
            .unwrap()
            .expect("Linux >= 6.3 echoes a new link");
        let index = msg::link_index(&echoed).unwrap();
        let peer = msg::link_peer_index(&echoed).expect("the peer's index");
        assert_eq!(
            s.get_link(LinkId::Name("enih")).unwrap().unwrap().index,
            index
        );
        assert_eq!(
            s.get_link(LinkId::Name("eth0")).unwrap().unwrap().index,
            peer
        );
    });
}

#[test]
#[ignore = "privileged: needs CAP_NET_ADMIN"]
fn a_socket_opened_in_another_namespace_stays_there() {
    // The target: a namespace kept alive by its file only.
    let target = in_private_netns(|| File::open("/proc/thread-self/ns/net").unwrap());
    in_private_netns(move || {
        let home = netns::current().unwrap();
        let mut there = netns::socket_in(&target, &home, "target").unwrap();
        let now = File::open("/proc/thread-self/ns/net").unwrap();
        assert_eq!(
            now.metadata().unwrap().ino(),
            home.metadata().unwrap().ino(),
            "the thread is back home"
        );
        there.add_veth_pair("far0", MAC, None, "far1").unwrap();
        assert!(there.get_link(LinkId::Name("far0")).unwrap().is_some());
        let mut here = RouteSocket::open().unwrap();
        assert!(here.get_link(LinkId::Name("far0")).unwrap().is_none());
    });
    assert!(matches!(
        netns::open("/run/netns/vpc-cni-netlink-no-such-namespace"),
        Err(NetnsError::Gone { .. })
    ));
}

/// The same table twice: through this crate, and as the script `nft -f`
/// reads. Both must list alike.
fn sample_batch() -> Batch {
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let mut b = Batch::for_family(Family::Ip);
    b.add_table("t", false);
    b.del_table("t");
    b.add_table("t", false);
    b.add_base_chain(
        "t",
        "tag",
        ChainType::Filter,
        Hook {
            hooknum: HOOK_PREROUTING,
            priority: PRIORITY_MANGLE,
        },
    );
    b.add_base_chain(
        "t",
        "out",
        ChainType::Nat,
        Hook {
            hooknum: HOOK_POSTROUTING,
            priority: PRIORITY_SRCNAT,
        },
    );
    b.add_merged_interval_set("t", "keep", Field::IPV4);
    b.add_ipv4_intervals(
        "t",
        "keep",
        &[
            (ip("0.0.0.0"), ip("0.255.255.255")),
            (ip("10.0.0.0"), ip("10.1.255.255")),
            (ip("192.168.1.1"), ip("192.168.1.1")),
            (ip("224.0.0.0"), ip("255.255.255.255")),
        ],
    );
    let mut mark = iifname_prefix("veth");
    mark.push(ip_addr(AddrField::Destination, reg::R1));
    mark.push(Expr::NotInSet {
        set: "keep".into(),
        sreg: reg::R1,
    });
    mark.extend(set_mark_bits(0x4000));
    b.add_rule("t", "tag", &mark);
    b.add_rule(
        "t",
        "out",
        &[
            ip_addr(AddrField::Source, reg::R1),
            Expr::Lookup {
                set: "keep".into(),
                sreg: reg::R1,
                dreg: None,
            },
            Expr::Immediate(Verdict::Accept),
        ],
    );
    let mut local = fib_daddr_is_local();
    local.push(Expr::Immediate(Verdict::Return));
    b.add_rule("t", "out", &local);
    b.add_rule("t", "out", &snat_to(ip("192.0.2.7"), true));
    b
}

const SAMPLE_SCRIPT: &str = r#"table ip t
delete table ip t
table ip t {
  set keep {
    type ipv4_addr
    flags interval
    auto-merge
    elements = { 0.0.0.0/8, 10.0.0.0/15, 192.168.1.1, 224.0.0.0/3 }
  }
  chain tag {
    type filter hook prerouting priority mangle; policy accept;
    iifname "veth*" ip daddr != @keep meta mark set meta mark | 0x4000
  }
  chain out {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr @keep accept
    fib daddr type local return
    snat to 192.0.2.7 fully-random
  }
}
"#;

#[test]
#[ignore = "privileged: needs CAP_NET_ADMIN"]
fn an_nft_batch_lists_as_nft_itself_would_have_made_it() {
    let ours = in_private_netns(|| {
        let mut s = NftSocket::open().unwrap();
        s.apply(&sample_batch()).unwrap();
        // Applying again replaces the table: same listing.
        s.apply(&sample_batch()).unwrap();
        run("nft", &["list", "table", "ip", "t"], None)
    });
    let nfts = in_private_netns(|| {
        run("nft", &["-f", "-"], Some(SAMPLE_SCRIPT));
        run("nft", &["list", "table", "ip", "t"], None)
    });
    assert_eq!(ours, nfts);
    assert!(ours.contains("auto-merge"), "{ours}");
    assert!(ours.contains("224.0.0.0/3"), "{ours}");
}

#[test]
#[ignore = "privileged: needs CAP_NET_ADMIN"]
fn a_refused_transaction_names_the_message_and_applies_nothing() {
    in_private_netns(|| {
        let mut s = NftSocket::open().unwrap();
        let mut b = Batch::for_family(Family::Ip);
        b.add_table("t", true);
        b.add_rule("t", "no_such_chain", &[Expr::Immediate(Verdict::Accept)]);
        let err = s.apply(&b).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(
            err.to_string().starts_with("add rule ip t no_such_chain: "),
            "{err}"
        );
        assert_eq!(run("nft", &["list", "tables"], None).trim(), "");
        // An exclusive create of an existing table: EEXIST.
        let mut b = Batch::for_family(Family::Ip);
        b.add_table("t", true);
        s.apply(&b).unwrap();
        assert!(s.apply(&b).unwrap_err().is_exists());
    });
}
