//! From the API types to the model: validation and defaulting happen here,
//! once, so the evaluator never sees an invalid object.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::networking::v1 as net;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::ranges::{cidr_range, subtract_u32};
use super::{
    ModelError, NamedPort, Namespace, NetworkPolicy, Object, Peer, Pod, PolicyPort, Rule, Selector,
    NAMESPACE_NAME_LABEL,
};
use crate::policy::ir::{PodKey, Proto};

fn proto(p: Option<&str>) -> Result<Proto, ModelError> {
    match p {
        None | Some("TCP") => Ok(Proto::Tcp),
        Some("UDP") => Ok(Proto::Udp),
        Some("SCTP") => Ok(Proto::Sctp),
        Some(other) => Err(ModelError::invalid(format!(
            "unknown protocol {other:?} (expected TCP, UDP or SCTP)"
        ))),
    }
}

fn port_number(n: i32, what: &str) -> Result<u16, ModelError> {
    u16::try_from(n)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| ModelError::invalid(format!("{what} {n} is not in 1-65535")))
}

fn name_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<String, ModelError> {
    meta.name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ModelError::invalid("metadata.name is missing"))
}

/// `metadata.namespace`, `default` when a hand-written file leaves it out
/// (as `kubectl apply` would).
fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

/// A namespace from the API type.
pub fn namespace_from_api(n: &core::Namespace) -> Result<Namespace, ModelError> {
    let name = name_of(&n.metadata).map_err(|e| e.in_object("Namespace", "?".into()))?;
    let mut labels = n.metadata.labels.clone().unwrap_or_default();
    labels
        .entry(NAMESPACE_NAME_LABEL.to_string())
        .or_insert_with(|| name.clone());
    Ok(Namespace { name, labels })
}

/// A pod from the API type.
pub fn pod_from_api(p: &core::Pod) -> Result<Pod, ModelError> {
    let namespace = namespace_of(&p.metadata);
    let name = name_of(&p.metadata).map_err(|e| e.in_object("Pod", format!("{namespace}/?")))?;
    let full = format!("{namespace}/{name}");
    let spec = p.spec.as_ref();
    let mut named_ports = Vec::new();
    for c in spec.iter().flat_map(|s| s.containers.iter()) {
        for cp in c.ports.iter().flatten() {
            let Some(pname) = cp.name.clone().filter(|n| !n.is_empty()) else {
                continue;
            };
            named_ports.push(NamedPort {
                name: pname,
                proto: proto(cp.protocol.as_deref())
                    .map_err(|e| e.in_object("Pod", full.clone()))?,
                port: port_number(cp.container_port, "containerPort")
                    .map_err(|e| e.in_object("Pod", full.clone()))?,
            });
        }
    }
    let status = p.status.as_ref();
    let terminated = status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
    // podIPs lists the primary address first; podIP is its older twin.
    let candidates = status.into_iter().flat_map(|s| {
        s.pod_ips
            .iter()
            .flatten()
            .map(|i| i.ip.as_str())
            .chain(s.pod_ip.as_deref())
    });
    let mut ip = None;
    for c in candidates {
        match c.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => {
                ip = Some(a);
                break;
            }
            Ok(std::net::IpAddr::V6(_)) => {}
            Err(e) => {
                return Err(ModelError::InObject {
                    kind: "Pod",
                    name: full,
                    reason: format!("status pod IP {c:?}: {e}"),
                })
            }
        }
    }
    Ok(Pod {
        key: PodKey { namespace, name },
        labels: p.metadata.labels.clone().unwrap_or_default(),
        node_name: spec.and_then(|s| s.node_name.clone()),
        ip: ip.filter(|_: &Ipv4Addr| !terminated),
        named_ports,
    })
}

fn selector(
    s: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Result<Selector, ModelError> {
    s.map_or_else(|| Ok(Selector::everything()), Selector::from_api)
}

fn peer(p: &net::NetworkPolicyPeer) -> Result<Peer, ModelError> {
    if let Some(b) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            return Err(ModelError::invalid(
                "a peer with ipBlock may not also have podSelector or namespaceSelector",
            ));
        }
        let whole = cidr_range(&b.cidr).map_err(ModelError::Invalid)?;
        let mut except = Vec::new();
        for e in b.except.iter().flatten() {
            if let Some(r) = cidr_range(e).map_err(ModelError::Invalid)? {
                except.push(r);
            }
        }
        return Ok(Peer::Block(
            whole.map_or_else(Vec::new, |w| subtract_u32(&[w], &except)),
        ));
    }
    if p.pod_selector.is_none() && p.namespace_selector.is_none() {
        return Err(ModelError::invalid(
            "a peer needs podSelector, namespaceSelector or ipBlock",
        ));
    }
    Ok(Peer::Pods {
        namespaces: p
            .namespace_selector
            .as_ref()
            .map(Selector::from_api)
            .transpose()?,
        pods: selector(p.pod_selector.as_ref())?,
    })
}

fn policy_port(p: &net::NetworkPolicyPort) -> Result<PolicyPort, ModelError> {
    let proto = proto(p.protocol.as_deref())?;
    match (&p.port, p.end_port) {
        (None, None) => Ok(PolicyPort::Numeric {
            proto,
            first: 0,
            last: u16::MAX,
        }),
        (None, Some(_)) => Err(ModelError::invalid("endPort needs port")),
        (Some(IntOrString::String(name)), None) => Ok(PolicyPort::Named {
            proto,
            name: name.clone(),
        }),
        (Some(IntOrString::String(_)), Some(_)) => Err(ModelError::invalid(
            "endPort needs a numeric port, not a named one",
        )),
        (Some(IntOrString::Int(n)), end) => {
            let first = port_number(*n, "port")?;
            let last = match end {
                None => first,
                Some(e) => {
                    let e = port_number(e, "endPort")?;
                    if e < first {
                        return Err(ModelError::invalid(format!(
                            "endPort {e} is below port {first}"
                        )));
                    }
                    e
                }
            };
            Ok(PolicyPort::Numeric { proto, first, last })
        }
    }
}

fn rule(
    peers: Option<&Vec<net::NetworkPolicyPeer>>,
    ports: Option<&Vec<net::NetworkPolicyPort>>,
) -> Result<Rule, ModelError> {
    Ok(Rule {
        peers: peers
            .into_iter()
            .flatten()
            .map(peer)
            .collect::<Result<_, _>>()?,
        ports: ports
            .into_iter()
            .flatten()
            .map(policy_port)
            .collect::<Result<_, _>>()?,
    })
}

/// A network policy from the API type, `policyTypes` defaulted as the API
/// server does: Ingress always, Egress when the policy has egress rules.
pub fn network_policy_from_api(p: &net::NetworkPolicy) -> Result<NetworkPolicy, ModelError> {
    let namespace = namespace_of(&p.metadata);
    let name =
        name_of(&p.metadata).map_err(|e| e.in_object("NetworkPolicy", format!("{namespace}/?")))?;
    let full = format!("{namespace}/{name}");
    let build = || -> Result<NetworkPolicy, ModelError> {
        let default = net::NetworkPolicySpec::default();
        let spec = p.spec.as_ref().unwrap_or(&default);
        let (affects_ingress, affects_egress) = match &spec.policy_types {
            Some(types) if !types.is_empty() => {
                let mut set = BTreeSet::new();
                for t in types {
                    match t.as_str() {
                        "Ingress" | "Egress" => {
                            set.insert(t.as_str());
                        }
                        other => {
                            return Err(ModelError::invalid(format!(
                                "unknown policyType {other:?} (expected Ingress or Egress)"
                            )))
                        }
                    }
                }
                (set.contains("Ingress"), set.contains("Egress"))
            }
            _ => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
        };
        Ok(NetworkPolicy {
            namespace: namespace.clone(),
            name: name.clone(),
            pod_selector: selector(spec.pod_selector.as_ref())?,
            affects_ingress,
            affects_egress,
            ingress: spec
                .ingress
                .iter()
                .flatten()
                .map(|r| rule(r.from.as_ref(), r.ports.as_ref()))
                .collect::<Result<_, _>>()?,
            egress: spec
                .egress
                .iter()
                .flatten()
                .map(|r| rule(r.to.as_ref(), r.ports.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    };
    build().map_err(|e| e.in_object("NetworkPolicy", full))
}

/// One object from its generic form (a YAML or JSON document): `None` for a
/// kind the model does not use. A `kind: List` is unpacked by the caller.
pub fn object_from_value(v: serde_json::Value) -> Result<Option<Object>, ModelError> {
    let kind = v
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("")
        .to_string();
    let decode_err = |e: serde_json::Error| ModelError::invalid(format!("{kind}: {e}"));
    Ok(Some(match kind.as_str() {
        "Namespace" => Object::Namespace(namespace_from_api(
            &serde_json::from_value(v).map_err(decode_err)?,
        )?),
        "Pod" => Object::Pod(pod_from_api(
            &serde_json::from_value(v).map_err(decode_err)?,
        )?),
        "NetworkPolicy" => Object::NetworkPolicy(network_policy_from_api(
            &serde_json::from_value(v).map_err(decode_err)?,
        )?),
        _ => return Ok(None),
    }))
}
