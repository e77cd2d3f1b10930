//! Prometheus metrics of the daemon, answered on `/Berth.Metrics` in the
//! text exposition format. The hot path costs one labelled counter
//! increment and one histogram observation per request; the gauges
//! (volumes, mounts, stuck operations, backend health, sample age) are
//! read from each service when the metrics are asked for.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry as PromRegistry;

use super::Registry;

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: String,
    route: &'static str,
    status: u16,
}

/// Labels of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    service: String,
    route: &'static str,
}

/// Labels of the per-service gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

/// Labels of the build-info gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

type Latency = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms … about 4 min (Docker waits up to 2 min for a Create).
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

/// The counters the daemon keeps.
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Latency,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn observe(&self, service: &str, route: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                service: service.to_string(),
                route,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                service: service.to_string(),
                route,
            })
            .observe(took.as_secs_f64());
    }
}

/// Per-service gauges, filled at scrape time.
#[derive(Default)]
struct Gauges {
    up: Family<ServiceLabels, Gauge>,
    volumes: Family<ServiceLabels, Gauge>,
    mounted: Family<ServiceLabels, Gauge>,
    users: Family<ServiceLabels, Gauge>,
    snapshots: Family<ServiceLabels, Gauge>,
    stuck: Family<ServiceLabels, Gauge>,
    busy: Family<ServiceLabels, Gauge>,
    backend: Family<ServiceLabels, Gauge>,
    sample_age: Family<ServiceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

/// The help text of `berth_up`, also written by `berth metrics` for a
/// service that does not answer (the text must match).
pub const UP_HELP: &str = "Whether the service's daemon answers (1) or not (0)";

/// The metrics of every service of `registry`, in the text format.
pub fn render(registry: &Registry) -> String {
    let g = Gauges::default();
    for svc in registry.services.values() {
        let st = svc.status();
        let l = ServiceLabels {
            service: st.name.clone(),
        };
        let set = |f: &Family<ServiceLabels, Gauge>, v: usize| {
            f.get_or_create(&l)
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&g.up, 1);
        set(&g.volumes, st.volumes);
        set(&g.mounted, st.mounted);
        set(
            &g.users,
            usize::try_from(st.mount_users).unwrap_or(usize::MAX),
        );
        set(&g.snapshots, st.snapshots);
        set(&g.stuck, st.stuck);
        set(&g.busy, svc.operations().len());
        set(&g.backend, usize::from(st.problem.is_none()));
        if let Some(age) = svc.oldest_sample_age() {
            g.sample_age.get_or_create(&l).set(age.as_secs_f64());
        }
    }
    let mut reg = PromRegistry::with_prefix("berth");
    let m = &registry.metrics;
    reg.register(
        "requests",
        "Plugin API requests answered, by service, route and HTTP status",
        m.requests.clone(),
    );
    reg.register(
        "request_duration_seconds",
        "Time from request to answer, by service and route",
        m.latency.clone(),
    );
    reg.register("up", UP_HELP, g.up);
    reg.register("volumes", "Volumes of the service", g.volumes);
    reg.register("mounted_volumes", "Volumes mounted now", g.mounted);
    reg.register(
        "mount_users",
        "Sum of the mount counts of the service's volumes",
        g.users,
    );
    reg.register("snapshots", "Snapshots of the service", g.snapshots);
    reg.register(
        "stuck_operations",
        "Storage operations past their deadline, going on in the background",
        g.stuck,
    );
    reg.register(
        "operations_in_progress",
        "Long operations (snapshot, clone, resize) in flight",
        g.busy,
    );
    reg.register(
        "backend_healthy",
        "Whether the storage backend can serve (0: e.g. the Ceph cluster is unreachable)",
        g.backend,
    );
    reg.register(
        "usage_sample_age_seconds",
        "Age of the oldest used/free sample of the service's volumes",
        g.sample_age,
    );
    let uptime: Gauge = Gauge::default();
    uptime.set(i64::try_from(registry.started.elapsed().as_secs()).unwrap_or(i64::MAX));
    reg.register("uptime_seconds", "Seconds since berthd started", uptime);
    let info: Family<VersionLabels, Gauge> = Family::default();
    info.get_or_create(&VersionLabels {
        version: env!("CARGO_PKG_VERSION"),
    })
    .set(1);
    reg.register("build_info", "The berthd version", info);
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
        out = format!("# cannot encode metrics: {e}\n");
    }
    out
}
