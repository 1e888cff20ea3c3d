//! Host veths a runtime left behind: deleted a while after their pod's DEL.
//!
//! DEL does not delete the host veth: the runtime destroys the pod's
//! namespace right after, which takes the pair with it, and deleting a link
//! costs a ≈ 20 ms RCU grace period under the RTNL lock. If the veth is still
//! there after the delay, it is deleted here, in the background.
//!
//! One task drains a queue ordered by deadline (every entry gets the same
//! delay). DEL only appends: the task is woken only when the queue was
//! empty, so a stream of DELs does not wake it (and on a busy node, preempt
//! the next call) once per pod.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::dataplane::Dataplane;

/// The queue and its task.
pub struct Reaper {
    shared: Arc<Shared>,
    delay: Duration,
}

struct Shared {
    queue: Mutex<VecDeque<(Instant, u32, String)>>,
    wake: Notify,
}

impl Reaper {
    /// Starts the task on the current runtime.
    pub fn start(dataplane: Arc<dyn Dataplane>, delay: Duration) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
        });
        tokio::spawn(run(shared.clone(), dataplane));
        Reaper { shared, delay }
    }

    /// Deletes host link `index` after the delay if it still has `name`.
    pub fn schedule(&self, index: u32, name: String) {
        let mut q = self.shared.queue.lock().expect("reaper queue poisoned");
        let was_empty = q.is_empty();
        q.push_back((Instant::now() + self.delay, index, name));
        drop(q);
        if was_empty {
            self.shared.wake.notify_one();
        }
    }
}

impl Shared {
    /// The entries due by `now`, and when the next one is.
    fn due(&self, now: Instant) -> (Vec<(u32, String)>, Option<Instant>) {
        let mut q = self.queue.lock().expect("reaper queue poisoned");
        let mut out = Vec::new();
        while q.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, index, name) = q.pop_front().expect("checked");
            out.push((index, name));
        }
        (out, q.front().map(|(at, _, _)| *at))
    }
}

async fn run(shared: Arc<Shared>, dataplane: Arc<dyn Dataplane>) {
    loop {
        let (due, next) = shared.due(Instant::now());
        if !due.is_empty() {
            let dp = dataplane.clone();
            let reaped = tokio::task::spawn_blocking(move || {
                due.into_iter()
                    .map(|(index, name)| {
                        let result = dp.reap_link(index, &name);
                        (name, result)
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            for (name, result) in reaped.unwrap_or_default() {
                match result {
                    Ok(true) => {
                        tracing::debug!(host_veth = %name, "reaped host veth the runtime left behind")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(host_veth = %name, error = %e, "could not reap host veth")
                    }
                }
            }
            continue;
        }
        // With nothing queued, only `schedule` wakes it (the hour is a
        // bound, not a poll).
        let until = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let _ = tokio::time::timeout_at(until, shared.wake.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::fake::{Call, FakeDataplane, Step};
    use crate::dataplane::{PodNet, VethMacs};

    fn veth(dp: &FakeDataplane, name: &str) -> u32 {
        let pod = PodNet {
            netns: format!("/run/netns/{name}"),
            ifname: "eth0".into(),
            host_ifname: name.into(),
            addr: std::net::Ipv4Addr::new(10, 0, 0, 5),
            mtu: 9001,
            eni_table: None,
            alias: None,
        };
        dp.insert_veth(&pod, VethMacs::random(), true)
    }

    async fn reaped(dp: &FakeDataplane, n: usize) {
        for _ in 0..200 {
            let calls = dp.calls();
            if calls
                .iter()
                .filter(|c| matches!(c, Call::ReapLink { .. }))
                .count()
                >= n
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the reaper did not run");
    }

    /// After the delay: a veth that still has its name is deleted, one
    /// whose index now has another name is not, and a failure does not stop
    /// the entries after it (the failed one stays, for the next restart's
    /// reconcile).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reaps_what_still_has_its_name_and_goes_on_after_a_failure() {
        let dp = Arc::new(FakeDataplane::new());
        let (a, b, c) = (
            veth(&dp, "eni0000000000a"),
            veth(&dp, "eni0000000000b"),
            veth(&dp, "eni0000000000c"),
        );
        let reaper = Reaper::start(dp.clone(), Duration::from_millis(20));
        dp.fail_at(Step::ReapLink);
        reaper.schedule(c, "eni0000000000c".into());
        reaper.schedule(a, "eni0000000000a".into());
        reaper.schedule(b, "renamed".into());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(dp.veths().len(), 3, "not before the delay");
        reaped(&dp, 3).await;
        let left: Vec<u32> = dp.veths().iter().map(|v| v.index).collect();
        assert_eq!(left, vec![b, c]);
    }
}
