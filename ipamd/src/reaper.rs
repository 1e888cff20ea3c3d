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

use crate::dataplane::NetlinkDataplane;

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
    pub fn start(dataplane: Arc<NetlinkDataplane>, delay: Duration) -> Self {
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

async fn run(shared: Arc<Shared>, dataplane: Arc<NetlinkDataplane>) {
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
