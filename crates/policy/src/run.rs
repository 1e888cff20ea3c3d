//! Wiring of policy enforcement into the daemon: the source publishes
//! snapshots, one task hands each to the engine, another reaps what DELs
//! and replaced allow lists left behind.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::engine::{Engine, EngineError};
use super::ir::PodKey;
use super::model::ClusterState;
use super::settings::PolicySettings;
use super::source::{self, SourceError};

/// How long start-up waits for the source's first snapshot: with it, the
/// first pods get their rules in ADD instead of a deny (strict) or nothing
/// (standard) until it comes.
const FIRST_SNAPSHOT_WAIT: Duration = Duration::from_secs(5);
/// Removals are batched: one transaction (one RCU grace period) per this.
const REAP_EVERY: Duration = Duration::from_millis(250);

/// Why enforcement could not start.
#[derive(Debug, thiserror::Error)]
pub enum PolicyStartError {
    /// The source setting or directory.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The nftables table.
    #[error("policy: {0}")]
    Engine(#[from] EngineError),
}

/// Starts enforcement as configured; `None` when the source is `off`.
/// `restored` are the pods of the checkpoint (running before a restart):
/// each one's identity, if the checkpoint knows it, and its host veth.
pub async fn start(
    settings: &PolicySettings,
    restored: Vec<(Option<PodKey>, String)>,
) -> Result<Option<Arc<Engine>>, PolicyStartError> {
    let Some(source) = source::from_setting(&settings.source.as_setting())? else {
        return Ok(None);
    };
    let mode = settings.mode;
    let engine = Arc::new(
        tokio::task::spawn_blocking(move || Engine::start(mode))
            .await
            .expect("engine start does not panic")?,
    );
    engine.restore(restored);
    let (tx, mut rx) = watch::channel(Arc::new(ClusterState::default()));
    tokio::spawn(async move {
        if let Err(e) = source.run(tx).await {
            tracing::error!(error = %e, "policy source stopped; enforcing its last snapshot");
        }
    });
    match tokio::time::timeout(FIRST_SNAPSHOT_WAIT, rx.changed()).await {
        Ok(Ok(())) => {
            let snap = rx.borrow_and_update().clone();
            apply(&engine, snap).await;
        }
        _ => tracing::warn!(
            wait = ?FIRST_SNAPSHOT_WAIT,
            "no policy snapshot yet; new pods are {} until one arrives",
            match mode {
                super::engine::Mode::Strict => "denied",
                super::engine::Mode::Standard => "open",
            }
        ),
    }
    let applier = engine.clone();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let snap = rx.borrow_and_update().clone();
            apply(&applier, snap).await;
        }
    });
    tokio::spawn(engine.clone().run_reaper(REAP_EVERY));
    tracing::info!(source = %settings.source.as_setting(), mode = ?mode, "policy enforcement on");
    Ok(Some(engine))
}

async fn apply(engine: &Arc<Engine>, snap: Arc<ClusterState>) {
    let engine = engine.clone();
    let generation = snap.generation();
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(move || engine.apply_snapshot(snap)).await;
    match result {
        Ok(Ok(())) => tracing::info!(
            generation,
            took_us = started.elapsed().as_micros() as u64,
            "policy snapshot enforced"
        ),
        Ok(Err(e)) => tracing::error!(generation, error = %e, "policy snapshot not enforced"),
        Err(e) => tracing::error!(error = %e, "policy apply task failed"),
    }
}
