//! `kube`: namespaces, pods and network policies watched on the API server
//! with kube-runtime watchers (list + watch only, so RBAC needs get, list
//! and watch on `namespaces`, `pods` and `networking.k8s.io`
//! `networkpolicies`).
//!
//! Each event is converted to the model at once and the API object
//! dropped: a reflector store would keep every pod of the cluster in full
//! (spec, status, managedFields), many times the few fields policy needs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{PolicySource, SourceError};
use crate::ir::PodKey;
use crate::model::{
    namespace_from_api, network_policy_from_api, pod_from_api, ClusterState, ModelError, Object,
    ObjectKey,
};

/// Events arriving this close together are published as one snapshot (a
/// relist or a rollout delivers hundreds at once).
const COALESCE: Duration = Duration::from_millis(50);

/// The `kube` source.
pub struct KubeSource {
    client: Option<Client>,
}

impl KubeSource {
    /// A source whose client comes from the environment (in-cluster service
    /// account, else kubeconfig) when it starts.
    pub fn from_env() -> Self {
        Self { client: None }
    }

    /// A source using `client` (tests pass a mock).
    pub fn with_client(client: Client) -> Self {
        Self {
            client: Some(client),
        }
    }
}

/// One converted watcher event.
enum Change {
    Restart(ObjectKey),
    Upsert(ObjectKey, Result<Object, ModelError>),
    Delete(ObjectKey),
    Synced(ObjectKey),
}

/// Per kind: whether its first list completed, and the keys seen during a
/// (re)list in progress.
#[derive(Default)]
struct Sync {
    synced: bool,
    relisting: Option<HashSet<ObjectKey>>,
}

fn kind_index(k: &ObjectKey) -> usize {
    match k {
        ObjectKey::Namespace(_) => 0,
        ObjectKey::Pod(_) => 1,
        ObjectKey::NetworkPolicy(..) => 2,
    }
}

fn changes<K>(
    api: Api<K>,
    probe: ObjectKey,
    key: fn(&K) -> ObjectKey,
    convert: fn(&K) -> Result<Object, ModelError>,
) -> impl Stream<Item = Result<Change, watcher::Error>> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |ev| {
            ev.map(|ev| match ev {
                Event::Init => Change::Restart(probe.clone()),
                Event::InitApply(o) | Event::Apply(o) => Change::Upsert(key(&o), convert(&o)),
                Event::Delete(o) => Change::Delete(key(&o)),
                Event::InitDone => Change::Synced(probe.clone()),
            })
        })
}

fn namespaced<K: kube::Resource>(o: &K) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

/// Applies one change; true when the state changed in a way a snapshot
/// should show.
fn apply(state: &mut ClusterState, sync: &mut [Sync; 3], change: Change) -> bool {
    match change {
        Change::Restart(probe) => {
            sync[kind_index(&probe)].relisting = Some(HashSet::new());
            false
        }
        Change::Upsert(key, obj) => {
            if let Some(seen) = &mut sync[kind_index(&key)].relisting {
                seen.insert(key.clone());
            }
            match obj {
                Ok(o) => {
                    state.insert(o);
                    true
                }
                Err(error) => {
                    // What we had for it (if anything) stays in force.
                    tracing::warn!(object = ?key, %error, "object not applied");
                    false
                }
            }
        }
        Change::Delete(key) => state.remove(&key),
        Change::Synced(probe) => {
            let s = &mut sync[kind_index(&probe)];
            let seen = s.relisting.take().unwrap_or_default();
            s.synced = true;
            for stale in state.keys_like(&probe) {
                if !seen.contains(&stale) {
                    state.remove(&stale);
                }
            }
            true
        }
    }
}

#[async_trait::async_trait]
impl PolicySource for KubeSource {
    async fn run(self: Box<Self>, tx: watch::Sender<Arc<ClusterState>>) -> Result<(), SourceError> {
        let client = match self.client {
            Some(c) => c,
            None => Client::try_default().await.map_err(SourceError::Kube)?,
        };
        let mut events = futures::stream::select_all([
            changes(
                Api::<Namespace>::all(client.clone()),
                ObjectKey::Namespace(String::new()),
                |o| ObjectKey::Namespace(o.name_any()),
                |o| namespace_from_api(o).map(Object::Namespace),
            )
            .boxed(),
            changes(
                Api::<Pod>::all(client.clone()),
                ObjectKey::Pod(PodKey {
                    namespace: String::new(),
                    name: String::new(),
                }),
                |o| {
                    let (namespace, name) = namespaced(o);
                    ObjectKey::Pod(PodKey { namespace, name })
                },
                |o| pod_from_api(o).map(Object::Pod),
            )
            .boxed(),
            changes(
                Api::<NetworkPolicy>::all(client),
                ObjectKey::NetworkPolicy(String::new(), String::new()),
                |o| {
                    let (ns, name) = namespaced(o);
                    ObjectKey::NetworkPolicy(ns, name)
                },
                |o| network_policy_from_api(o).map(Object::NetworkPolicy),
            )
            .boxed(),
        ]);
        let mut state = ClusterState::default();
        let mut sync: [Sync; 3] = Default::default();
        let mut generation = tx.borrow().generation();
        let mut publish_at: Option<Instant> = None;
        loop {
            let ready = sync.iter().all(|s| s.synced && s.relisting.is_none());
            tokio::select! {
                ev = events.next() => match ev {
                    None => return Ok(()),
                    // The backoff retries; the last snapshot stays in force.
                    Some(Err(error)) => tracing::warn!(%error, "kube watch failed; retrying"),
                    Some(Ok(change)) => {
                        if apply(&mut state, &mut sync, change) && publish_at.is_none() {
                            publish_at = Some(Instant::now() + COALESCE);
                        }
                    }
                },
                _ = tokio::time::sleep_until(publish_at.unwrap_or_else(Instant::now)),
                    if ready && publish_at.is_some() =>
                {
                    publish_at = None;
                    generation += 1;
                    state.set_generation(generation);
                    let (ns, pods, pols) = state.counts();
                    tracing::debug!(generation, namespaces = ns, pods, policies = pols,
                        "policy snapshot from kube");
                    tx.send_replace(Arc::new(state.clone()));
                }
                _ = tx.closed() => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{json, Value};

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn ns(name: &str, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": name, "labels": labels, "resourceVersion": "1"}})
    }

    fn pod(name: &str, app: &str, ip: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "x", "labels": {"app": app}, "resourceVersion": "1"},
               "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                        "ports": [{"name": "http", "containerPort": 80}]}]},
               "status": {"phase": "Running", "podIP": ip}})
    }

    fn policy(name: &str, proto: &str) -> Value {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": name, "namespace": "x", "resourceVersion": "1"},
               "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": proto}]}]}})
    }

    fn list(kind: &str, items: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({"kind": kind, "apiVersion": "v1",
            "metadata": {"resourceVersion": "1"}, "items": items}))
        .unwrap()
    }

    fn watch_body(events: &[(&str, Value)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (t, o) in events {
            out.extend(serde_json::to_vec(&json!({"type": t, "object": o})).unwrap());
            out.push(b'\n');
        }
        out
    }

    /// Answers the three watchers like an API server: lists, then one
    /// scripted watch response for pods; later watches are left hanging,
    /// as an idle watch is. Returns every request's method and URI.
    fn serve(mut handle: Handle) -> tokio::task::JoinHandle<Vec<(http::Method, String)>> {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut hanging = Vec::new();
            let mut pods_watched = false;
            while let Some((req, send)) = handle.next_request().await {
                let uri = req.uri().to_string();
                seen.push((req.method().clone(), uri.clone()));
                let path = req.uri().path().to_string();
                let is_watch = uri.contains("watch=true");
                let body = match (path.as_str(), is_watch) {
                    ("/api/v1/namespaces", false) => {
                        list("NamespaceList", vec![ns("x", json!({"team": "a"}))])
                    }
                    ("/api/v1/pods", false) => list(
                        "PodList",
                        vec![pod("a", "web", "10.0.0.1"), pod("b", "db", "10.0.0.2")],
                    ),
                    ("/apis/networking.k8s.io/v1/networkpolicies", false) => list(
                        "NetworkPolicyList",
                        // The second one is invalid and must be skipped.
                        vec![policy("p", "TCP"), policy("bad", "ICMP")],
                    ),
                    ("/api/v1/pods", true) if !pods_watched => {
                        pods_watched = true;
                        watch_body(&[
                            ("MODIFIED", pod("a", "frontend", "10.0.0.1")),
                            ("DELETED", pod("b", "db", "10.0.0.2")),
                            ("ADDED", pod("c", "cache", "10.0.0.3")),
                        ])
                    }
                    (_, true) => {
                        hanging.push(send);
                        continue;
                    }
                    _ => panic!("unexpected request {uri}"),
                };
                send.send_response(Response::new(Body::from(body)));
            }
            seen
        })
    }

    fn key(name: &str) -> PodKey {
        PodKey {
            namespace: "x".into(),
            name: name.into(),
        }
    }

    #[tokio::test]
    async fn publishes_synced_state_then_follows_watch_events() {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = serve(handle);
        let client = Client::new(service, "default");
        let (tx, mut rx) = watch::channel(Arc::new(ClusterState::default()));
        let task = tokio::spawn(Box::new(KubeSource::with_client(client)).run(tx));

        let first =
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| s.generation() > 0))
                .await
                .expect("a first snapshot")
                .unwrap()
                .clone();
        // Nothing is published before every kind has been listed.
        assert_eq!(first.counts().0, 1, "namespace listed");
        assert_eq!(
            first.counts().2,
            1,
            "valid policy listed, invalid one skipped"
        );
        assert!(first.pod(&key("a")).is_some());

        let last = tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|s| s.pod(&key("c")).is_some() && s.pod(&key("b")).is_none()),
        )
        .await
        .expect("watch events applied")
        .unwrap()
        .clone();
        let a = last.pod(&key("a")).unwrap();
        assert_eq!(a.labels["app"], "frontend");
        assert_eq!(a.named_ports[0].port, 80);
        assert_eq!(
            last.pod(&key("c")).unwrap().ip,
            Some("10.0.0.3".parse().unwrap())
        );
        assert_eq!(last.counts(), (1, 2, 1));
        assert!(last.generation() > first.generation() || first.pod(&key("c")).is_some());

        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("source stops once nobody listens")
            .unwrap()
            .unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("mock server ends with the client")
            .unwrap();
        // list + watch only: what the RBAC rule (get, list, watch) allows.
        assert!(seen.iter().all(|(m, _)| m == http::Method::GET), "{seen:?}");
        for path in [
            "/api/v1/namespaces?",
            "/api/v1/pods?",
            "/apis/networking.k8s.io/v1/networkpolicies?",
        ] {
            assert!(
                seen.iter()
                    .any(|(_, u)| u.starts_with(path) && u.contains("watch=true")),
                "{path} watched: {seen:?}"
            );
        }
    }

    #[test]
    fn relist_drops_objects_that_disappeared() {
        let mut state = ClusterState::default();
        let mut sync: [Sync; 3] = Default::default();
        let probe = ObjectKey::Pod(key(""));
        let upsert = |name: &str| {
            let p = serde_json::from_value::<Pod>(pod(name, "w", "10.0.0.9")).unwrap();
            Change::Upsert(ObjectKey::Pod(key(name)), pod_from_api(&p).map(Object::Pod))
        };
        apply(&mut state, &mut sync, Change::Restart(probe.clone()));
        apply(&mut state, &mut sync, upsert("a"));
        apply(&mut state, &mut sync, upsert("b"));
        apply(&mut state, &mut sync, Change::Synced(probe.clone()));
        assert_eq!(state.counts().1, 2);
        // The watch expired and the relist no longer has b.
        apply(&mut state, &mut sync, Change::Restart(probe.clone()));
        apply(&mut state, &mut sync, upsert("a"));
        assert_eq!(state.counts().1, 2, "b stays until the relist completes");
        apply(&mut state, &mut sync, Change::Synced(probe));
        assert!(state.pod(&key("b")).is_none() && state.pod(&key("a")).is_some());
    }
}
