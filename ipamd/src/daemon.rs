//! `ipamd serve`: builds the real parts and runs them until shutdown.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::cloud::ec2::Ec2Cloud;
use crate::cloud::sim::{PersistentSim, SimConfig, VethFabric};
use crate::cloud::Cloud;
use crate::config::{CloudKind, Config};
use crate::dataplane::NetlinkDataplane;
use crate::http;
use crate::metered_cloud::MeteredCloud;
use crate::metrics::{Metrics, PoolSample};
use crate::pod::PodService;
use crate::policy::ir::PodKey;
use crate::pool::Pool;
use crate::server::{self, ServiceSlot};
use crate::store::Store;
use crate::tuning::{self, Tuner};

/// How often a blocked pool retries and the pool re-checks its targets.
const POOL_RESYNC: Duration = Duration::from_secs(30);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The socket.
    #[error(transparent)]
    Server(#[from] server::ServerError),
    /// The state directory.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The dataplane.
    #[error("netlink: {0}")]
    Dataplane(#[from] crate::dataplane::DataplaneError),
    /// The cloud provider, once built.
    #[error("cloud: {0}")]
    Cloud(#[from] crate::cloud::CloudError),
    /// The simulated cloud's veth fabric (`VPC_CNI_CLOUD=sim`).
    #[error("cloud: {0}")]
    SimFabric(#[source] std::io::Error),
    /// The simulated cloud (`VPC_CNI_CLOUD=sim`).
    #[error("cloud: {0}")]
    Sim(#[from] crate::cloud::sim::SimError),
    /// The EC2 provider (`VPC_CNI_CLOUD=ec2`): IMDS, credentials, region.
    #[error("cloud: {0}")]
    Ec2(#[from] crate::cloud::ec2::Ec2Error),
    /// SNAT of traffic leaving the VPC.
    #[error("snat: {0}")]
    Snat(#[from] crate::dataplane::snat::SnatError),
    /// Reconcile could not look at the node.
    #[error(transparent)]
    Reconcile(#[from] crate::reconcile::ReconcileError),
    /// NetworkPolicy enforcement.
    #[error(transparent)]
    Policy(#[from] crate::policy::run::PolicyStartError),
    /// Enabling IPv4 forwarding in the node namespace.
    #[error("enabling net.ipv4.ip_forward: {0}")]
    Forwarding(std::io::Error),
    /// The metrics and health listener.
    #[error(transparent)]
    Http(#[from] crate::http::BindError),
    /// The live configuration source (`VPC_CNI_CONFIG_PATH`).
    #[error("VPC_CNI_CONFIG_PATH: {0}")]
    Config(String),
    /// Installing a signal handler.
    #[error("installing the SIGHUP handler: {0}")]
    Signal(std::io::Error),
}

/// Runs the node daemon in the calling thread's network namespace until
/// `shutdown` completes; removes its socket on the way out.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    // Before anything slow: SIGHUP's default action would kill the daemon.
    let hangups = hangups()?;
    // The port first: if it is taken, no socket file is left behind.
    let http_listener = match config.metrics_addr {
        Some(addr) => Some(http::bind(addr).await?),
        None => None,
    };
    let listener = server::bind(&config.socket)?;
    tracing::info!(socket = %config.socket.display(), "listening");
    let metrics = Arc::new(Metrics::new());
    let slot: ServiceSlot = Arc::new(OnceLock::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let socket_serving = Arc::new(AtomicBool::new(true));
    let serving = socket_serving.clone();
    let server_run = server::run(listener, slot.clone(), async move {
        let _ = server_stop.changed().await;
    });
    let server = tokio::spawn(async move {
        server_run.await;
        serving.store(false, Ordering::Release);
    });
    if let Some(l) = http_listener {
        tracing::info!(addr = ?config.metrics_addr, "serving /metrics, /healthz, /readyz");
        let health = http::Health {
            service: slot.clone(),
            socket: config.socket.clone(),
            socket_serving,
        };
        let mut http_stop = stop_rx.clone();
        tokio::spawn(http::run(l, metrics.clone(), health, async move {
            let _ = http_stop.changed().await;
        }));
    }
    tokio::pin!(shutdown);
    // A shutdown while the pool is still filling must stop start-up too.
    let result = tokio::select! {
        started = start(&config, slot, metrics, hangups) => match started {
            Ok(()) => {
                (&mut shutdown).await;
                Ok(())
            }
            Err(e) => Err(e),
        },
        _ = &mut shutdown => Ok(()),
    };
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = std::fs::remove_file(&config.socket);
    tracing::info!("stopped");
    result
}

/// One item per SIGHUP.
fn hangups() -> Result<impl futures::Stream<Item = ()> + Unpin + Send + 'static, StartError> {
    use tokio::signal::unix::{signal, SignalKind};
    let sig = signal(SignalKind::hangup()).map_err(StartError::Signal)?;
    Ok(Box::pin(futures::stream::unfold(sig, |mut sig| async {
        sig.recv().await.map(|()| ((), sig))
    })))
}

async fn start(
    config: &Config,
    slot: ServiceSlot,
    metrics: Arc<Metrics>,
    hangups: impl futures::Stream<Item = ()> + Unpin + Send + 'static,
) -> Result<(), StartError> {
    let env = crate::config::process_env();
    let startup = tuning::startup_settings(config, &env).map_err(StartError::Config)?;
    // Pods reach each other and the VPC through the node: it must route.
    // Read first: in the DaemonSet /proc/sys is read-only and the init
    // container (`ipamd install-cni`) has already set it.
    crate::sysctl::ensure(
        std::path::Path::new(crate::sysctl::PROC_SYS),
        "net/ipv4/ip_forward",
        "1",
    )
    .map_err(StartError::Forwarding)?;
    let store = Store::open(&config.state_dir, config.durability)?;
    let dataplane = Arc::new(NetlinkDataplane::new()?);
    let cloud: Arc<dyn Cloud> = match config.cloud {
        CloudKind::Sim => {
            let fabric = VethFabric::new().map_err(StartError::SimFabric)?;
            // The simulated instance outlives ipamd, as an EC2 instance does.
            let sim = PersistentSim::open(
                &config.state_dir,
                SimConfig {
                    instance_type: config.sim.instance_type.clone(),
                    vpc_cidr: config.sim.vpc_cidr,
                    subnet_cidr: config.sim.subnet_cidr,
                    api_latency: config.sim.api_latency,
                },
                Arc::new(fabric),
            )
            .await?;
            Arc::new(sim)
        }
        CloudKind::Ec2 => Arc::new(Ec2Cloud::new(config.ec2.clone()).await?),
    };
    // Innermost, so every call the provider makes is counted once; the
    // budget (buckets, backoff and retries) wraps it.
    let cloud: Arc<dyn Cloud> = Arc::new(MeteredCloud::new(cloud, metrics.ec2().clone()));
    store.observe_with(metrics.checkpoint().clone());
    let cloud: Arc<dyn Cloud> = Arc::new(crate::cloud::budget::Budget::new(cloud, config.budget));
    let node = cloud.node().await?;
    dataplane.setup_snat(&config.snat, &node.vpc_cidrs, node.primary_ip)?;
    // One inventory read serves reconcile and the pool.
    let enis = cloud
        .enis()
        .await
        .map_err(crate::reconcile::ReconcileError::from)?;
    let plan = crate::reconcile::prepare(
        &store,
        &dataplane,
        enis.clone(),
        &config.aws_node_checkpoint,
        config.mtu,
    )
    .await;
    metrics.reconcile().run(plan.is_ok());
    let plan = plan?;
    count_reconcile(&metrics, &plan.report);
    let pool = Pool::start_for(
        node,
        enis,
        cloud,
        dataplane.clone(),
        startup.settings,
        config.mtu,
        &plan.held(),
    )
    .await?;
    let alloc = pool.alloc().clone();
    add_pool_sampler(&metrics, &pool);
    pool.observe_with(crate::pool::PoolEvents {
        leaks: metrics.leaks().clone(),
        reconcile: metrics.reconcile().clone(),
    });
    pool.fill().await;
    let restored = plan
        .keep
        .iter()
        .map(|r| {
            (
                PodKey::of(r.namespace.as_ref(), r.name.as_ref()),
                r.host_ifname.clone(),
            )
        })
        .collect();
    let policy = crate::policy::run::start(&config.policy, restored).await?;
    let service = PodService::new(
        alloc.clone(),
        pool.clone(),
        dataplane.clone(),
        store.clone(),
        metrics.clone(),
        config.mtu,
        config.veth_reap_delay,
    );
    let service = Arc::new(match policy {
        Some(engine) => service.with_policy(engine),
        None => service,
    });
    // After the fill, so released addresses that joined the pool rest
    // in its cooldown.
    tokio::task::block_in_place(|| {
        crate::reconcile::apply(&plan, &dataplane, &alloc, config.pool.cooldown)
    });
    if !plan.keep.is_empty() {
        service.restore(plan.keep.clone());
        pool.nudge();
    }
    let for_pool = pool.clone();
    let tuner = Tuner::new(
        config,
        env,
        startup,
        move |s| for_pool.update_settings(s),
        metrics.config().clone(),
    );
    let for_status = tuner.clone();
    service.add_status_section("config", Box::new(move || for_status.status()));
    let effective = effective_config(config);
    service.add_status_section("daemon", Box::new(move || effective.clone()));
    tokio::spawn(tuner.run(hangups));
    store.start(plan.keep)?;
    tokio::spawn(pool.clone().run(POOL_RESYNC));
    let usage = alloc.usage();
    tracing::info!(addresses = usage.total, blocked = ?pool.blocked_reason(), "ready");
    let _ = slot.set(service);
    Ok(())
}

/// Copies the pool's state into its gauges before each scrape.
fn add_pool_sampler(metrics: &Metrics, pool: &Arc<Pool>) {
    let pool = pool.clone();
    metrics.add_sampler(move |m| {
        let usage = pool.alloc().usage();
        let enis = pool.enis();
        m.pool().record(&PoolSample {
            total: usage.total as u64,
            assigned: usage.used as u64,
            cooling: pool.alloc().cooling() as u64,
            target: u64::from(pool.desired_total()),
            max: u64::from(pool.limits().capacity()),
            enis: enis.len() as u64,
            max_enis: u64::from(pool.limits().max_enis),
            prefixes: enis.iter().map(|e| e.prefixes.len() as u64).sum(),
            ready: pool.is_ready(),
            blocked: pool.blocked_reason().is_some(),
            cooldown_starvation_takes: pool.alloc().cooldown_bypassed(),
        });
    });
}

/// The settings fixed at start, for `ipamd status` (no secrets: only our
/// own settings, never the environment).
fn effective_config(config: &Config) -> serde_json::Value {
    serde_json::json!({
        "socket": config.socket.display().to_string(),
        "stateDir": config.state_dir.display().to_string(),
        "cloud": format!("{:?}", config.cloud).to_lowercase(),
        "mtu": config.mtu,
        "metricsAddr": config.metrics_addr.map(|a| a.to_string()),
        "configPath": config.config_path.as_ref().map(|p| p.display().to_string()),
        "logFilter": config.log_filter,
        "logFormat": format!("{:?}", config.log_format).to_lowercase(),
        "vethReapDelayMs": config.veth_reap_delay.as_millis() as u64,
        "startupPool": {
            "warmIpTarget": config.pool.warm_ip_target,
            "minimumIpTarget": config.pool.minimum_ip_target,
            "warmEniTarget": config.pool.warm_eni_target,
            "maxEni": config.pool.max_eni,
            "ipCooldownSeconds": config.pool.cooldown.as_secs(),
        },
    })
}

/// What reconciliation found and repaired, by kind.
fn count_reconcile(metrics: &Metrics, r: &crate::reconcile::Report) {
    let m = metrics.reconcile();
    for (kind, n) in [
        ("kept", r.kept),
        ("migrated_from_aws_node", r.migrated),
        ("rebuilt_from_kernel", r.rebuilt),
        ("held_unknown", r.held_unknown),
        ("released", r.released),
        ("veth_reaped", r.reaped),
        ("not_in_cloud", r.not_in_cloud),
        ("duplicate_dropped", r.duplicates),
    ] {
        if n > 0 {
            m.event(kind, n as u64);
        }
    }
}
