//! The CNI 1.1.0 success result (`interfaces`, `ips`, `routes`, `dns`) and
//! its down-conversion for callers that asked for an older `cniVersion`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The CNI spec versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version ipamd produces results in.
pub const CURRENT_VERSION: &str = "1.1.0";

/// One interface the plugin created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name (`eni…` on the host, `eth0` in the pod).
    pub name: String,
    /// MAC address, lower-case colon form.
    pub mac: String,
    /// MTU (CNI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; absent on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One assigned address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR form, e.g. `10.0.0.12/32`.
    pub address: String,
    /// Default gateway for this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination CIDR.
    pub dst: String,
    /// Next hop; absent for on-link routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// The success result of ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddResult {
    /// The version this result is written in.
    pub cni_version: String,
    /// Host and container interfaces.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// DNS (passed through empty; kubelet configures DNS itself).
    #[serde(default)]
    pub dns: Value,
}

/// Rewrites a 1.1.0 result for a caller that asked for `version`: results
/// before 1.0.0 carry `"version": "4"` in each `ips` entry, and 1.0.0 has no
/// interface `mtu`. Anything that is not an object is returned unchanged.
pub fn convert_result(mut result: Value, version: &str) -> Value {
    let Some(obj) = result.as_object_mut() else {
        return result;
    };
    obj.insert("cniVersion".into(), Value::String(version.to_string()));
    let pre_1_0 = version.starts_with("0.");
    if pre_1_0 {
        if let Some(Value::Array(ips)) = obj.get_mut("ips") {
            for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
                let v6 = ip
                    .get("address")
                    .and_then(Value::as_str)
                    .is_some_and(|a| a.contains(':'));
                ip.insert(
                    "version".into(),
                    Value::String(if v6 { "6" } else { "4" }.into()),
                );
            }
        }
    }
    if version != CURRENT_VERSION {
        if let Some(Value::Array(ifaces)) = obj.get_mut("interfaces") {
            for iface in ifaces.iter_mut().filter_map(Value::as_object_mut) {
                iface.remove("mtu");
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> AddResult {
        AddResult {
            cni_version: CURRENT_VERSION.into(),
            interfaces: vec![
                Interface {
                    name: "eni1a2b3c4d5e6".into(),
                    mac: "0a:58:0a:00:00:01".into(),
                    mtu: Some(9001),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "0a:58:0a:00:00:02".into(),
                    mtu: Some(9001),
                    sandbox: Some("/var/run/netns/cni-1".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "10.0.0.12/32".into(),
                gateway: Some("169.254.1.1".into()),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("169.254.1.1".into()),
            }],
            dns: json!({}),
        }
    }

    /// The shape of the spec's ADD example (SPEC.md, "Success").
    #[test]
    fn result_shape_matches_spec_example() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["interfaces"][1]["sandbox"], "/var/run/netns/cni-1");
        assert!(v["interfaces"][0].get("sandbox").is_none());
        assert_eq!(v["ips"][0]["address"], "10.0.0.12/32");
        assert_eq!(v["ips"][0]["gateway"], "169.254.1.1");
        assert_eq!(v["ips"][0]["interface"], 1);
        assert_eq!(v["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(v["routes"][0]["gw"], "169.254.1.1");
    }

    #[test]
    fn converts_to_old_versions() {
        let v = serde_json::to_value(sample()).unwrap();
        let old = convert_result(v.clone(), "0.3.1");
        assert_eq!(old["cniVersion"], "0.3.1");
        assert_eq!(old["ips"][0]["version"], "4");
        assert!(old["interfaces"][0].get("mtu").is_none());
        let one = convert_result(v.clone(), "1.0.0");
        assert!(one["ips"][0].get("version").is_none());
        assert!(one["interfaces"][0].get("mtu").is_none());
        let same = convert_result(v.clone(), "1.1.0");
        assert_eq!(same, v);
    }
}
