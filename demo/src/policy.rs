//! The NetworkPolicy part of the demo: the daemon reads Namespaces, Pods
//! and NetworkPolicies from a directory (`VPC_CNI_POLICY_SOURCE=dir:`), the
//! way it would watch them through the API server in a cluster. Files are
//! replaced atomically (write, then rename), as the source expects.

use std::fmt::Write as _;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

/// The default-deny: no pod of `billing` accepts anything (the node's own
/// traffic excepted).
pub const DENY_BILLING: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
  namespace: billing
spec:
  podSelector: {}
  policyTypes: [Ingress]
";

/// The allow rule: `billing/api-*` accepts the shop's frontends on TCP 8080.
pub const ALLOW_FRONTEND_TO_API: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: api-from-frontend
  namespace: billing
spec:
  podSelector:
    matchLabels: {app: api}
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {kubernetes.io/metadata.name: shop}
      podSelector:
        matchLabels: {app: frontend}
    ports:
    - {protocol: TCP, port: 8080}
";

/// `frontend-0` → `frontend`.
fn app(name: &str) -> &str {
    name.rsplit_once('-').map_or(name, |(app, _)| app)
}

/// The Namespaces and Pods (with their addresses once known) as YAML.
pub fn cluster_yaml(pods: &[(&str, &str, Option<Ipv4Addr>)]) -> String {
    let mut out = String::new();
    let mut namespaces: Vec<&str> = pods.iter().map(|p| p.0).collect();
    namespaces.dedup();
    for ns in namespaces {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    kubernetes.io/metadata.name: {ns}\n"
        );
    }
    for (ns, name, ip) in pods {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {}\nspec:\n  containers:\n  - name: main\n    image: busybox\n",
            app(name)
        );
        if let Some(ip) = ip {
            let _ = write!(out, "status:\n  podIP: {ip}\n");
        }
    }
    out
}

/// Writes `dir/name` atomically.
pub fn write(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name))
}

/// Removes `dir/name` (a deleted policy).
pub fn remove(dir: &Path, name: &str) -> io::Result<()> {
    match std::fs::remove_file(dir.join(name)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpc_cni_core::policy::model::yaml::parse_objects;

    #[test]
    fn the_demo_objects_parse() {
        let yaml = cluster_yaml(&[
            ("shop", "frontend-0", Some(Ipv4Addr::new(10, 0, 0, 5))),
            ("billing", "api-0", None),
        ]);
        assert_eq!(parse_objects(&yaml).unwrap().len(), 4);
        assert_eq!(parse_objects(DENY_BILLING).unwrap().len(), 1);
        assert_eq!(parse_objects(ALLOW_FRONTEND_TO_API).unwrap().len(), 1);
        assert_eq!(app("ledger-0"), "ledger");
    }
}
