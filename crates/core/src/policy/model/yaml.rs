//! Objects from YAML text as `kubectl get -o yaml` prints it: one or more
//! documents, each a single object or a `kind: List` of them.

use serde::Deserialize;

use super::{object_from_value, ModelError, Object};

/// Every Namespace, Pod and NetworkPolicy in `text`; other kinds are
/// skipped. The first invalid document fails the whole text, so a source
/// can keep what it had instead of applying half a file.
pub fn parse_objects(text: &str) -> Result<Vec<Object>, ModelError> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let v = serde_json::Value::deserialize(doc)
            .map_err(|e| ModelError::invalid(format!("document {}: {e}", i + 1)))?;
        collect(v, &mut out)
            .map_err(|e| ModelError::invalid(format!("document {}: {e}", i + 1)))?;
    }
    Ok(out)
}

fn collect(v: serde_json::Value, out: &mut Vec<Object>) -> Result<(), ModelError> {
    match v {
        // An empty document (a trailing `---`, a file of comments).
        serde_json::Value::Null => Ok(()),
        serde_json::Value::Object(ref m)
            if m.get("kind").and_then(|k| k.as_str()) == Some("List") =>
        {
            let serde_json::Value::Object(mut m) = v else {
                unreachable!("matched as an object above")
            };
            match m.remove("items") {
                None | Some(serde_json::Value::Null) => Ok(()),
                Some(serde_json::Value::Array(items)) => {
                    for item in items {
                        collect(item, out)?;
                    }
                    Ok(())
                }
                Some(_) => Err(ModelError::invalid("List: items is not a sequence")),
            }
        }
        serde_json::Value::Object(_) => {
            if let Some(o) = object_from_value(v)? {
                out.push(o);
            }
            Ok(())
        }
        _ => Err(ModelError::invalid(
            "not a Kubernetes object (expected a mapping)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ir::Proto;
    use crate::policy::model::{NamedPort, Peer, PolicyPort, NAMESPACE_NAME_LABEL};
    use std::net::Ipv4Addr;

    /// Trimmed from real `kubectl get -o yaml` output (managedFields,
    /// uid, resourceVersion and the like kept where they would trip a
    /// strict parser).
    const KUBECTL_LIST: &str = r#"
apiVersion: v1
items:
- apiVersion: v1
  kind: Pod
  metadata:
    creationTimestamp: "2024-05-01T10:00:00Z"
    labels:
      app: web
    name: web-0
    namespace: shop
    resourceVersion: "1234"
    uid: 7d6b6c8e-8c1a-4f0e-9a43-111111111111
  spec:
    containers:
    - image: nginx
      name: nginx
      ports:
      - containerPort: 8080
        name: http
        protocol: TCP
      - containerPort: 53
        name: dns
        protocol: UDP
      - containerPort: 9000
    nodeName: ip-10-0-1-5.ec2.internal
  status:
    phase: Running
    podIP: 10.0.1.17
    podIPs:
    - ip: 10.0.1.17
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata:
    name: allow
    namespace: shop
  spec:
    podSelector: {}
    ingress:
    - from:
      - ipBlock:
          cidr: 10.0.0.0/16
          except:
          - 10.0.1.0/24
      ports:
      - port: 8080
        endPort: 8090
kind: List
metadata:
  resourceVersion: ""
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    team: a
---
apiVersion: v1
kind: Service
metadata:
  name: ignored
---
"#;

    #[test]
    fn parses_kubectl_list_and_multi_document() {
        let objs = parse_objects(KUBECTL_LIST).unwrap();
        assert_eq!(objs.len(), 3);
        let Object::Pod(p) = &objs[0] else {
            panic!("{objs:?}")
        };
        assert_eq!(p.key.namespace, "shop");
        assert_eq!(p.ip, Some(Ipv4Addr::new(10, 0, 1, 17)));
        assert_eq!(p.node_name.as_deref(), Some("ip-10-0-1-5.ec2.internal"));
        assert_eq!(
            p.named_ports,
            vec![
                NamedPort {
                    name: "http".into(),
                    proto: Proto::Tcp,
                    port: 8080
                },
                NamedPort {
                    name: "dns".into(),
                    proto: Proto::Udp,
                    port: 53
                },
            ]
        );
        let Object::NetworkPolicy(np) = &objs[1] else {
            panic!()
        };
        assert!(np.affects_ingress && !np.affects_egress);
        let Peer::Block(b) = &np.ingress[0].peers[0] else {
            panic!()
        };
        assert_eq!(
            b,
            &vec![(0x0a00_0000, 0x0a00_00ff), (0x0a00_0200, 0x0a00_ffff)]
        );
        assert_eq!(
            np.ingress[0].ports,
            vec![PolicyPort::Numeric {
                proto: Proto::Tcp,
                first: 8080,
                last: 8090
            }]
        );
        let Object::Namespace(ns) = &objs[2] else {
            panic!()
        };
        assert_eq!(
            ns.labels.get(NAMESPACE_NAME_LABEL).map(|s| s.as_str()),
            Some("shop")
        );
        assert_eq!(ns.labels.get("team").map(|s| s.as_str()), Some("a"));
    }

    #[test]
    fn policy_types_defaulting() {
        let pol = |spec: &str| {
            let text = format!(
                "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {{name: p}}\nspec:\n{spec}"
            );
            match parse_objects(&text).unwrap().pop() {
                Some(Object::NetworkPolicy(p)) => (p.affects_ingress, p.affects_egress),
                o => panic!("{o:?}"),
            }
        };
        assert_eq!(pol("  podSelector: {}\n"), (true, false));
        assert_eq!(pol("  podSelector: {}\n  egress: [{}]\n"), (true, true));
        assert_eq!(pol("  podSelector: {}\n  egress: []\n"), (true, false));
        assert_eq!(
            pol("  podSelector: {}\n  policyTypes: [Egress]\n"),
            (false, true)
        );
        assert_eq!(
            pol("  podSelector: {}\n  policyTypes: [Egress, Ingress]\n  ingress: [{}]\n"),
            (true, true)
        );
    }

    #[test]
    fn terminated_pods_have_no_address() {
        let objs = parse_objects(
            "kind: Pod\napiVersion: v1\nmetadata: {name: p, namespace: n}\nstatus: {phase: Succeeded, podIP: 10.1.1.1}\n",
        )
        .unwrap();
        let Object::Pod(p) = &objs[0] else { panic!() };
        assert_eq!(p.ip, None);
    }

    #[test]
    fn invalid_input_names_document_object_and_field() {
        for (text, needle) in [
            ("kind: Pod\napiVersion: v1\nmetadata: {name: p}\nspec: [", "document 1"),
            ("---\nkind: Namespace\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {}\n", "document 2"),
            ("kind: Pod\napiVersion: v2\nmetadata: {name: p}\n", "v2"),
            ("kind: Pod\nmetadata: {name: p, namespace: n}\nstatus: {podIP: 10.0.0.300}\n", "Pod n/p"),
            (
                "kind: NetworkPolicy\nmetadata: {name: p}\nspec: {policyTypes: [Sideways]}\n",
                "unknown policyType",
            ),
            (
                "kind: NetworkPolicy\nmetadata: {name: p}\nspec: {ingress: [{ports: [{port: 80, protocol: ICMP}]}]}\n",
                "unknown protocol",
            ),
            (
                "kind: NetworkPolicy\nmetadata: {name: p}\nspec: {ingress: [{ports: [{port: 90, endPort: 80}]}]}\n",
                "endPort 80 is below port 90",
            ),
            (
                "kind: NetworkPolicy\nmetadata: {name: p}\nspec: {ingress: [{ports: [{port: http, endPort: 80}]}]}\n",
                "named one",
            ),
            (
                "kind: NetworkPolicy\nmetadata: {name: p}\nspec: {ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/40}}]}]}\n",
                "invalid CIDR",
            ),
            (
                "kind: NetworkPolicy\nmetadata: {name: p}\nspec: {ingress: [{from: [{}]}]}\n",
                "a peer needs",
            ),
            (
                "kind: NetworkPolicy\nmetadata: {name: p}\nspec: {ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}\n",
                "may not also",
            ),
            ("kind: List\nitems: 3\n", "not a sequence"),
            ("- a\n- b\n", "expected a mapping"),
        ] {
            let err = parse_objects(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
