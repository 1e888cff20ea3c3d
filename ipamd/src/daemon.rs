//! `ipamd serve`: builds the real parts and runs them until shutdown.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::cloud::ec2::Ec2Cloud;
use crate::cloud::sim::{PersistentSim, SimConfig, VethFabric};
use crate::cloud::Cloud;
use crate::config::{CloudKind, Config};
use crate::dataplane::NetlinkDataplane;
use crate::metrics::Metrics;
use crate::pod::PodService;
use crate::pool::Pool;
use crate::server::{self, ServiceSlot};
use crate::store::Store;

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
    /// The cloud provider.
    #[error("cloud: {0}")]
    Cloud(String),
    /// SNAT of traffic leaving the VPC.
    #[error("snat: {0}")]
    Snat(#[from] crate::dataplane::snat::SnatError),
    /// Reconcile could not look at the node.
    #[error(transparent)]
    Reconcile(#[from] crate::reconcile::ReconcileError),
    /// Enabling IPv4 forwarding in the node namespace.
    #[error("enabling net.ipv4.ip_forward: {0}")]
    Forwarding(std::io::Error),
}

/// Runs the node daemon in the calling thread's network namespace until
/// `shutdown` completes; removes its socket on the way out.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let listener = server::bind(&config.socket).await?;
    tracing::info!(socket = %config.socket.display(), "listening");
    let slot: ServiceSlot = Arc::new(OnceLock::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(server::run(listener, slot.clone(), async move {
        let _ = server_stop.changed().await;
    }));
    tokio::pin!(shutdown);
    // A shutdown while the pool is still filling must stop start-up too.
    let result = tokio::select! {
        started = start(&config, slot) => match started {
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

async fn start(config: &Config, slot: ServiceSlot) -> Result<(), StartError> {
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
            let fabric = VethFabric::new().map_err(|e| StartError::Cloud(e.to_string()))?;
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
            .await
            .map_err(|e| StartError::Cloud(e.to_string()))?;
            Arc::new(sim)
        }
        CloudKind::Ec2 => Arc::new(
            Ec2Cloud::new(config.ec2.clone())
                .await
                .map_err(|e| StartError::Cloud(e.to_string()))?,
        ),
    };
    // Every EC2 call goes through this node's budget (buckets, backoff).
    let cloud: Arc<dyn Cloud> = Arc::new(crate::cloud::budget::Budget::new(cloud, config.budget));
    let node = cloud
        .node()
        .await
        .map_err(|e| StartError::Cloud(e.to_string()))?;
    dataplane.setup_snat(&config.snat, &node.vpc_cidrs, node.primary_ip)?;
    let plan = crate::reconcile::prepare(
        &store,
        &dataplane,
        cloud.as_ref(),
        &config.aws_node_checkpoint,
        config.mtu,
    )
    .await?;
    let pool = Pool::start(
        cloud,
        dataplane.clone(),
        config.pool,
        config.mtu,
        &plan.held(),
    )
    .await
    .map_err(|e| StartError::Cloud(e.to_string()))?;
    let alloc = pool.alloc().clone();
    pool.fill().await;
    let metrics = Arc::new(Metrics::default());
    let service = Arc::new(PodService::new(
        alloc.clone(),
        pool.clone(),
        dataplane.clone(),
        store.clone(),
        metrics,
        config.mtu,
        config.veth_reap_delay,
    ));
    // After the fill, so released addresses that joined the pool rest
    // in its cooldown.
    tokio::task::block_in_place(|| {
        crate::reconcile::apply(&plan, &dataplane, &alloc, config.pool.cooldown)
    });
    if !plan.keep.is_empty() {
        service.restore(plan.keep.clone());
        pool.nudge();
    }
    store.start(plan.keep)?;
    tokio::spawn(pool.clone().run(POOL_RESYNC));
    let usage = alloc.usage();
    tracing::info!(addresses = usage.total, blocked = ?pool.blocked_reason(), "ready");
    let _ = slot.set(service);
    Ok(())
}
