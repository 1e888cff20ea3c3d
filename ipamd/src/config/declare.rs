//! Every setting, declared once: [`SETTINGS`].
//!
//! A setting is an environment variable (the DaemonSet takes them from the
//! ConfigMap `vpc-cni-config`; the live ones are also re-read from the
//! mounted ConfigMap, see [`crate::tuning`]). Its entry gives everything
//! the rest of the project needs to know about it: the name, what values it
//! takes ([`Kind`], which the reader in [`super::parse`] enforces, ranges
//! included), the default as an operator would write it ([`DefaultValue`],
//! which the reader applies: a default is written nowhere else), whether a
//! change applies without a restart, whether it is aws-node's, who reads it
//! ([`Reader`]) and a one-line description.
//!
//! Derived from it: [`KNOWN_ENV`] (which the manifests, the chart and the
//! operator's guide are checked against), [`LIVE_KEYS`] (what live tuning
//! applies and `ipamd status` lists). The tests at the bottom check it
//! against the builders (every setting is read, by the reader it names),
//! against itself (defaults are valid values of their kind) and against
//! the operator's guide (every setting is in the "Settings" section with its
//! default and live marker).

/// One setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    /// The environment variable (and ConfigMap key).
    pub name: &'static str,
    /// The values it takes.
    pub kind: Kind,
    /// What applies when it is unset or empty.
    pub default: DefaultValue,
    /// Applied without a restart when the ConfigMap changes.
    pub live: bool,
    /// aws-node's name, with aws-node's meaning.
    pub aws_node: bool,
    /// Who reads it.
    pub reader: Reader,
    /// What it does, in one line (the guide says more).
    pub doc: &'static str,
}

/// The values a setting takes. The reader checks a value against its
/// setting's kind, and the error names the variable, the value and what
/// the kind accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// `true` or `false`, in the given syntax.
    Bool(BoolSyntax),
    /// A whole number in `min..=max`, counted in `unit`.
    Int {
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
        /// What it counts.
        unit: Unit,
    },
    /// A decimal number at most `max`, and at least `min` (above it when
    /// `min_exclusive`).
    Decimal {
        /// Lower bound.
        min: f64,
        /// Whether `min` itself is refused.
        min_exclusive: bool,
        /// Largest accepted.
        max: f64,
        /// What it counts.
        unit: Unit,
    },
    /// One of these words.
    Enum {
        /// The words, in the order error messages list them.
        values: &'static [&'static str],
        /// Whether `DEBUG` counts as `debug`.
        any_case: bool,
    },
    /// An absolute path.
    Path,
    /// An IPv4 CIDR (`10.0.0.0/16`).
    Cidr,
    /// Comma-separated IPv4 CIDRs; blanks around items ignored.
    CidrList,
    /// `:PORT`, `IP:PORT` or `off`.
    ListenAddr,
    /// Any text.
    Text,
    /// Parsed by the part that owns the value's type; `accepts` says what
    /// it takes (and is what its error says).
    Custom {
        /// The accepted values, as an error message lists them.
        accepts: &'static str,
    },
}

/// The two boolean syntaxes in use: ours, and aws-node's for the aws-node
/// settings that always took the looser one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoolSyntax {
    /// Exactly `true` or `false`.
    Strict,
    /// `true`, `false`, `1` or `0`, in any case (aws-node's
    /// `AWS_VPC_K8S_CNI_EXTERNALSNAT`).
    Loose,
}

/// What a number counts; durations are read into `Duration` in this unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A plain count.
    None,
    /// Seconds.
    Seconds,
    /// Milliseconds.
    Millis,
    /// Calls per second.
    PerSecond,
}

impl Unit {
    /// The suffix after a bound in messages (`between 1 and 600000 ms`).
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::None => "",
            Unit::Seconds => " seconds",
            Unit::Millis => " ms",
            Unit::PerSecond => " calls per second",
        }
    }
}

/// What applies when a setting is unset (or empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// This value, exactly as an operator would write it: unset and set to
    /// it are the same.
    Is(&'static str),
    /// Nothing: the feature is off or the part decides without it.
    Unset,
    /// No fixed value: what applies instead, as the guide words it.
    Computed(&'static str),
}

/// Who reads a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// `ipamd serve`.
    Serve,
    /// `ipamd install-cni` (the init container).
    InstallCni,
    /// Both, the same way: what the conflist tells the plugin must match
    /// what the daemon does.
    Both,
    /// The AWS SDK, from the environment itself: declared so the manifests
    /// may set it and the guide documents it.
    AwsSdk,
    /// `ipamd serve` accepts and validates it, but this build does not act
    /// on it yet (an aws-node configuration still starts; a warning says so).
    NotYet,
}

impl Reader {
    /// Whether `ipamd serve` reads it.
    pub fn serve(self) -> bool {
        matches!(self, Reader::Serve | Reader::Both | Reader::NotYet)
    }

    /// Whether `ipamd install-cni` reads it.
    pub fn install_cni(self) -> bool {
        matches!(self, Reader::InstallCni | Reader::Both)
    }
}

use self::DefaultValue::{Computed, Is, Unset};

/// A whole number of the `u32` settings (counts, targets).
const COUNT: Kind = int(0, u32::MAX as u64, Unit::None);

const fn int(min: u64, max: u64, unit: Unit) -> Kind {
    Kind::Int { min, max, unit }
}

const fn words(values: &'static [&'static str]) -> Kind {
    Kind::Enum {
        values,
        any_case: false,
    }
}

/// An EC2 call class's bucket size.
const BURST: Kind = Kind::Decimal {
    min: 1.0,
    min_exclusive: false,
    max: 10_000.0,
    unit: Unit::None,
};

/// An EC2 call class's refill rate.
const RATE: Kind = Kind::Decimal {
    min: 0.0,
    min_exclusive: true,
    max: 1000.0,
    unit: Unit::PerSecond,
};

/// A setting read by `ipamd serve`, restart to change, ours.
const fn s(name: &'static str, kind: Kind, default: DefaultValue, doc: &'static str) -> Setting {
    Setting {
        name,
        kind,
        default,
        live: false,
        aws_node: false,
        reader: Reader::Serve,
        doc,
    }
}

impl Setting {
    const fn live(self) -> Self {
        Setting { live: true, ..self }
    }

    const fn aws_node(self) -> Self {
        Setting {
            aws_node: true,
            ..self
        }
    }

    const fn read_by(self, reader: Reader) -> Self {
        Setting { reader, ..self }
    }
}

/// `VPC_CNI_METRICS_ADDR`'s default: aws-node's metrics port, on every
/// address of the node.
pub const DEFAULT_ADDR: &str = ":61678";

/// Every setting, in the order of the operator's guide.
pub const SETTINGS: &[Setting] = &[
    // Warm pool.
    s(
        "WARM_ENI_TARGET",
        COUNT,
        Is("1"),
        "keep this many ENIs' worth of free addresses",
    )
    .live()
    .aws_node(),
    s(
        "WARM_IP_TARGET",
        COUNT,
        Unset,
        "keep exactly this many free addresses",
    )
    .live()
    .aws_node(),
    s(
        "MINIMUM_IP_TARGET",
        COUNT,
        Unset,
        "keep at least this many addresses on the node",
    )
    .live()
    .aws_node(),
    s(
        "MAX_ENI",
        int(1, u32::MAX as u64, Unit::None),
        Computed("instance type's limit"),
        "never attach more ENIs than this (the primary counts)",
    )
    .aws_node(),
    s(
        "IP_COOLDOWN_PERIOD",
        int(0, 86_400, Unit::Seconds),
        Is("30"),
        "seconds a released address rests before it is handed out again",
    )
    .aws_node(),
    s(
        "ENABLE_PREFIX_DELEGATION",
        Kind::Bool(BoolSyntax::Strict),
        Is("false"),
        "grow by /28 prefixes instead of single addresses",
    )
    .aws_node(),
    s(
        "WARM_PREFIX_TARGET",
        COUNT,
        Computed("1 in prefix mode when neither `WARM_IP_TARGET` nor `MINIMUM_IP_TARGET` is set"),
        "with prefix delegation: keep this many free /28 prefixes",
    )
    .live()
    .aws_node(),
    s(
        "VPC_CNI_WARM_POLICY",
        words(&["fixed", "adaptive"]),
        Is("fixed"),
        "`fixed` targets, or `adaptive` sizing from pod arrivals and EC2 latency",
    ),
    s(
        "VPC_CNI_RELEASE_DELAY_S",
        int(0, 86_400, Unit::Seconds),
        Is("300"),
        "how long a surplus must last before it is given back to EC2",
    ),
    s(
        "VPC_CNI_RECONCILE_INTERVAL_S",
        int(60, 86_400, Unit::Seconds),
        Is("3600"),
        "mean interval of the inventory check against EC2",
    ),
    s(
        "VPC_CNI_LEAK_GRACE_S",
        int(60, 7 * 86_400, Unit::Seconds),
        Is("600"),
        "age beyond which a detached ENI tagged for this node is deleted",
    ),
    // EC2.
    s(
        "CLUSTER_NAME",
        Kind::Text,
        Unset,
        "value of the cluster tag on ENIs ipamd creates",
    )
    .aws_node(),
    s(
        "VPC_CNI_CLOUD",
        words(&["ec2", "sim"]),
        Is("ec2"),
        "the cloud provider: `ec2`, or `sim` for the embedded simulated VPC",
    ),
    s(
        "VPC_CNI_EC2_TIMEOUT_MS",
        int(1, 600_000, Unit::Millis),
        Is("20000"),
        "deadline of one EC2 call",
    ),
    s(
        "VPC_CNI_ENI_LINK_TIMEOUT_MS",
        int(1, 600_000, Unit::Millis),
        Is("30000"),
        "how long an attach waits for the ENI's link to appear",
    ),
    s(
        "VPC_CNI_EC2_MUTATING_BURST",
        BURST,
        Is("20"),
        "token bucket size of create/delete ENI and assign/unassign calls",
    ),
    s(
        "VPC_CNI_EC2_MUTATING_RATE",
        RATE,
        Is("0.5"),
        "refill per second of that bucket",
    ),
    s(
        "VPC_CNI_EC2_ATTACH_BURST",
        BURST,
        Is("10"),
        "token bucket size of attach/detach calls",
    ),
    s(
        "VPC_CNI_EC2_ATTACH_RATE",
        RATE,
        Is("0.5"),
        "refill per second of that bucket",
    ),
    s(
        "VPC_CNI_EC2_DESCRIBE_BURST",
        BURST,
        Is("20"),
        "token bucket size of DescribeNetworkInterfaces",
    ),
    s(
        "VPC_CNI_EC2_DESCRIBE_RATE",
        RATE,
        Is("2"),
        "refill per second of that bucket",
    ),
    s(
        "VPC_CNI_EC2_TAGS_BURST",
        BURST,
        Is("10"),
        "token bucket size of CreateTags",
    ),
    s(
        "VPC_CNI_EC2_TAGS_RATE",
        RATE,
        Is("0.5"),
        "refill per second of that bucket",
    ),
    s(
        "VPC_CNI_EC2_MAX_ATTEMPTS",
        int(1, 100, Unit::None),
        Is("10"),
        "attempts per EC2 call, the first included",
    ),
    s(
        "VPC_CNI_EC2_BACKOFF_BASE_MS",
        int(1, u64::MAX, Unit::Millis),
        Is("250"),
        "first backoff ceiling between attempts",
    ),
    s(
        "VPC_CNI_EC2_BACKOFF_MAX_MS",
        int(0, u64::MAX, Unit::Millis),
        Is("20000"),
        "largest backoff ceiling (not below the base)",
    ),
    s(
        "AWS_VPC_K8S_CNI_EXTERNALSNAT",
        Kind::Bool(BoolSyntax::Loose),
        Is("false"),
        "`true`: pod traffic leaving the VPC keeps the pod's address",
    )
    .aws_node(),
    s(
        "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS",
        Kind::CidrList,
        Unset,
        "CIDRs outside the VPC that pods reach with their own address",
    )
    .aws_node(),
    s(
        "AWS_REGION",
        Kind::Text,
        Unset,
        "the SDK's region; unset: the instance's region from IMDS",
    )
    .read_by(Reader::AwsSdk),
    s(
        "AWS_DEFAULT_REGION",
        Kind::Text,
        Unset,
        "the SDK's region when `AWS_REGION` is unset",
    )
    .read_by(Reader::AwsSdk),
    // Pods and the node.
    s(
        "AWS_VPC_ENI_MTU",
        int(576, 9001, Unit::None),
        Is("9001"),
        "pod MTU, also written into the conflist",
    )
    .aws_node()
    .read_by(Reader::Both),
    s(
        "VPC_CNI_SOCKET",
        Kind::Path,
        Is("/run/vpc-cni/ipamd.sock"),
        "ipamd's socket, also written into the conflist",
    )
    .read_by(Reader::Both),
    s(
        "VPC_CNI_STATE_DIR",
        Kind::Path,
        Is("/var/lib/vpc-cni"),
        "the checkpoint of allocations",
    ),
    s(
        "VPC_CNI_VETH_REAP_DELAY_MS",
        int(0, u64::MAX, Unit::Millis),
        Is("5000"),
        "after DEL, how long before a host veth the runtime left is deleted",
    ),
    s(
        "VPC_CNI_DURABILITY",
        words(&["sync", "async"]),
        Is("sync"),
        "`sync`: ADD and DEL answer once on disk; `async`: at once",
    ),
    s(
        "VPC_CNI_AWS_NODE_CHECKPOINT",
        Kind::Path,
        Is("/var/run/aws-node/ipam.json"),
        "aws-node's checkpoint, read when ours is absent",
    ),
    // NetworkPolicy.
    s(
        "VPC_CNI_POLICY_SOURCE",
        Kind::Custom {
            accepts: "`kube`, `dir:<absolute path>` or `off`",
        },
        Is("off"),
        "where NetworkPolicy objects come from",
    ),
    s(
        "VPC_CNI_POLICY_MODE",
        words(&["standard", "strict"]),
        Is("standard"),
        "`strict`: a pod's rules are in force before its ADD returns",
    ),
    // Logs, metrics, live tuning.
    s(
        "VPC_CNI_LOG_LEVEL",
        words(&["error", "warn", "info", "debug", "trace"]),
        Is("info"),
        "log level (unless `RUST_LOG` is set)",
    ),
    s(
        "RUST_LOG",
        Kind::Text,
        Unset,
        "a full tracing filter; wins over `VPC_CNI_LOG_LEVEL`",
    ),
    s(
        "VPC_CNI_LOG_FORMAT",
        words(&["text", "json"]),
        Is("text"),
        "`json`: one JSON object per log line",
    ),
    s(
        "VPC_CNI_METRICS_ADDR",
        Kind::ListenAddr,
        Is(DEFAULT_ADDR),
        "the HTTP listener of /metrics, /healthz and /readyz",
    ),
    s(
        "VPC_CNI_CONFIG_PATH",
        Kind::Path,
        Unset,
        "the mounted ConfigMap (or a KEY=VALUE file) re-read for live tuning",
    ),
    // The plugin.
    s(
        "VPC_CNI_PLUGIN_LOG_LEVEL",
        Kind::Enum {
            values: &["error", "warn", "info", "debug"],
            any_case: true,
        },
        Unset,
        "the conflist's `logLevel` for the plugin",
    )
    .read_by(Reader::InstallCni),
    s(
        "VPC_CNI_PLUGIN_LOG_FILE",
        Kind::Path,
        Unset,
        "the conflist's `logFile`: where the plugin appends a line per call",
    )
    .read_by(Reader::InstallCni),
    // The simulated cloud.
    s(
        "VPC_CNI_SIM_INSTANCE_TYPE",
        Kind::Text,
        Is("m5.large"),
        "simulated instance type, with AWS's ENI and address limits",
    ),
    s(
        "VPC_CNI_SIM_VPC_CIDR",
        Kind::Cidr,
        Is("10.0.0.0/16"),
        "simulated VPC",
    ),
    s(
        "VPC_CNI_SIM_SUBNET_CIDR",
        Kind::Cidr,
        Is("10.0.0.0/20"),
        "simulated subnet, inside the VPC",
    ),
    s(
        "VPC_CNI_SIM_API_LATENCY_MS",
        Kind::Custom {
            accepts: "whole milliseconds or `ec2`",
        },
        Is("0"),
        "latency of every simulated call, or `ec2` for EC2's measured ones",
    ),
];

/// The declaration of `name`.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Every variable ipamd (`serve` and `install-cni`) or the AWS SDK under it
/// reads: the names of [`SETTINGS`].
pub const KNOWN_ENV: &[&str] = &names::<{ SETTINGS.len() }>();

/// The settings applied without a restart.
pub const LIVE_KEYS: &[&str] = &live_names::<{ count_live() }>();

const fn names<const N: usize>() -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = SETTINGS[i].name;
        i += 1;
    }
    out
}

const fn count_live() -> usize {
    let (mut n, mut i) = (0, 0);
    while i < SETTINGS.len() {
        if SETTINGS[i].live {
            n += 1;
        }
        i += 1;
    }
    n
}

const fn live_names<const N: usize>() -> [&'static str; N] {
    let mut out = [""; N];
    let (mut n, mut i) = (0, 0);
    while i < SETTINGS.len() {
        if SETTINGS[i].live {
            out[n] = SETTINGS[i].name;
            n += 1;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_are_unique_and_shaped_like_their_origin() {
        let names: BTreeSet<_> = SETTINGS.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), SETTINGS.len(), "a setting is declared twice");
        assert_eq!(KNOWN_ENV.len(), SETTINGS.len());
        for s in SETTINGS {
            assert!(!s.doc.is_empty(), "{} has no doc line", s.name);
            let ours = s.name.starts_with("VPC_CNI_");
            // aws-node's names are never ours; ours are the rest, but for
            // the SDK's and tracing's standard names.
            assert!(
                !(s.aws_node && ours),
                "{}: aws-node has no VPC_CNI_ settings",
                s.name
            );
            if !s.aws_node && !ours {
                assert!(
                    s.reader == Reader::AwsSdk || s.name == "RUST_LOG",
                    "{}: a setting of ours is named VPC_CNI_*",
                    s.name
                );
            }
            if s.live {
                assert!(s.reader.serve(), "{}: only serve tunes live", s.name);
            }
        }
    }

    #[test]
    fn live_keys_are_the_live_settings() {
        assert_eq!(
            LIVE_KEYS,
            [
                "WARM_ENI_TARGET",
                "WARM_IP_TARGET",
                "MINIMUM_IP_TARGET",
                "WARM_PREFIX_TARGET"
            ]
        );
        assert_eq!(setting("MAX_ENI").map(|s| s.live), Some(false));
        assert_eq!(setting("WARM_IP_TARGETS"), None);
    }

    #[test]
    fn declared_defaults_and_enum_words_are_valid_values_of_their_kind() {
        for s in SETTINGS {
            if let DefaultValue::Is(v) = s.default {
                assert_eq!(v.trim(), v, "{}", s.name);
                // Custom kinds are checked by the builders' tests
                // (unset and set to the default build the same settings).
                super::super::parse::validate(s, v)
                    .unwrap_or_else(|why| panic!("{}'s default {v:?}: {why}", s.name));
            }
            match s.kind {
                Kind::Int { min, max, .. } => assert!(min <= max, "{}", s.name),
                Kind::Decimal { min, max, .. } => assert!(min <= max, "{}", s.name),
                Kind::Enum { values, .. } => assert!(values.len() >= 2, "{}", s.name),
                _ => {}
            }
        }
    }

    /// The "Settings" section of docs/operators-guide.md.
    fn guide_settings_section() -> String {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operators-guide.md");
        let guide = std::fs::read_to_string(&path).expect("docs/operators-guide.md is readable");
        let start = guide
            .find("\n## Settings\n")
            .expect("the guide has a \"## Settings\" section");
        let rest = &guide[start + 1..];
        let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
        rest[..end].to_string()
    }

    /// One row of a settings table: the names in its first cell, its
    /// default cell and, if the table has the column, its live cell.
    #[derive(Debug)]
    struct Row {
        names: Vec<String>,
        default: String,
        live: Option<String>,
    }

    /// The rows of every table in `section` whose header starts with
    /// `variable | default`.
    fn rows(section: &str) -> Vec<Row> {
        let cells = |line: &str| -> Vec<String> {
            line.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        };
        let mut out = Vec::new();
        let mut live_column = None;
        let mut in_table = false;
        for line in section.lines() {
            if !line.starts_with('|') {
                in_table = false;
                continue;
            }
            let c = cells(line);
            if !in_table {
                in_table = c.first().map(String::as_str) == Some("variable")
                    && c.get(1).map(String::as_str) == Some("default");
                live_column = c.iter().position(|h| h == "live");
                continue;
            }
            if c.iter().all(|x| x.chars().all(|ch| ch == '-')) {
                continue;
            }
            let names = c[0]
                .split(',')
                .map(|n| n.trim().trim_matches('`').to_string())
                .collect();
            out.push(Row {
                names,
                default: c[1].clone(),
                live: live_column.map(|i| c[i].clone()),
            });
        }
        out
    }

    /// A default cell as compared with the declaration: backticks and a
    /// trailing remark in parentheses (`unset (manifests: ...)`) dropped.
    fn plain(cell: &str) -> String {
        let cell = cell.replace('`', "");
        let cell = match cell.find(" (") {
            Some(i) if cell.ends_with(')') => &cell[..i],
            _ => &cell,
        };
        cell.trim().to_string()
    }

    /// The default of `s` as the guide shows it.
    fn guide_default(s: &Setting) -> String {
        match (s.default, s.kind) {
            (
                DefaultValue::Is(v),
                Kind::Decimal {
                    unit: Unit::PerSecond,
                    ..
                },
            ) => format!("{v}/s"),
            (DefaultValue::Is(v), _) => v.to_string(),
            (DefaultValue::Unset, _) => "unset".to_string(),
            (DefaultValue::Computed(text), _) => text.replace('`', ""),
        }
    }

    /// The guide documents every setting in its "Settings" section: ours in
    /// a table row with the declared default and live marker (a row may
    /// name several settings, with their defaults in the same order), the
    /// SDK's in its prose; and every name in those tables is declared.
    #[test]
    fn the_operators_guide_documents_every_setting_with_its_default_and_live_marker() {
        let section = guide_settings_section();
        let rows = rows(&section);
        assert!(
            rows.len() > 20,
            "the guide's settings tables were not found"
        );
        let mut problems = Vec::new();
        for row in &rows {
            let defaults: Vec<String> = if row.names.len() > 1 {
                row.default.split(", ").map(plain).collect()
            } else {
                vec![plain(&row.default)]
            };
            if defaults.len() != row.names.len() {
                problems.push(format!(
                    "{:?}: {} names but defaults {:?}",
                    row.names,
                    row.names.len(),
                    row.default
                ));
                continue;
            }
            for (name, shown) in row.names.iter().zip(&defaults) {
                let Some(s) = setting(name) else {
                    problems.push(format!("{name}: in the guide but not declared"));
                    continue;
                };
                let want = guide_default(s);
                if *shown != want {
                    problems.push(format!(
                        "{name}: the guide's default is {shown:?}, declared {want:?}"
                    ));
                }
                let marker = if s.live { "yes" } else { "no" };
                match &row.live {
                    Some(cell) if cell != marker => problems.push(format!(
                        "{name}: the guide says live {cell:?}, declared {marker:?}"
                    )),
                    None if s.live => {
                        problems.push(format!("{name}: live, but its table has no live column"))
                    }
                    _ => {}
                }
            }
        }
        let in_tables: BTreeSet<&str> = rows
            .iter()
            .flat_map(|r| r.names.iter().map(String::as_str))
            .collect();
        for s in SETTINGS {
            let documented = if s.reader == Reader::AwsSdk {
                section.contains(&format!("`{}`", s.name))
            } else {
                in_tables.contains(s.name)
            };
            if !documented {
                problems.push(format!(
                    "{} is not in the guide's Settings section; add a row such as\n| `{}` | {} | {} | {} |",
                    s.name,
                    s.name,
                    guide_default(s),
                    if s.live { "yes" } else { "no" },
                    s.doc
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "docs/operators-guide.md, Settings:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn the_guide_check_reads_tables_as_written() {
        let section = "## Settings\n\n| variable | default | live | meaning |\n|---|---|---|---|\n\
            | `A_B`, `C_D` | 20, 0.5/s | no | x |\n| `E_F` | unset (manifests: `x, y`) | yes | y |\n\n\
            | variable | default | meaning |\n|---|---|---|\n| `G_H` | `/x` | z |\n";
        let rows = rows(section);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].names, ["A_B", "C_D"]);
        assert_eq!(rows[0].live.as_deref(), Some("no"));
        assert_eq!(plain(&rows[1].default), "unset");
        assert_eq!(rows[2].live, None);
        assert_eq!(plain(&rows[2].default), "/x");
        let rate = setting("VPC_CNI_EC2_DESCRIBE_RATE").unwrap();
        assert_eq!(guide_default(rate), "2/s");
    }
}
