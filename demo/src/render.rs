//! The demo's own lines: durations, and what it reads of the daemon's view
//! (the status text and tables come from `ipamd::status`).

use std::net::Ipv4Addr;

use serde_json::Value;

pub use ipamd::status::{ms, render_status, Table};

/// The primary ENI's primary address: the node's own IP.
pub fn primary_ip(view: &Value) -> Option<Ipv4Addr> {
    view["enis"]
        .as_array()?
        .iter()
        .find(|e| e["deviceIndex"].as_u64() == Some(0))?["primaryIp"]
        .as_str()?
        .parse()
        .ok()
}

/// One line about the fresh node: instance, node IP, warm pool.
pub fn node_summary(view: &Value) -> String {
    format!(
        "{} ({}), node IP {}, {} ENI(s), {} addresses warm, room for {}",
        view["node"]["instanceId"].as_str().unwrap_or("?"),
        view["node"]["instanceType"].as_str().unwrap_or("?"),
        primary_ip(view).map_or_else(|| "?".to_string(), |ip| ip.to_string()),
        view["enis"].as_array().map_or(0, Vec::len),
        view["pool"]["free"],
        view["pool"]["capacity"],
    )
}

/// The id of the ENI holding the address of `container_id`.
pub fn eni_of<'v>(view: &'v Value, container_id: &str) -> Option<&'v str> {
    let index = view["pods"]
        .as_array()?
        .iter()
        .find(|p| p["containerId"].as_str() == Some(container_id))?["eniIndex"]
        .as_u64()?;
    view["enis"]
        .as_array()?
        .iter()
        .find(|e| e["deviceIndex"].as_u64() == Some(index))?["id"]
        .as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn eni_and_node_ip_come_from_the_view() {
        let view = json!({
            "enis": [{"id": "eni-a", "deviceIndex": 0, "primaryIp": "10.0.0.4"},
                     {"id": "eni-b", "deviceIndex": 1, "primaryIp": "10.0.0.14"}],
            "pods": [{"containerId": "c1", "eniIndex": 1}],
        });
        assert_eq!(eni_of(&view, "c1"), Some("eni-b"));
        assert_eq!(eni_of(&view, "c2"), None);
        assert_eq!(primary_ip(&view), Some(Ipv4Addr::new(10, 0, 0, 4)));
        assert_eq!(primary_ip(&json!({})), None);
    }
}
