//! SNAT's nftables table, programmed over netlink, against what the
//! `nft -f` script of earlier versions made: the same listing, and a table
//! left by an earlier version is found and replaced. Each case runs on a
//! thread that `unshare`s a fresh network namespace (gone with the
//! thread); `nft`, run from that thread, observes inside it.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use ipamd::dataplane::snat::{self, SnatSettings};
use ipnetwork::Ipv4Network;

/// Runs `f` on a thread of its own inside a fresh network namespace.
fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare a network namespace");
        f()
    })
    .join()
    .expect("test thread")
}

/// `nft <args>` in the calling thread's namespace, fed `stdin`; stdout.
fn nft(args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn list() -> String {
    nft(&["list", "table", "ip", snat::TABLE], "")
}

fn tables() -> String {
    nft(&["list", "tables"], "")
}

/// The script the `nft -f` implementation wrote, verbatim.
fn old_script(settings: &SnatSettings, vpc_cidrs: &[Ipv4Network], primary_ip: Ipv4Addr) -> String {
    let table = snat::TABLE;
    let mark = snat::MARK;
    let mut s = format!("table ip {table}\ndelete table ip {table}\n");
    if settings.external {
        return s;
    }
    let keep: Vec<String> = vpc_cidrs
        .iter()
        .chain(&settings.exclude)
        .map(|c| c.to_string())
        .collect();
    s.push_str(&format!("table ip {table} {{\n"));
    s.push_str("  set no_snat {\n    type ipv4_addr\n    flags interval\n    auto-merge\n");
    if !keep.is_empty() {
        s.push_str(&format!("    elements = {{ {} }}\n", keep.join(", ")));
    }
    s.push_str("  }\n");
    s.push_str(&format!(
        "  chain mark_egress {{\n    type filter hook prerouting priority mangle; policy accept;\n    \
         iifname \"eni*\" ip daddr != @no_snat meta mark set meta mark | {mark:#x}\n  }}\n"
    ));
    s.push_str(&format!(
        "  chain egress_snat {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         ip daddr @no_snat return\n    fib daddr type local return\n    \
         snat to {primary_ip} fully-random\n  }}\n}}\n"
    ));
    s
}

fn net(s: &str) -> Ipv4Network {
    s.parse().unwrap()
}

const PRIMARY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);

/// Settings of every shape the two variables allow.
fn cases() -> Vec<(SnatSettings, Vec<Ipv4Network>)> {
    vec![
        (
            SnatSettings {
                external: false,
                exclude: vec![net("192.168.0.0/16")],
            },
            vec![net("10.0.0.0/16")],
        ),
        (
            // Overlapping, adjacent and unsorted: auto-merge's work.
            SnatSettings {
                external: false,
                exclude: vec![
                    net("10.0.5.0/24"),
                    net("10.1.0.0/16"),
                    net("0.0.0.0/8"),
                    net("224.0.0.0/3"),
                ],
            },
            vec![net("10.0.0.0/16"), net("100.64.0.0/10")],
        ),
        (SnatSettings::default(), vec![]),
    ]
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn the_snat_table_lists_as_the_nft_script_made_it() {
    for (settings, vpc) in cases() {
        let (s, v) = (settings.clone(), vpc.clone());
        let ours = in_fresh_netns(move || {
            snat::program(&s, &v, PRIMARY).expect("program SNAT");
            list()
        });
        let script = old_script(&settings, &vpc, PRIMARY);
        let theirs = in_fresh_netns(move || {
            nft(&["-f", "-"], &script);
            list()
        });
        assert_eq!(ours, theirs, "{settings:?} {vpc:?}");
    }
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn a_table_left_by_the_nft_version_is_replaced() {
    let (settings, vpc) = cases().remove(1);
    let (s, v) = (settings.clone(), vpc.clone());
    let fresh = in_fresh_netns(move || {
        snat::program(&s, &v, PRIMARY).unwrap();
        list()
    });
    let upgraded = in_fresh_netns(move || {
        // What an earlier version left: another VPC, another address.
        let old = old_script(
            &SnatSettings::default(),
            &[net("172.31.0.0/16")],
            Ipv4Addr::new(172, 31, 0, 9),
        );
        nft(&["-f", "-"], &old);
        assert!(list().contains("172.31.0.9"));
        snat::program(&settings, &vpc, PRIMARY).unwrap();
        // And again, as a restart does.
        snat::program(&settings, &vpc, PRIMARY).unwrap();
        list()
    });
    assert_eq!(upgraded, fresh);
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn external_snat_removes_the_table_and_needs_none() {
    in_fresh_netns(|| {
        let external = SnatSettings {
            external: true,
            exclude: vec![],
        };
        // Nothing to remove: still fine.
        snat::program(&external, &[net("10.0.0.0/16")], PRIMARY).unwrap();
        assert_eq!(tables().trim(), "");
        snat::program(&SnatSettings::default(), &[net("10.0.0.0/16")], PRIMARY).unwrap();
        assert!(tables().contains(snat::TABLE));
        snat::program(&external, &[net("10.0.0.0/16")], PRIMARY).unwrap();
        assert_eq!(tables().trim(), "");
    });
}
