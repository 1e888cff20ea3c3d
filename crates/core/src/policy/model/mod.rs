//! The cluster as NetworkPolicy sees it: namespaces, pods and policies,
//! validated and reduced to what the semantics need. Sources build these
//! from the API types (`k8s-openapi`, shared by the YAML files and the kube
//! watch) and publish them as one immutable [`ClusterState`] snapshot.

mod convert;
pub mod ranges;
mod selector;
pub mod yaml;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

pub use convert::{namespace_from_api, network_policy_from_api, object_from_value, pod_from_api};
pub use selector::{Labels, Operator, Requirement, Selector};

use crate::policy::ir::{PodKey, Proto};

/// The label every namespace carries (set by the API server since 1.21), so
/// `namespaceSelector` can pick a namespace by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// An object that cannot be used, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// A field holds a value the API server would reject.
    #[error("{0}")]
    Invalid(String),
    /// The same, with the object it was found in.
    #[error("{kind} {name}: {reason}")]
    InObject {
        /// `Pod`, `Namespace` or `NetworkPolicy`.
        kind: &'static str,
        /// `namespace/name` (or `name` for a namespace).
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl ModelError {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Self::Invalid(reason.into())
    }

    fn in_object(self, kind: &'static str, name: String) -> Self {
        match self {
            Self::Invalid(reason) => Self::InObject { kind, name, reason },
            other => other,
        }
    }
}

/// A namespace: only its labels matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Its name.
    pub name: String,
    /// Its labels, always including [`NAMESPACE_NAME_LABEL`].
    pub labels: Labels,
}

/// A container port that carries a name, which policies may refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    /// The port's name (an IANA_SVC_NAME).
    pub name: String,
    /// Its protocol.
    pub proto: Proto,
    /// Its number.
    pub port: u16,
}

/// A pod, local or on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Namespace and name.
    pub key: PodKey,
    /// Its labels.
    pub labels: Labels,
    /// `spec.nodeName`, once scheduled.
    pub node_name: Option<String>,
    /// Its IPv4 address; `None` before it has one and once it has terminated
    /// (`Succeeded`/`Failed` pods give their address back for reuse).
    pub ip: Option<Ipv4Addr>,
    /// Its containers' named ports.
    pub named_ports: Vec<NamedPort>,
}

/// One port entry of a policy rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyPort {
    /// A number or range (`port` + `endPort`), or a whole protocol when
    /// `port` is omitted.
    Numeric {
        /// Protocol, TCP when the policy names none.
        proto: Proto,
        /// First port.
        first: u16,
        /// Last port, inclusive.
        last: u16,
    },
    /// A container port name, resolved on the destination pod.
    Named {
        /// Protocol, TCP when the policy names none.
        proto: Proto,
        /// The name.
        name: String,
    },
}

/// One `from`/`to` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Pods chosen by labels: `namespaces` `None` means the policy's own
    /// namespace; both selectors must hold when both are given.
    Pods {
        /// `namespaceSelector`, if the peer has one.
        namespaces: Option<Selector>,
        /// `podSelector` (everything when the peer has none).
        pods: Selector,
    },
    /// An `ipBlock`: IPv4 intervals with `except` already removed.
    Block(Vec<(u32, u32)>),
}

/// One ingress or egress rule: traffic matching any peer on any port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Empty: every peer (the rule has no `from`/`to`).
    pub peers: Vec<Peer>,
    /// Empty: every port (the rule has no `ports`).
    pub ports: Vec<PolicyPort>,
}

/// A NetworkPolicy, with `policyTypes` defaulting applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The pods of `namespace` it applies to.
    pub pod_selector: Selector,
    /// Whether it isolates the selected pods for ingress.
    pub affects_ingress: bool,
    /// Whether it isolates the selected pods for egress.
    pub affects_egress: bool,
    /// Ingress rules (unions).
    pub ingress: Vec<Rule>,
    /// Egress rules (unions).
    pub egress: Vec<Rule>,
}

/// One object as a source delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A namespace.
    Namespace(Namespace),
    /// A pod.
    Pod(Pod),
    /// A network policy.
    NetworkPolicy(NetworkPolicy),
}

/// Names one object across kinds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKey {
    /// A namespace by name.
    Namespace(String),
    /// A pod.
    Pod(PodKey),
    /// A network policy: namespace, name.
    NetworkPolicy(String, String),
}

impl Object {
    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        match self {
            Object::Namespace(n) => ObjectKey::Namespace(n.name.clone()),
            Object::Pod(p) => ObjectKey::Pod(p.key.clone()),
            Object::NetworkPolicy(p) => {
                ObjectKey::NetworkPolicy(p.namespace.clone(), p.name.clone())
            }
        }
    }
}

/// One immutable snapshot of everything the sources know. Objects sit
/// behind `Arc` so that building the next snapshot from the previous one
/// copies pointers, not pods.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    namespaces: BTreeMap<String, Arc<Namespace>>,
    pods: BTreeMap<PodKey, Arc<Pod>>,
    policies: BTreeMap<(String, String), Arc<NetworkPolicy>>,
    generation: u64,
    peers: PeerCache,
}

/// Which rule of which policy: the policy by its address inside this
/// snapshot (stable: the snapshot owns the `Arc`, and every mutation clears
/// the cache), the direction (egress = true) and the rule's index.
pub(crate) type RuleId = (usize, bool, usize);

/// The addresses each rule's peers resolved to, filled lazily: resolving a
/// peer scans every pod of the cluster, while the answer is the same for
/// every local pod the policy selects and for every ADD until the next
/// snapshot. A clone starts empty (it is about to be changed).
#[derive(Debug, Default)]
struct PeerCache(std::sync::Mutex<std::collections::HashMap<RuleId, Ranges>>);

/// Resolved peer addresses: inclusive intervals.
type Ranges = Arc<[(u32, u32)]>;

impl Clone for PeerCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl ClusterState {
    /// A snapshot holding `objects` (a later duplicate replaces an earlier
    /// one), stamped with `generation`.
    pub fn from_objects(objects: impl IntoIterator<Item = Object>, generation: u64) -> Self {
        let mut s = Self {
            generation,
            ..Self::default()
        };
        for o in objects {
            s.insert(o);
        }
        s
    }

    /// Adds or replaces one object.
    pub fn insert(&mut self, o: Object) {
        self.peers = PeerCache::default();
        match o {
            Object::Namespace(n) => {
                self.namespaces.insert(n.name.clone(), Arc::new(n));
            }
            Object::Pod(p) => {
                self.pods.insert(p.key.clone(), Arc::new(p));
            }
            Object::NetworkPolicy(p) => {
                self.policies
                    .insert((p.namespace.clone(), p.name.clone()), Arc::new(p));
            }
        }
    }

    /// Removes one object; true if it was there.
    pub fn remove(&mut self, key: &ObjectKey) -> bool {
        self.peers = PeerCache::default();
        match key {
            ObjectKey::Namespace(n) => self.namespaces.remove(n).is_some(),
            ObjectKey::Pod(k) => self.pods.remove(k).is_some(),
            ObjectKey::NetworkPolicy(ns, n) => {
                self.policies.remove(&(ns.clone(), n.clone())).is_some()
            }
        }
    }

    /// Keys of every object of the same kind as `like`.
    pub fn keys_like(&self, like: &ObjectKey) -> Vec<ObjectKey> {
        match like {
            ObjectKey::Namespace(_) => self
                .namespaces
                .keys()
                .cloned()
                .map(ObjectKey::Namespace)
                .collect(),
            ObjectKey::Pod(_) => self.pods.keys().cloned().map(ObjectKey::Pod).collect(),
            ObjectKey::NetworkPolicy(..) => self
                .policies
                .keys()
                .map(|(ns, n)| ObjectKey::NetworkPolicy(ns.clone(), n.clone()))
                .collect(),
        }
    }

    /// Sets the generation stamp.
    pub fn set_generation(&mut self, generation: u64) {
        self.generation = generation;
    }

    /// The pod named by `key`, if the source knows it.
    pub fn pod(&self, key: &PodKey) -> Option<&Pod> {
        self.pods.get(key).map(|p| &**p)
    }

    /// Increases with every snapshot a source publishes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every pod.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.values().map(|p| &**p)
    }

    /// The pods of one namespace.
    pub fn pods_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a Pod> {
        let from = PodKey {
            namespace: namespace.to_string(),
            name: String::new(),
        };
        self.pods
            .range(from..)
            .take_while(move |(k, _)| k.namespace == namespace)
            .map(|(_, p)| &**p)
    }

    /// The namespaces that have pods, each once, in order: a walk that
    /// jumps from one namespace's pods to the next instead of visiting
    /// every pod.
    pub fn pod_namespaces(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let mut cursor = self.pods.keys().next();
        while let Some(k) = cursor {
            out.push(k.namespace.as_str());
            // The least namespace above this one.
            let next = PodKey {
                namespace: format!("{}\u{0}", k.namespace),
                name: String::new(),
            };
            cursor = self.pods.range(next..).next().map(|(k, _)| k);
        }
        out
    }

    /// The resolved peers of rule `id`, computed by `resolve` the first
    /// time this snapshot is asked.
    pub(crate) fn cached_peers(
        &self,
        id: RuleId,
        resolve: impl FnOnce() -> Vec<(u32, u32)>,
    ) -> Arc<[(u32, u32)]> {
        let lock = || self.peers.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = lock().get(&id) {
            return hit.clone();
        }
        // Resolved without the lock: two callers may both compute the
        // same answer, which is cheaper than serialising every caller.
        let v: Arc<[(u32, u32)]> = resolve().into();
        lock().entry(id).or_insert(v).clone()
    }

    /// Every policy.
    pub fn policies(&self) -> impl Iterator<Item = &NetworkPolicy> {
        self.policies.values().map(|p| &**p)
    }

    /// The policies of one namespace.
    pub fn policies_in<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a NetworkPolicy> {
        self.policies
            .range((namespace.to_string(), String::new())..)
            .take_while(move |((ns, _), _)| ns == namespace)
            .map(|(_, p)| &**p)
    }

    /// The labels of a namespace. A namespace the source has not delivered
    /// still carries its name label, as every real namespace does.
    pub fn namespace_labels(&self, name: &str) -> std::borrow::Cow<'_, Labels> {
        match self.namespaces.get(name) {
            Some(n) => std::borrow::Cow::Borrowed(&n.labels),
            None => std::borrow::Cow::Owned(Labels::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                name.to_string(),
            )])),
        }
    }

    /// Number of (namespaces, pods, policies), for logs.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.namespaces.len(), self.pods.len(), self.policies.len())
    }
}
