//! The one reader of settings: [`Vars`].
//!
//! One convention for every setting: a value is trimmed, and empty counts as
//! unset; unset means the declared default ([`DefaultValue::Is`]), parsed
//! like a value, so a default is written once, in the declaration; a value
//! is checked against its declared [`Kind`] (ranges included); and a bad one
//! is a [`SettingError`] naming the variable, the value as given and what
//! the kind accepts. Reading a name that is not declared is a bug, caught
//! in debug builds and by the tests (which read every builder).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use vpc_cni_core::settings::SettingError;

use super::declare::{self, BoolSyntax, DefaultValue, Kind, Setting, Unit};

/// Variables to read settings from: the process environment, explicit
/// pairs (tests), or the tuning file laid over the environment.
#[derive(Debug)]
pub struct Vars {
    map: HashMap<String, String>,
    /// Only live settings may be read (live tuning's view).
    live_only: bool,
    /// The settings read so far (the tests compare them with the declaration).
    read: RefCell<BTreeSet<&'static str>>,
}

/// What an undeclared name reads as in a release build: any text, no default.
const UNDECLARED: Setting = Setting {
    name: "",
    kind: Kind::Text,
    default: DefaultValue::Unset,
    live: false,
    aws_node: false,
    reader: declare::Reader::Serve,
    doc: "",
};

impl Vars {
    /// The variables `vars` (a later duplicate wins).
    pub fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        Vars {
            map: vars.into_iter().collect(),
            live_only: false,
            read: RefCell::new(BTreeSet::new()),
        }
    }

    /// The same, for reading the live settings only.
    pub fn live_only(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        Vars {
            live_only: true,
            ..Vars::new(vars)
        }
    }

    /// The declared settings read so far.
    pub fn read(&self) -> BTreeSet<&'static str> {
        self.read.borrow().clone()
    }

    /// The declaration of `name`, and its value as given (trimmed; empty
    /// is unset).
    fn lookup(&self, name: &str) -> (&'static Setting, Option<&str>) {
        let setting = declare::setting(name);
        debug_assert!(
            setting.is_some(),
            "{name} is read but not declared in config::declare::SETTINGS"
        );
        let setting = setting.unwrap_or(&UNDECLARED);
        debug_assert!(
            !self.live_only || setting.live,
            "{name} is not a live setting"
        );
        self.read.borrow_mut().insert(setting.name);
        let value = self
            .map
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty());
        (setting, value)
    }

    /// The value as given (trimmed, empty is unset), unparsed. For
    /// [`Config::ignored`](super::Config::ignored) and the like.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.lookup(name).1
    }

    /// `name`'s value, or its declared default.
    pub fn get<T: FromSetting>(&self, name: &str) -> Result<T, SettingError> {
        self.with(name, |s, v| T::from_setting(s, v))
    }

    /// `name`'s value, if set (it has no [`DefaultValue::Is`]).
    pub fn opt<T: FromSetting>(&self, name: &str) -> Result<Option<T>, SettingError> {
        self.opt_with(name, |s, v| T::from_setting(s, v))
    }

    /// `name`'s value or default, one of the declared words, as the
    /// `T` it stands for in `table` (whose words are the declared ones).
    pub fn choice<T: Copy>(&self, name: &str, table: &[(&str, T)]) -> Result<T, SettingError> {
        self.with(name, |s, v| choose(s, v, table))
    }

    /// `name`'s value if set, one of the declared words, as in [`Vars::choice`].
    pub fn opt_choice<T: Copy>(
        &self,
        name: &str,
        table: &[(&str, T)],
    ) -> Result<Option<T>, SettingError> {
        self.opt_with(name, |s, v| choose(s, v, table))
    }

    /// `name`'s value or default, parsed by `parse` (a [`Kind::Custom`] or
    /// [`Kind::ListenAddr`] setting), whose error is the reason shown.
    pub fn parsed<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, SettingError> {
        self.with(name, |_, v| parse(v))
    }

    fn with<T>(
        &self,
        name: &str,
        parse: impl Fn(&Setting, &str) -> Result<T, String>,
    ) -> Result<T, SettingError> {
        let (setting, value) = self.lookup(name);
        let value = match (value, setting.default) {
            (Some(v), _) => v,
            (None, DefaultValue::Is(d)) => d,
            (None, _) => {
                debug_assert!(false, "{name} has no default value: read it with `opt`");
                ""
            }
        };
        parse(setting, value).map_err(|reason| SettingError::new(name, value, reason))
    }

    fn opt_with<T>(
        &self,
        name: &str,
        parse: impl Fn(&Setting, &str) -> Result<T, String>,
    ) -> Result<Option<T>, SettingError> {
        let (setting, value) = self.lookup(name);
        debug_assert!(
            !matches!(setting.default, DefaultValue::Is(_)),
            "{name} has a default value: read it with `get`"
        );
        value
            .map(|v| parse(setting, v).map_err(|reason| SettingError::new(name, v, reason)))
            .transpose()
    }
}

/// A type a setting's value is read into, checked against the setting's
/// declared kind. The error is the reason the operator is shown.
pub trait FromSetting: Sized {
    /// Parses `value` (trimmed, not empty) of `setting`.
    fn from_setting(setting: &Setting, value: &str) -> Result<Self, String>;
}

/// Declared as one kind, read as another: a bug the tests catch; a release
/// build reads the value without the declared checks.
fn mismatch(setting: &Setting, wanted: &str) {
    debug_assert!(
        setting.name.is_empty(),
        "{} is declared {:?} but read as {wanted}",
        setting.name,
        setting.kind
    );
}

impl FromSetting for bool {
    fn from_setting(setting: &Setting, value: &str) -> Result<Self, String> {
        let syntax = match setting.kind {
            Kind::Bool(syntax) => syntax,
            _ => {
                mismatch(setting, "bool");
                BoolSyntax::Strict
            }
        };
        let word = match syntax {
            BoolSyntax::Strict => value.to_string(),
            BoolSyntax::Loose => value.to_ascii_lowercase(),
        };
        match (syntax, word.as_str()) {
            (_, "true") | (BoolSyntax::Loose, "1") => Ok(true),
            (_, "false") | (BoolSyntax::Loose, "0") => Ok(false),
            _ => Err("expected true or false".into()),
        }
    }
}

/// `between 1 and 100 ms`, `at least 1`, `at most 86400 seconds`, or
/// nothing for a type's whole range.
fn bounds(min: u64, max: u64, unit: Unit, type_max: u64) -> String {
    let u = unit.suffix();
    match (min, max >= type_max) {
        (0, true) => String::new(),
        (_, true) => format!("at least {min}{u}"),
        (0, false) => format!("at most {max}{u}"),
        _ => format!("between {min} and {max}{u}"),
    }
}

fn whole_number(setting: &Setting, value: &str, type_max: u64) -> Result<(u64, Unit), String> {
    let (min, max, unit) = match setting.kind {
        Kind::Int { min, max, unit } => (min, max.min(type_max), unit),
        _ => {
            mismatch(setting, "a whole number");
            (0, type_max, Unit::None)
        }
    };
    let range = bounds(min, max, unit, type_max);
    let n: u64 = value.parse().map_err(|_| match (range.is_empty(), unit) {
        (false, _) => format!("expected a whole number, {range}"),
        (true, Unit::Seconds) => "expected whole seconds".to_string(),
        (true, Unit::Millis) => "expected whole milliseconds".to_string(),
        (true, _) => "expected a whole number".to_string(),
    })?;
    if n < min || n > max {
        return Err(format!("must be {range}"));
    }
    Ok((n, unit))
}

impl FromSetting for u64 {
    fn from_setting(setting: &Setting, value: &str) -> Result<Self, String> {
        whole_number(setting, value, u64::MAX).map(|(n, _)| n)
    }
}

impl FromSetting for u32 {
    fn from_setting(setting: &Setting, value: &str) -> Result<Self, String> {
        let (n, _) = whole_number(setting, value, u64::from(u32::MAX))?;
        Ok(u32::try_from(n).expect("bounded by u32::MAX above"))
    }
}

impl FromSetting for Duration {
    /// In the setting's declared unit (seconds or milliseconds).
    fn from_setting(setting: &Setting, value: &str) -> Result<Self, String> {
        match whole_number(setting, value, u64::MAX)? {
            (n, Unit::Seconds) => Ok(Duration::from_secs(n)),
            (n, Unit::Millis) => Ok(Duration::from_millis(n)),
            (n, _) => {
                mismatch(setting, "a duration");
                Ok(Duration::from_secs(n))
            }
        }
    }
}

impl FromSetting for f64 {
    fn from_setting(setting: &Setting, value: &str) -> Result<Self, String> {
        let (min, min_exclusive, max, unit) = match setting.kind {
            Kind::Decimal {
                min,
                min_exclusive,
                max,
                unit,
            } => (min, min_exclusive, max, unit),
            _ => {
                mismatch(setting, "a decimal number");
                (f64::MIN, false, f64::MAX, Unit::None)
            }
        };
        let u = unit.suffix();
        let range = if min_exclusive {
            format!("above {min} and at most {max}{u}")
        } else {
            format!("between {min} and {max}{u}")
        };
        let x: f64 = value
            .parse()
            .map_err(|_| format!("expected a number {range}"))?;
        // NaN fails both comparisons: refused.
        let above_min = if min_exclusive { x > min } else { x >= min };
        if !(above_min && x <= max) {
            return Err(format!("must be {range}"));
        }
        Ok(x)
    }
}

impl FromSetting for PathBuf {
    fn from_setting(setting: &Setting, value: &str) -> Result<Self, String> {
        if setting.kind != Kind::Path {
            mismatch(setting, "a path");
        }
        let path = PathBuf::from(value);
        if !path.is_absolute() {
            return Err("must be an absolute path".into());
        }
        Ok(path)
    }
}

impl FromSetting for String {
    fn from_setting(setting: &Setting, value: &str) -> Result<Self, String> {
        if setting.kind != Kind::Text {
            mismatch(setting, "text");
        }
        Ok(value.to_string())
    }
}

impl FromSetting for Ipv4Network {
    fn from_setting(setting: &Setting, value: &str) -> Result<Self, String> {
        if setting.kind != Kind::Cidr {
            mismatch(setting, "a CIDR");
        }
        value
            .parse()
            .map_err(|e: ipnetwork::IpNetworkError| e.to_string())
    }
}

impl FromSetting for Vec<Ipv4Network> {
    /// As written: the part normalises if it needs to.
    fn from_setting(setting: &Setting, value: &str) -> Result<Self, String> {
        if setting.kind != Kind::CidrList {
            mismatch(setting, "a list of CIDRs");
        }
        value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                item.parse()
                    .map_err(|_| format!("{item:?} is not an IPv4 CIDR"))
            })
            .collect()
    }
}

/// The `T` of the declared word `value` is.
fn choose<T: Copy>(setting: &Setting, value: &str, table: &[(&str, T)]) -> Result<T, String> {
    let (values, any_case) = match setting.kind {
        Kind::Enum { values, any_case } => (values, any_case),
        _ => {
            mismatch(setting, "a word");
            (&[][..], false)
        }
    };
    debug_assert!(
        setting.name.is_empty() || table.iter().map(|(w, _)| *w).eq(values.iter().copied()),
        "{}: the table's words are not the declared ones",
        setting.name
    );
    table
        .iter()
        .find(|(word, _)| {
            if any_case {
                word.eq_ignore_ascii_case(value)
            } else {
                *word == value
            }
        })
        .map(|(_, t)| *t)
        .ok_or_else(|| format!("expected {}", one_of(values)))
}

/// `` `a` or `b` ``, `` `a`, `b` or `c` ``.
fn one_of(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// Parses a listen address (`VPC_CNI_METRICS_ADDR`): `off`, `:PORT` (every
/// address) or `HOST:PORT` with an IP address for HOST.
pub fn parse_listen_addr(value: &str) -> Result<Option<SocketAddr>, String> {
    let value = value.trim();
    if value == "off" {
        return Ok(None);
    }
    let full = match value.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => value.to_string(),
    };
    full.parse::<SocketAddr>()
        .map(Some)
        .map_err(|_| "expected `:PORT`, `IP:PORT` (e.g. `127.0.0.1:61678`) or `off`".to_string())
}

/// Checks `value` against `setting`'s kind alone (what the builders' typed
/// reads check, without building anything): for settings accepted but not
/// acted on yet, and for the declared defaults. A custom kind's value is
/// only checked by its builder.
pub fn validate(setting: &Setting, value: &str) -> Result<(), String> {
    match setting.kind {
        Kind::Bool(_) => bool::from_setting(setting, value).map(drop),
        Kind::Int { .. } => u64::from_setting(setting, value).map(drop),
        Kind::Decimal { .. } => f64::from_setting(setting, value).map(drop),
        Kind::Enum { values, .. } => {
            let table: Vec<(&str, ())> = values.iter().map(|w| (*w, ())).collect();
            choose(setting, value, &table)
        }
        Kind::Path => PathBuf::from_setting(setting, value).map(drop),
        Kind::Cidr => Ipv4Network::from_setting(setting, value).map(drop),
        Kind::CidrList => Vec::<Ipv4Network>::from_setting(setting, value).map(drop),
        Kind::ListenAddr => parse_listen_addr(value).map(drop),
        Kind::Text | Kind::Custom { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn values_are_trimmed_empty_is_unset_and_unset_is_the_default() {
        let v = vars(&[("WARM_ENI_TARGET", " 3 "), ("IP_COOLDOWN_PERIOD", "  ")]);
        assert_eq!(v.get::<u32>("WARM_ENI_TARGET"), Ok(3));
        assert_eq!(
            v.get::<Duration>("IP_COOLDOWN_PERIOD"),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(v.opt::<u32>("WARM_IP_TARGET"), Ok(None));
        assert_eq!(
            v.read(),
            BTreeSet::from(["WARM_ENI_TARGET", "IP_COOLDOWN_PERIOD", "WARM_IP_TARGET"])
        );
    }

    #[test]
    fn errors_name_variable_value_and_what_is_accepted() {
        let e = vars(&[("AWS_VPC_ENI_MTU", " 70000")])
            .get::<u32>("AWS_VPC_ENI_MTU")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid AWS_VPC_ENI_MTU=\"70000\": must be between 576 and 9001"
        );
        let e = vars(&[("VPC_CNI_EC2_TIMEOUT_MS", "soon")])
            .get::<Duration>("VPC_CNI_EC2_TIMEOUT_MS")
            .unwrap_err();
        assert_eq!(e.reason, "expected a whole number, between 1 and 600000 ms");
        let e = vars(&[("IP_COOLDOWN_PERIOD", "86401")])
            .get::<Duration>("IP_COOLDOWN_PERIOD")
            .unwrap_err();
        assert_eq!(e.reason, "must be at most 86400 seconds");
        let e = vars(&[("MAX_ENI", "0")]).opt::<u32>("MAX_ENI").unwrap_err();
        assert_eq!(e.reason, "must be at least 1");
        let e = vars(&[("WARM_IP_TARGET", "-1")])
            .opt::<u32>("WARM_IP_TARGET")
            .unwrap_err();
        assert_eq!(e.reason, "expected a whole number");
        let e = vars(&[("VPC_CNI_EC2_TAGS_RATE", "0")])
            .get::<f64>("VPC_CNI_EC2_TAGS_RATE")
            .unwrap_err();
        assert_eq!(
            e.reason,
            "must be above 0 and at most 1000 calls per second"
        );
        let e = vars(&[("VPC_CNI_EC2_TAGS_BURST", "NaN")])
            .get::<f64>("VPC_CNI_EC2_TAGS_BURST")
            .unwrap_err();
        assert_eq!(e.reason, "must be between 1 and 10000");
        let e = vars(&[("VPC_CNI_LOG_LEVEL", "loud")])
            .choice(
                "VPC_CNI_LOG_LEVEL",
                &[
                    ("error", 0),
                    ("warn", 1),
                    ("info", 2),
                    ("debug", 3),
                    ("trace", 4),
                ],
            )
            .unwrap_err();
        assert_eq!(
            e.reason,
            "expected `error`, `warn`, `info`, `debug` or `trace`"
        );
    }

    #[test]
    fn the_two_boolean_syntaxes() {
        for (value, strict, loose) in [
            ("true", Some(true), Some(true)),
            ("false", Some(false), Some(false)),
            ("TRUE", None, Some(true)),
            ("1", None, Some(true)),
            ("0", None, Some(false)),
            ("yes", None, None),
        ] {
            let v = vars(&[
                ("ENABLE_PREFIX_DELEGATION", value),
                ("AWS_VPC_K8S_CNI_EXTERNALSNAT", value),
            ]);
            assert_eq!(
                v.get::<bool>("ENABLE_PREFIX_DELEGATION").ok(),
                strict,
                "{value}"
            );
            assert_eq!(
                v.get::<bool>("AWS_VPC_K8S_CNI_EXTERNALSNAT").ok(),
                loose,
                "{value}"
            );
        }
    }

    #[test]
    fn words_match_in_the_declared_case() {
        let levels = [("error", 0), ("warn", 1), ("info", 2), ("debug", 3)];
        let v = vars(&[
            ("VPC_CNI_PLUGIN_LOG_LEVEL", "DEBUG"),
            ("VPC_CNI_CLOUD", "SIM"),
        ]);
        assert_eq!(
            v.opt_choice("VPC_CNI_PLUGIN_LOG_LEVEL", &levels),
            Ok(Some(3))
        );
        assert!(v
            .choice("VPC_CNI_CLOUD", &[("ec2", 0), ("sim", 1)])
            .is_err());
    }

    #[test]
    #[should_panic(expected = "not declared")]
    #[cfg(debug_assertions)]
    fn an_undeclared_name_is_refused() {
        let _ = vars(&[]).opt::<u32>("WARM_IP_TARGETS");
    }

    #[test]
    #[should_panic(expected = "not a live setting")]
    #[cfg(debug_assertions)]
    fn the_live_view_reads_live_settings_only() {
        let v = Vars::live_only(Vec::new());
        assert_eq!(v.get::<u32>("WARM_ENI_TARGET"), Ok(1));
        let _ = v.opt::<u32>("MAX_ENI");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen_addr(":61678").unwrap(),
            Some("0.0.0.0:61678".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:9").unwrap(),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("[::1]:9").unwrap(),
            Some("[::1]:9".parse().unwrap())
        );
        assert_eq!(parse_listen_addr("off").unwrap(), None);
        for bad in ["61678", ":", ":99999", "localhost:80", "", "on"] {
            assert!(parse_listen_addr(bad).is_err(), "{bad}");
        }
    }
}
