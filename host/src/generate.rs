//! Synthetic EventRouter traffic: a deterministic generator of the envelopes EventRouter v0.3
//! writes to Kafka, `{"verb":"ADDED"|"UPDATED","event":{core/v1 Event},"old_event":{..}}`.
//!
//! It feeds `fanout demo` and the benchmarks with volume shaped like real cluster events, so that
//! what they measure (decode, plugin call, routing, produce) sees realistic bytes rather than a
//! handful of tiny hand-written lines:
//!
//! - **Bytes as Go writes them.** EventRouter marshals with Go's `encoding/json`: compact, fields
//!   in the Go struct order, `omitempty` fields left out, `null` for unset timestamps, RFC 3339
//!   timestamps (`eventTime` with microseconds), `<`, `>`, `&` written as `\u003c`, `\u003e`,
//!   `\u0026`. The JSON is therefore written by hand, in that order (a `serde_json::Value` map
//!   would sort the keys).
//! - **A realistic mix.** Pod lifecycles from the scheduler and kubelet (`Scheduled` with
//!   `eventTime` and an empty `source`, `Pulling`, `Pulled`, `Created`, `Started`, `Killing`,
//!   repeated `BackOff` / `Unhealthy` warnings with `count > 1`), controllers (Deployment
//!   `ScalingReplicaSet`, ReplicaSet / StatefulSet / DaemonSet / Job `SuccessfulCreate`, HPA
//!   `SuccessfulRescale`, Job `Completed`, CronJob `SawCompletedJob`, PVC
//!   `ProvisioningSucceeded`), cluster-scoped Node and PersistentVolume events (stored in
//!   `default`, no `involvedObject.namespace`), about 10% `UPDATED` envelopes carrying the
//!   previous version as `old_event`, and messages with quotes, `<>&`, JSON bodies and Unicode.
//! - **Realistic volume shape.** About 950 bytes per envelope on average, a few up to ~3 KB (long
//!   sandbox errors, probe bodies), `UPDATED` ones about twice as large. Namespaces follow a Zipf
//!   distribution (a few hot ones, a long tail that still shows up), named like real ones
//!   (`payments`, `checkout`, `kube-system`, ..., then `team-01`, `team-02`, ...).
//! - **Deterministic.** A seed fixes every byte: a tiny PRNG (SplitMix64) and hashes drive all
//!   choices, and the clock is simulated (it starts at 2026-11-20T08:00:00Z and advances by a
//!   random 0-40 ms per event): each event's `lastTimestamp` (or `eventTime`) is never earlier
//!   than the previous event's; `firstTimestamp` of repeated events lies further back.
//!
//! Names hang together the way they do in a cluster: a pod's name comes from its workload
//! (`ledger-api-7d9f8b6c5-x2x9q`, `ledger-db-2`, `kube-proxy-x7k2p`,
//! `nightly-report-29919360-bq5zd`), its uid and node are derived from its name, and pods are
//! replaced every few thousand events. Each record's key is `involvedObject.name`, as
//! EventRouter keys it.

use std::fmt::Write as _;

/// One envelope, ready to produce to Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedEvent {
    /// The record key: `involvedObject.name`, as EventRouter keys it. Never empty.
    pub key: String,
    /// The envelope JSON, exactly as EventRouter writes it (no trailing newline).
    pub value: Vec<u8>,
    /// `event.metadata.namespace`, always one of [`EventGenerator::namespaces`].
    pub namespace: String,
}

/// Deterministic generator of EventRouter v0.3 envelopes (what EventRouter writes to Kafka).
///
/// The same `(seed, namespaces)` always yields the same sequence of bytes. As an [`Iterator`] it
/// never ends: use `.take(n)`.
pub struct EventGenerator {
    world: World,
    rng: SplitMix64,
    draft: Draft,
    buf: Vec<u8>,
    /// Simulated wall clock, microseconds since the Unix epoch. Only moves forward.
    clock_us: u64,
    /// The cluster-wide `metadata.resourceVersion` counter (etcd's revision).
    resource_version: u64,
    emitted: u64,
}

/// 2026-11-20T08:00:00Z: where the simulated clock starts.
const START_UNIX_SECS: u64 = 1_795_161_600;

/// Namespace names used first, hottest first (the distribution is Zipf over this order).
/// Beyond them come `team-01`, `team-02`, ...
const BUILTIN_NAMESPACES: [&str; 30] = [
    "payments",
    "checkout",
    "kube-system",
    "default",
    "inventory",
    "search",
    "data-pipeline",
    "observability",
    "batch-jobs",
    "identity",
    "cert-manager",
    "edge",
    "notifications",
    "billing",
    "catalog",
    "orders",
    "shipping",
    "analytics",
    "ml-serving",
    "recommendations",
    "ingress-nginx",
    "monitoring",
    "logging",
    "fraud-detection",
    "customer-portal",
    "partner-api",
    "media",
    "messaging",
    "platform-tools",
    "staging",
];

/// The namespace cluster-scoped objects' events (Node, PersistentVolume) are stored in.
const CLUSTER_EVENTS_NAMESPACE: &str = "default";

/// Share (percent) of `UPDATED` envelopes.
const UPDATED_PERCENT: u64 = 10;

/// Share (percent) of events in `default` that are about cluster-scoped objects.
const CLUSTER_SCOPED_PERCENT: u64 = 35;

/// Pods of a workload are replaced (new names, uids) every this many events.
const POD_GENERATION_EVENTS: u64 = 3_000;

const DEPLOYMENT_APPS: [&str; 24] = [
    "ledger-api",
    "cart-api",
    "auth-gateway",
    "orders-api",
    "pricing-engine",
    "user-profile",
    "notification-svc",
    "search-api",
    "catalog-api",
    "fraud-scorer",
    "webhook-relay",
    "feature-flags",
    "image-resizer",
    "recommendation-api",
    "shipping-quotes",
    "email-dispatcher",
    "audit-log-writer",
    "media-transcoder",
    "partner-gateway",
    "storefront-web",
    "graphql-gateway",
    "event-consumer",
    "ingest-workers",
    "session-broker",
];
const STATEFUL_APPS: [&str; 6] = [
    "ledger-db",
    "redis-cache",
    "elasticsearch-data",
    "clickhouse",
    "rabbitmq",
    "zookeeper",
];
const CRON_APPS: [&str; 6] = [
    "nightly-report",
    "invoice-sweeper",
    "db-backup",
    "cache-warmer",
    "retention-cleanup",
    "sitemap-builder",
];
/// `kube-system`'s workloads, with the images real clusters run.
const KUBE_SYSTEM_APPS: [(&str, Workload, &str); 5] = [
    (
        "coredns",
        Workload::Deployment,
        "registry.k8s.io/coredns/coredns:v1.11.3",
    ),
    (
        "kube-proxy",
        Workload::DaemonSet,
        "registry.k8s.io/kube-proxy:v1.31.2",
    ),
    (
        "ebs-csi-node",
        Workload::DaemonSet,
        "public.ecr.aws/ebs-csi-driver/aws-ebs-csi-driver:v1.37.0",
    ),
    (
        "metrics-server",
        Workload::Deployment,
        "registry.k8s.io/metrics-server/metrics-server:v0.7.2",
    ),
    (
        "cluster-autoscaler",
        Workload::Deployment,
        "registry.k8s.io/autoscaling/cluster-autoscaler:v1.31.0",
    ),
];
/// Where the made-up workloads' images live (an ECR-style registry with a made-up account).
const REGISTRY: &str = "481516234200.dkr.ecr.eu-west-1.amazonaws.com";
const NODE_POOLS: [&str; 3] = ["a", "b", "c"];
const NODES_PER_POOL: u64 = 6;
const SCHEDULER_INSTANCES: [&str; 3] = [
    "default-scheduler-cp-1",
    "default-scheduler-cp-2",
    "default-scheduler-cp-3",
];
/// The alphabet Kubernetes uses for generated name suffixes (`rand.SafeEncodeString`).
const SAFE_ALPHABET: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Deployment,
    StatefulSet,
    DaemonSet,
    CronJob,
}

struct App {
    name: &'static str,
    kind: Workload,
    /// `pod-template-hash` of the current ReplicaSet (Deployments).
    template_hash: String,
    image: String,
    replicas: u64,
    port: u16,
    salt: u64,
}

struct World {
    seed: u64,
    namespaces: Vec<String>,
    /// Running sums of the Zipf weights, for sampling a namespace.
    cumulative: Vec<u64>,
    apps: Vec<Vec<App>>,
    nodes: Vec<String>,
    /// Index of `default` in `namespaces`, if present: only then are Node events generated.
    cluster_ns: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Scheduled,
    FailedScheduling,
    Pulling,
    Pulled,
    Created,
    Started,
    Killing,
    BackOff,
    Unhealthy,
    FailedMount,
    SandboxFailed,
    Evicted,
    ScalingReplicaSet,
    ControllerCreatedPod,
    HpaRescale,
    HpaMetricFailed,
    CronCreatedJob,
    JobCompleted,
    CronSawCompleted,
    PvcProvisioned,
    PvcWaiting,
    RolloutStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClusterScenario {
    NodeNotReady,
    NodeReady,
    RegisteredNode,
    Rebooted,
    Starting,
    ImageGcFailed,
    PvFailedDelete,
}

use Scenario as S;

const DEPLOYMENT_MIX: &[(Scenario, u64)] = &[
    (S::Scheduled, 8),
    (S::Pulling, 7),
    (S::Pulled, 8),
    (S::Created, 7),
    (S::Started, 7),
    (S::Killing, 6),
    (S::BackOff, 8),
    (S::Unhealthy, 16),
    (S::FailedMount, 2),
    (S::FailedScheduling, 5),
    (S::SandboxFailed, 2),
    (S::Evicted, 1),
    (S::ScalingReplicaSet, 6),
    (S::ControllerCreatedPod, 6),
    (S::HpaRescale, 3),
    (S::HpaMetricFailed, 2),
    (S::RolloutStep, 2),
];
const STATEFULSET_MIX: &[(Scenario, u64)] = &[
    (S::Scheduled, 8),
    (S::Pulling, 6),
    (S::Pulled, 7),
    (S::Created, 7),
    (S::Started, 7),
    (S::Killing, 5),
    (S::BackOff, 4),
    (S::Unhealthy, 10),
    (S::FailedMount, 4),
    (S::FailedScheduling, 2),
    (S::ControllerCreatedPod, 5),
    (S::PvcProvisioned, 3),
    (S::PvcWaiting, 2),
];
const DAEMONSET_MIX: &[(Scenario, u64)] = &[
    (S::Scheduled, 6),
    (S::Pulling, 6),
    (S::Pulled, 8),
    (S::Created, 8),
    (S::Started, 8),
    (S::Killing, 4),
    (S::BackOff, 4),
    (S::Unhealthy, 4),
    (S::FailedMount, 3),
    (S::SandboxFailed, 2),
    (S::ControllerCreatedPod, 5),
];
const CRONJOB_MIX: &[(Scenario, u64)] = &[
    (S::Scheduled, 8),
    (S::Pulling, 6),
    (S::Pulled, 8),
    (S::Created, 8),
    (S::Started, 8),
    (S::BackOff, 4),
    (S::FailedScheduling, 1),
    (S::CronCreatedJob, 6),
    (S::ControllerCreatedPod, 6),
    (S::JobCompleted, 6),
    (S::CronSawCompleted, 6),
];
/// What `UPDATED` envelopes are about: events that repeat and get their `count` bumped.
const REPEAT_MIX: &[(Scenario, u64)] = &[
    (S::BackOff, 5),
    (S::Unhealthy, 5),
    (S::FailedMount, 2),
    (S::Pulling, 1),
    (S::HpaMetricFailed, 1),
];
const CLUSTER_MIX: &[(ClusterScenario, u64)] = &[
    (ClusterScenario::NodeNotReady, 3),
    (ClusterScenario::NodeReady, 3),
    (ClusterScenario::RegisteredNode, 2),
    (ClusterScenario::Rebooted, 1),
    (ClusterScenario::Starting, 2),
    (ClusterScenario::ImageGcFailed, 1),
    (ClusterScenario::PvFailedDelete, 1),
];

/// How `involvedObject.uid` is written.
#[derive(Debug, Clone, Copy, Default)]
enum ObjUid {
    /// Omitted.
    #[default]
    None,
    /// A UUID (v4 layout) made of these bits.
    Uuid(u64, u64),
    /// The object's name: kubelet references its Node with `UID: nodeName`.
    Name,
}

/// The event being built. Reused between events so its strings keep their capacity.
#[derive(Default)]
struct Draft {
    uid: (u64, u64),
    /// UnixNano of the first occurrence: the `%x` suffix of `metadata.name`.
    name_nanos: u64,
    creation_secs: u64,
    kind: &'static str,
    /// `""`: omitted.
    api_version: &'static str,
    namespaced: bool,
    obj_name: String,
    /// Scratch space, e.g. the pod a controller event mentions.
    scratch: String,
    obj_uid: ObjUid,
    /// 0: omitted.
    obj_resource_version: u64,
    /// `""`: omitted.
    field_path: String,
    reason: &'static str,
    message: String,
    /// `""`: `"source":{}`.
    component: String,
    /// `""`: omitted.
    host: String,
    first_secs: Option<u64>,
    last_secs: Option<u64>,
    /// 0: omitted (events with `eventTime` have no count).
    count: u32,
    /// Seconds between repetitions, for counted events.
    interval_secs: u64,
    warning: bool,
    event_time_us: Option<u64>,
    /// `""`: omitted.
    action: &'static str,
    reporting_component: &'static str,
    reporting_instance: &'static str,
}

/// The fields that differ in `old_event`.
struct Version {
    count: u32,
    last_secs: Option<u64>,
    resource_version: u64,
}

impl EventGenerator {
    /// A generator for `namespaces` namespaces (at least 1): the built-in names in order
    /// (`payments`, `checkout`, `kube-system`, `default`, ...), then `team-01`, `team-02`, ...
    /// Node and PersistentVolume events are generated only when `default` is among them
    /// (`namespaces >= 4`), so every event's namespace is one of [`Self::namespaces`].
    ///
    /// # Panics
    ///
    /// If `namespaces` is 0.
    pub fn new(seed: u64, namespaces: usize) -> Self {
        assert!(
            namespaces >= 1,
            "EventGenerator needs at least one namespace"
        );
        let names: Vec<String> = (0..namespaces)
            .map(|i| match BUILTIN_NAMESPACES.get(i) {
                Some(name) => (*name).to_owned(),
                None => format!("team-{:02}", i - BUILTIN_NAMESPACES.len() + 1),
            })
            .collect();
        // Zipf with exponent 1: weight 1/rank. With 50 namespaces the coldest still gets 0.44%.
        let mut total = 0u64;
        let cumulative = (1..=namespaces as u64)
            .map(|rank| {
                total += 1_000_000_000 / rank;
                total
            })
            .collect();
        let nodes: Vec<String> = NODE_POOLS
            .iter()
            .flat_map(|pool| (1..=NODES_PER_POOL).map(move |i| format!("node-{pool}-{i}")))
            .collect();
        let apps = names
            .iter()
            .map(|ns| build_apps(seed, ns, nodes.len() as u64))
            .collect();
        let cluster_ns = names.iter().position(|n| n == CLUSTER_EVENTS_NAMESPACE);
        EventGenerator {
            world: World {
                seed,
                namespaces: names,
                cumulative,
                apps,
                nodes,
                cluster_ns,
            },
            rng: SplitMix64(seed),
            draft: Draft::default(),
            buf: Vec::with_capacity(8 * 1024),
            clock_us: START_UNIX_SECS * 1_000_000,
            resource_version: 731_200 + mix64(seed ^ 0x7265_7376) % 100_000,
            emitted: 0,
        }
    }

    /// The namespaces events are spread over, hottest first.
    pub fn namespaces(&self) -> &[String] {
        &self.world.namespaces
    }

    /// The next envelope. Allocates only the three fields of the result.
    pub fn next_event(&mut self) -> GeneratedEvent {
        let rng = &mut self.rng;
        let world = &self.world;
        let d = &mut self.draft;

        self.clock_us += rng.below(40_000);
        self.resource_version += 1 + rng.below(3);
        let now_us = self.clock_us;
        let generation = self.emitted / POD_GENERATION_EVENTS;
        self.emitted += 1;

        let ns_index = world.pick_namespace(rng);
        let namespace = &world.namespaces[ns_index];
        d.reset(rng);

        let updated = rng.chance(UPDATED_PERCENT);
        if !updated && world.cluster_ns == Some(ns_index) && rng.chance(CLUSTER_SCOPED_PERCENT) {
            let scenario = rng.weighted(CLUSTER_MIX);
            fill_cluster_event(rng, world, d, scenario, now_us);
        } else {
            let apps = &world.apps[ns_index];
            let app = &apps[rng.below(apps.len() as u64) as usize];
            let scenario = if updated {
                match rng.weighted(REPEAT_MIX) {
                    S::HpaMetricFailed if app.kind != Workload::Deployment => S::BackOff,
                    s => s,
                }
            } else {
                rng.weighted(match app.kind {
                    Workload::Deployment => DEPLOYMENT_MIX,
                    Workload::StatefulSet => STATEFULSET_MIX,
                    Workload::DaemonSet => DAEMONSET_MIX,
                    Workload::CronJob => CRONJOB_MIX,
                })
            };
            let ctx = AppCtx {
                world,
                namespace,
                app,
                generation,
                now_us,
                long_ok: !updated,
            };
            fill_app_event(rng, &ctx, d, scenario);
        }

        let old = if updated {
            // An update bumps the count: at least 2 now, the previous version one less.
            if d.count < 2 {
                d.count = 2 + rng.below(3) as u32;
                let last = d.last_secs.unwrap_or(now_us / 1_000_000);
                d.first_secs = Some(last.saturating_sub(u64::from(d.count - 1) * d.interval_secs));
                d.creation_secs = d.first_secs.unwrap_or(last);
                d.name_nanos = d.creation_secs * 1_000_000_000 + rng.below(1_000_000_000);
            }
            Some(Version {
                count: d.count - 1,
                last_secs: d.last_secs.map(|t| t - d.interval_secs),
                resource_version: self.resource_version - 1 - rng.below(5_000),
            })
        } else {
            None
        };

        let buf = &mut self.buf;
        buf.clear();
        buf.extend_from_slice(if old.is_some() {
            b"{\"verb\":\"UPDATED\",\"event\":"
        } else {
            b"{\"verb\":\"ADDED\",\"event\":"
        });
        let current = Version {
            count: d.count,
            last_secs: d.last_secs,
            resource_version: self.resource_version,
        };
        write_event(buf, d, namespace, &current);
        if let Some(old) = &old {
            buf.extend_from_slice(b",\"old_event\":");
            write_event(buf, d, namespace, old);
        }
        buf.push(b'}');

        GeneratedEvent {
            key: d.obj_name.clone(),
            value: buf.as_slice().to_vec(),
            namespace: namespace.clone(),
        }
    }
}

impl std::fmt::Debug for EventGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventGenerator")
            .field("seed", &self.world.seed)
            .field("namespaces", &self.world.namespaces.len())
            .field("emitted", &self.emitted)
            .finish_non_exhaustive()
    }
}

impl Iterator for EventGenerator {
    type Item = GeneratedEvent;

    fn next(&mut self) -> Option<GeneratedEvent> {
        Some(self.next_event())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

impl World {
    fn pick_namespace(&self, rng: &mut SplitMix64) -> usize {
        let total = *self.cumulative.last().expect("at least one namespace");
        let r = rng.below(total);
        self.cumulative.partition_point(|&c| c <= r)
    }
}

/// The workloads of one namespace, fixed for a seed.
fn build_apps(seed: u64, namespace: &str, nodes: u64) -> Vec<App> {
    let h = mix64(seed ^ str_hash(namespace));
    let mut apps = Vec::new();
    let mut push = |name: &'static str, kind: Workload, image: String, salt: u64| {
        let replicas = match kind {
            Workload::Deployment => 2 + salt % 5,
            Workload::StatefulSet => 3,
            Workload::DaemonSet => nodes,
            Workload::CronJob => 1,
        };
        let mut template_hash = String::new();
        push_safe_suffix(
            &mut template_hash,
            mix64(salt ^ 0x7465_6d70),
            9 + (salt % 2) as usize,
        );
        apps.push(App {
            name,
            kind,
            template_hash,
            image,
            replicas,
            port: [8080, 8000, 9090, 3000, 8443][(salt % 5) as usize],
            salt,
        });
    };
    if namespace == "kube-system" {
        for (i, (name, kind, image)) in KUBE_SYSTEM_APPS.iter().enumerate() {
            push(name, *kind, (*image).to_owned(), mix64(h ^ i as u64));
        }
        return apps;
    }
    let image = |name: &str, salt: u64| {
        format!(
            "{REGISTRY}/{namespace}/{name}:{}.{}.{}-g{:07x}",
            1 + salt % 6,
            (salt >> 8) % 24,
            (salt >> 16) % 10,
            (salt >> 32) & 0xfff_ffff
        )
    };
    // Three or four Deployments: an odd stride below 24 keeps up to four picks distinct.
    let deployments = 3 + h % 2;
    let start = (h >> 8) as usize;
    let stride = 1 + 2 * ((h >> 16) as usize % 11);
    for i in 0..deployments as usize {
        let name = DEPLOYMENT_APPS[(start + i * stride) % DEPLOYMENT_APPS.len()];
        let salt = mix64(h ^ (i as u64 + 1));
        push(name, Workload::Deployment, image(name, salt), salt);
    }
    if (h >> 24) % 10 < 6 {
        let name = STATEFUL_APPS[(h >> 32) as usize % STATEFUL_APPS.len()];
        let salt = mix64(h ^ 0x5354_4154);
        push(name, Workload::StatefulSet, image(name, salt), salt);
    }
    if (h >> 40) % 10 < 5 || namespace == "batch-jobs" {
        let name = CRON_APPS[(h >> 48) as usize % CRON_APPS.len()];
        let salt = mix64(h ^ 0x4352_4f4e);
        push(name, Workload::CronJob, image(name, salt), salt);
    }
    apps
}

/// What an app event is about.
struct AppCtx<'a> {
    world: &'a World,
    namespace: &'a str,
    app: &'a App,
    generation: u64,
    now_us: u64,
    /// Whether the message may be one of the long ones (not in `UPDATED` envelopes, which carry
    /// the event twice).
    long_ok: bool,
}

/// A pod of the app, as chosen by [`set_pod`].
struct Pod {
    hash: u64,
}

impl Pod {
    fn node<'w>(&self, world: &'w World) -> &'w str {
        &world.nodes[(self.hash % world.nodes.len() as u64) as usize]
    }
}

/// Minutes since the epoch of the latest 15-minute schedule: CronJob's job-name suffix.
fn cron_job_id(now_us: u64) -> u64 {
    now_us / 60_000_000 / 15 * 15
}

/// Points the draft's `involvedObject` at one of the app's pods.
fn set_pod(rng: &mut SplitMix64, ctx: &AppCtx<'_>, d: &mut Draft) -> Pod {
    let app = ctx.app;
    let slot = rng.below(app.replicas);
    let name = &mut d.obj_name;
    name.clear();
    name.push_str(app.name);
    let suffix_seed = mix64(app.salt ^ slot.wrapping_mul(0x9E37) ^ (ctx.generation << 20));
    match app.kind {
        Workload::Deployment => {
            name.push('-');
            name.push_str(&app.template_hash);
            name.push('-');
            push_safe_suffix(name, suffix_seed, 5);
        }
        Workload::StatefulSet => {
            let _ = write!(name, "-{slot}");
        }
        Workload::DaemonSet => {
            name.push('-');
            push_safe_suffix(name, suffix_seed, 5);
        }
        Workload::CronJob => {
            let job = cron_job_id(ctx.now_us);
            let _ = write!(name, "-{job}-");
            push_safe_suffix(name, mix64(suffix_seed ^ job), 5);
        }
    }
    let hash = mix64(ctx.world.seed ^ str_hash(ctx.namespace) ^ str_hash(name).rotate_left(17));
    d.set_object("Pod", "v1", true, hash);
    Pod { hash }
}

/// Kubelet as the source, `spec.containers{..}` as the field path.
fn kubelet_source(ctx: &AppCtx<'_>, d: &mut Draft, pod: &Pod, field_path: bool) {
    d.component.push_str("kubelet");
    d.host.push_str(pod.node(ctx.world));
    if field_path {
        let _ = write!(d.field_path, "spec.containers{{{}}}", ctx.app.name);
    }
}

fn pod_ip(pod: &Pod) -> (u64, u64, u64) {
    (
        (pod.hash >> 8) % 64,
        (pod.hash >> 16) % 256,
        2 + (pod.hash >> 24) % 250,
    )
}

/// Pushes `ms` milliseconds formatted like Go's `time.Duration` (`812ms`, `1.874s`, `12.5s`).
fn push_go_duration_ms(out: &mut String, ms: u64) {
    if ms < 1000 {
        let _ = write!(out, "{ms}ms");
        return;
    }
    let _ = write!(out, "{}", ms / 1000);
    let frac = ms % 1000;
    if frac != 0 {
        let digits = [
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let mut len = 3;
        while digits[len - 1] == b'0' {
            len -= 1;
        }
        out.push('.');
        for &digit in &digits[..len] {
            out.push(char::from(digit));
        }
    }
    out.push('s');
}

fn fill_app_event(rng: &mut SplitMix64, ctx: &AppCtx<'_>, d: &mut Draft, scenario: Scenario) {
    let app = ctx.app;
    let ns = ctx.namespace;
    let now_us = ctx.now_us;
    d.reason = match scenario {
        S::Scheduled => "Scheduled",
        S::FailedScheduling => "FailedScheduling",
        S::Pulling => "Pulling",
        S::Pulled => "Pulled",
        S::Created => "Created",
        S::Started => "Started",
        S::Killing => "Killing",
        S::BackOff => "BackOff",
        S::Unhealthy => "Unhealthy",
        S::FailedMount => "FailedMount",
        S::SandboxFailed => "FailedCreatePodSandBox",
        S::Evicted => "Evicted",
        S::ScalingReplicaSet => "ScalingReplicaSet",
        S::ControllerCreatedPod | S::CronCreatedJob => "SuccessfulCreate",
        S::HpaRescale => "SuccessfulRescale",
        S::HpaMetricFailed => "FailedGetResourceMetric",
        S::JobCompleted => "Completed",
        S::CronSawCompleted => "SawCompletedJob",
        S::PvcProvisioned => "ProvisioningSucceeded",
        S::PvcWaiting => "ExternalProvisioning",
        S::RolloutStep => "RolloutStepCompleted",
    };
    macro_rules! m {
        ($($arg:tt)*) => {{
            let _ = write!(d.message, $($arg)*);
        }};
    }
    match scenario {
        S::Scheduled => {
            let pod = set_pod(rng, ctx, d);
            let node = pod.node(ctx.world);
            m!("Successfully assigned {ns}/{} to {node}", d.obj_name);
            d.scheduler(rng, now_us, "Binding");
        }
        S::FailedScheduling => {
            set_pod(rng, ctx, d);
            let total = ctx.world.nodes.len() as u64;
            let cpu = 1 + rng.below(total / 2);
            let mem = rng.below(total - cpu);
            let taint = 3;
            let affinity = total - cpu - mem;
            m!(
                "0/{} nodes are available: {cpu} Insufficient cpu, {mem} Insufficient memory, \
                 {taint} node(s) had untolerated taint {{node-role.kubernetes.io/control-plane: }}, \
                 {affinity} node(s) didn't match pod anti-affinity rules. preemption: 0/{} nodes \
                 are available: {taint} Preemption is not helpful for scheduling, {} No preemption \
                 victims found for incoming pod.",
                total + taint,
                total + taint,
                total
            );
            d.scheduler(rng, now_us, "Scheduling");
            d.warning = true;
        }
        S::Pulling => {
            let pod = set_pod(rng, ctx, d);
            kubelet_source(ctx, d, &pod, true);
            m!("Pulling image \"{}\"", app.image);
            d.occurred(rng, now_us, 1..=1, 120);
        }
        S::Pulled => {
            let pod = set_pod(rng, ctx, d);
            kubelet_source(ctx, d, &pod, true);
            if rng.chance(30) {
                m!(
                    "Container image \"{}\" already present on machine",
                    app.image
                );
            } else {
                let pull_ms = 300 + rng.below(25_000);
                let wait_ms = pull_ms + rng.below(3) * rng.below(4_000);
                m!("Successfully pulled image \"{}\" in ", app.image);
                push_go_duration_ms(&mut d.message, pull_ms);
                m!(" (");
                push_go_duration_ms(&mut d.message, wait_ms);
                m!(
                    " including waiting). Image size: {} bytes.",
                    8_000_000 + (pod.hash ^ app.salt) % 900_000_000
                );
            }
            d.once(rng, now_us);
        }
        S::Created => {
            let pod = set_pod(rng, ctx, d);
            kubelet_source(ctx, d, &pod, true);
            m!("Created container: {}", app.name);
            d.once(rng, now_us);
        }
        S::Started => {
            let pod = set_pod(rng, ctx, d);
            kubelet_source(ctx, d, &pod, true);
            m!("Started container {}", app.name);
            d.once(rng, now_us);
        }
        S::Killing => {
            let pod = set_pod(rng, ctx, d);
            kubelet_source(ctx, d, &pod, true);
            if rng.chance(20) {
                m!(
                    "Container {} failed liveness probe, will be restarted",
                    app.name
                );
            } else {
                m!("Stopping container {}", app.name);
            }
            d.once(rng, now_us);
        }
        S::BackOff => {
            let pod = set_pod(rng, ctx, d);
            kubelet_source(ctx, d, &pod, true);
            if rng.chance(25) {
                m!("Back-off pulling image \"{}\"", app.image);
            } else {
                let (a, b) = object_uid(pod.hash);
                m!(
                    "Back-off restarting failed container {} in pod {}_{ns}(",
                    app.name,
                    d.obj_name
                );
                push_uuid_str(&mut d.message, a, b);
                m!(")");
            }
            d.occurred(rng, now_us, 2..=40, 300);
            d.warning = true;
        }
        S::Unhealthy => {
            let pod = set_pod(rng, ctx, d);
            kubelet_source(ctx, d, &pod, true);
            let probe = if rng.chance(60) {
                "Readiness"
            } else {
                "Liveness"
            };
            let (a, b, c) = pod_ip(&pod);
            let port = app.port;
            match rng.below(100) {
                0..=24 => m!(
                    "{probe} probe failed: Get \"http://10.{a}.{b}.{c}:{port}/healthz\": context \
                     deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                ),
                25..=34 => m!(
                    "{probe} probe failed: Get \"http://10.{a}.{b}.{c}:{port}/ready\": dial tcp \
                     10.{a}.{b}.{c}:{port}: connect: connection refused"
                ),
                35..=64 => {
                    m!(
                        "{probe} probe failed: HTTP probe failed with statuscode: 503 \
                         <html><head><title>503 Service Unavailable</title></head><body>\
                         <h1>Service Unavailable</h1><p>upstream &amp; backend unavailable</p>"
                    );
                    // An error page listing its upstreams: sometimes long.
                    let rows = if !ctx.long_ok {
                        1 + rng.below(2)
                    } else if rng.chance(35) {
                        5 + rng.below(7)
                    } else {
                        3 + rng.below(4)
                    };
                    for i in 0..rows {
                        m!(
                            "<tr><td>upstream-{i}</td><td>10.{a}.{}.{}:{port}</td><td>down & \
                             retrying</td></tr>",
                            (b + i) % 256,
                            (c * 7 + i) % 250
                        );
                    }
                    m!("</body></html>");
                }
                65..=84 => {
                    m!(
                        "{probe} probe failed: HTTP probe failed with statuscode: 503 \
                         {{\"status\":\"DOWN\",\"components\":{{\"db\":{{\"status\":\"DOWN\",\
                         \"details\":{{\"error\":\"org.springframework.jdbc.\
                         CannotGetJdbcConnectionException: Failed to obtain JDBC Connection\"}}}},\
                         \"diskSpace\":{{\"status\":\"UP\"}},\"ping\":{{\"status\":\"UP\"}}}}}}"
                    );
                }
                85..=92 => m!(
                    "{probe} probe failed: {{\"status\":\"unhealthy\",\"message\":\"データベース接続\
                     がタイムアウトしました (5s) – Datenbank nicht erreichbar, Zeitüberschreitung\",\
                     \"retry\":\"5s ⏳\"}}"
                ),
                _ => m!(
                    "{probe} probe failed: command \"/bin/sh -c pg_isready -h 127.0.0.1 -p 5432 \
                     -U app\" timed out"
                ),
            }
            d.occurred(rng, now_us, 2..=12, 10);
            d.warning = true;
        }
        S::FailedMount => {
            let pod = set_pod(rng, ctx, d);
            kubelet_source(ctx, d, &pod, false);
            match rng.below(3) {
                0 => m!(
                    "MountVolume.SetUp failed for volume \"{}-tls\" : secret \"{}-tls\" not found",
                    app.name,
                    app.name
                ),
                1 => m!(
                    "MountVolume.SetUp failed for volume \"config\" : configmap \"{}-config\" not \
                     found",
                    app.name
                ),
                _ => {
                    m!(
                        "Unable to attach or mount volumes: unmounted volumes=[data], unattached \
                         volumes=[data kube-api-access-"
                    );
                    push_safe_suffix(&mut d.message, pod.hash, 5);
                    m!("]: timed out waiting for the condition");
                }
            }
            d.occurred(rng, now_us, 2..=8, 120);
            d.warning = true;
        }
        S::SandboxFailed => {
            let pod = set_pod(rng, ctx, d);
            kubelet_source(ctx, d, &pod, false);
            // The CRI error repeats one clause per retry: the longest messages of the mix.
            let repeats = if ctx.long_ok && rng.chance(50) {
                5 + rng.below(4)
            } else {
                1 + rng.below(3)
            };
            let sandbox = mix64(pod.hash ^ ctx.now_us);
            m!("Failed to create pod sandbox: rpc error: code = Unknown desc = ");
            for i in 0..repeats {
                if i > 0 {
                    m!("; ");
                }
                m!(
                    "failed to setup network for sandbox \"{sandbox:016x}{:016x}{:016x}{:016x}\": \
                     plugin type=\"calico\" failed (add): error getting ClusterInformation: \
                     connection is unauthorized: Unauthorized",
                    mix64(sandbox),
                    mix64(sandbox ^ 1),
                    mix64(sandbox ^ 2)
                );
            }
            d.occurred(rng, now_us, 1..=15, 5);
            d.warning = true;
        }
        S::Evicted => {
            let pod = set_pod(rng, ctx, d);
            kubelet_source(ctx, d, &pod, false);
            m!(
                "The node was low on resource: memory. Threshold quantity: 100Mi, available: \
                 {}Ki. Container {} was using {}Ki, request is 512Mi, has larger consumption of \
                 memory.",
                60_000 + rng.below(40_000),
                app.name,
                600_000 + rng.below(1_000_000)
            );
            d.once(rng, now_us);
            d.warning = true;
        }
        S::ScalingReplicaSet => {
            d.obj_name.push_str(app.name);
            d.set_object("Deployment", "apps/v1", true, ctx.object_hash("Deployment"));
            d.component.push_str("deployment-controller");
            let from = 1 + rng.below(app.replicas + 2);
            if rng.chance(60) {
                m!(
                    "Scaled up replica set {}-{} from {from} to {}",
                    app.name,
                    app.template_hash,
                    from + 1
                );
            } else {
                m!("Scaled down replica set {}-", app.name);
                push_safe_suffix(&mut d.message, mix64(app.salt ^ ctx.generation), 10);
                m!(" from {from} to {}", from - 1);
            }
            d.once(rng, now_us);
        }
        S::ControllerCreatedPod => {
            set_pod(rng, ctx, d);
            // The pod becomes the message; the controlling object becomes the subject.
            std::mem::swap(&mut d.obj_name, &mut d.scratch);
            d.obj_name.clear();
            let pod_name = &d.scratch;
            let (kind, component) = match app.kind {
                Workload::Deployment => ("ReplicaSet", "replicaset-controller"),
                Workload::StatefulSet => ("StatefulSet", "statefulset-controller"),
                Workload::DaemonSet => ("DaemonSet", "daemonset-controller"),
                Workload::CronJob => ("Job", "job-controller"),
            };
            match app.kind {
                Workload::Deployment => {
                    let _ = write!(d.obj_name, "{}-{}", app.name, app.template_hash);
                    m!("Created pod: {pod_name}");
                }
                Workload::StatefulSet => {
                    d.obj_name.push_str(app.name);
                    if rng.chance(30) {
                        m!(
                            "create Claim data-{pod_name} Pod {pod_name} in StatefulSet {} success",
                            app.name
                        );
                    } else {
                        m!(
                            "create Pod {pod_name} in StatefulSet {} successful",
                            app.name
                        );
                    }
                }
                Workload::DaemonSet => {
                    d.obj_name.push_str(app.name);
                    m!("Created pod: {pod_name}");
                }
                Workload::CronJob => {
                    let _ = write!(d.obj_name, "{}-{}", app.name, cron_job_id(now_us));
                    m!("Created pod: {pod_name}");
                }
            }
            let api = if kind == "Job" { "batch/v1" } else { "apps/v1" };
            d.set_object(kind, api, true, ctx.object_hash(kind));
            d.component.push_str(component);
            d.once(rng, now_us);
        }
        S::HpaRescale | S::HpaMetricFailed => {
            d.obj_name.push_str(app.name);
            d.set_object(
                "HorizontalPodAutoscaler",
                "autoscaling/v2",
                true,
                ctx.object_hash("HorizontalPodAutoscaler"),
            );
            d.component.push_str("horizontal-pod-autoscaler");
            if scenario == S::HpaRescale {
                let size = 2 + rng.below(12);
                if rng.chance(60) {
                    m!(
                        "New size: {size}; reason: cpu resource utilization (percentage of \
                         request) above target"
                    );
                } else {
                    m!("New size: {size}; reason: All metrics below target");
                }
                d.once(rng, now_us);
            } else {
                m!(
                    "failed to get cpu utilization: unable to get metrics for resource cpu: no \
                     metrics returned from resource metrics API"
                );
                d.occurred(rng, now_us, 2..=10, 30);
                d.warning = true;
            }
        }
        S::CronCreatedJob | S::CronSawCompleted => {
            d.obj_name.push_str(app.name);
            d.set_object("CronJob", "batch/v1", true, ctx.object_hash("CronJob"));
            d.component.push_str("cronjob-controller");
            let job = cron_job_id(now_us);
            if scenario == S::CronCreatedJob {
                m!("Created job {}-{job}", app.name);
            } else {
                m!(
                    "Saw completed job: {}-{}, condition: Complete",
                    app.name,
                    job.saturating_sub(15)
                );
            }
            d.once(rng, now_us);
        }
        S::JobCompleted => {
            let _ = write!(d.obj_name, "{}-{}", app.name, cron_job_id(now_us));
            let hash = ctx.object_hash("Job");
            d.set_object("Job", "batch/v1", true, hash);
            d.component.push_str("job-controller");
            m!("Job completed");
            d.once(rng, now_us);
        }
        S::PvcProvisioned | S::PvcWaiting => {
            set_pod(rng, ctx, d);
            std::mem::swap(&mut d.obj_name, &mut d.scratch);
            d.obj_name.clear();
            d.obj_name.push_str("data-");
            d.obj_name.push_str(&d.scratch);
            let hash = ctx.object_hash("PersistentVolumeClaim") ^ str_hash(&d.scratch);
            d.set_object("PersistentVolumeClaim", "v1", true, hash);
            if scenario == S::PvcProvisioned {
                let controller = mix64(ctx.world.seed ^ 0x6373_6963);
                d.component.push_str("ebs.csi.aws.com_ebs-csi-controller-");
                push_safe_suffix(&mut d.component, controller, 9);
                d.component.push('-');
                push_safe_suffix(&mut d.component, controller >> 7, 5);
                d.component.push('_');
                push_uuid_str(&mut d.component, controller, mix64(controller));
                // The volume is named after the claim's uid.
                m!("Successfully provisioned volume pvc-");
                let (hi, lo) = object_uid(hash);
                push_uuid_str(&mut d.message, hi, lo);
            } else {
                d.component.push_str("persistentvolume-controller");
                m!(
                    "Waiting for a volume to be created either by the external provisioner \
                     'ebs.csi.aws.com' or manually by the system administrator. If volume \
                     creation is delayed, please verify that the provisioner is running and \
                     correctly registered."
                );
            }
            d.once(rng, now_us);
        }
        S::RolloutStep => {
            d.obj_name.push_str(app.name);
            d.set_object(
                "Rollout",
                "argoproj.io/v1alpha1",
                true,
                ctx.object_hash("Rollout"),
            );
            d.component.push_str("rollouts-controller");
            let step = 1 + rng.below(4);
            let weight = [10, 25, 50, 100][(step - 1) as usize];
            m!(
                "Rollout step {step}/4 completed (setWeight: {weight}) → canary «{}» serving \
                 {weight}% of traffic ✓",
                app.name
            );
            d.once(rng, now_us);
        }
    }
}

impl AppCtx<'_> {
    /// A stable per-object hash: the same object keeps its uid and resourceVersion.
    fn object_hash(&self, kind: &str) -> u64 {
        mix64(
            self.world.seed
                ^ str_hash(self.namespace)
                ^ str_hash(kind).rotate_left(7)
                ^ self.app.salt,
        )
    }
}

fn fill_cluster_event(
    rng: &mut SplitMix64,
    world: &World,
    d: &mut Draft,
    scenario: ClusterScenario,
    now_us: u64,
) {
    use ClusterScenario as C;
    d.reason = match scenario {
        C::NodeNotReady => "NodeNotReady",
        C::NodeReady => "NodeReady",
        C::RegisteredNode => "RegisteredNode",
        C::Rebooted => "Rebooted",
        C::Starting => "Starting",
        C::ImageGcFailed => "ImageGCFailed",
        C::PvFailedDelete => "VolumeFailedDelete",
    };
    let node_index = rng.below(world.nodes.len() as u64);
    let node = &world.nodes[node_index as usize];
    let node_hash = mix64(world.seed ^ str_hash(node));
    macro_rules! m {
        ($($arg:tt)*) => {{
            let _ = write!(d.message, $($arg)*);
        }};
    }
    if scenario == C::PvFailedDelete {
        d.obj_name.push_str("pvc-");
        push_uuid_str(
            &mut d.obj_name,
            mix64(node_hash ^ (now_us / 600_000_000)),
            node_hash,
        );
        d.set_object(
            "PersistentVolume",
            "v1",
            false,
            mix64(str_hash(&d.obj_name)),
        );
        d.component.push_str("persistentvolume-controller");
        m!(
            "persistentvolume {} is still attached to node {node}",
            d.obj_name
        );
        d.occurred(rng, now_us, 2..=6, 60);
        d.warning = true;
        return;
    }
    d.obj_name.push_str(node);
    // The node controller references the Node object; kubelet references itself by name, with
    // the node name as its uid and no apiVersion (what kubelet's `nodeRef` holds).
    let from_kubelet = !matches!(scenario, C::NodeNotReady | C::RegisteredNode);
    if from_kubelet {
        d.kind = "Node";
        d.namespaced = false;
        d.obj_uid = ObjUid::Name;
        d.component.push_str("kubelet");
        d.host.push_str(node);
    } else {
        d.set_object("Node", "v1", false, node_hash);
        d.obj_resource_version = 0;
        d.component.push_str("node-controller");
    }
    match scenario {
        C::NodeNotReady => m!("Node {node} status is now: NodeNotReady"),
        C::NodeReady => m!("Node {node} status is now: NodeReady"),
        C::RegisteredNode => m!("Node {node} event: Registered Node {node} in Controller"),
        C::Rebooted => {
            m!("Node {node} has been rebooted, boot id: ");
            push_uuid_str(&mut d.message, rng.next_u64(), rng.next_u64());
            d.warning = true;
        }
        C::Starting => m!("Starting kubelet."),
        C::ImageGcFailed => {
            m!(
                "Failed to garbage collect required amount of images. Attempted to free {} \
                 bytes, but only found 0 bytes eligible to free.",
                1_000_000_000 + rng.below(5_000_000_000)
            );
            d.warning = true;
        }
        C::PvFailedDelete => unreachable!("handled above"),
    }
    d.once(rng, now_us);
}

impl Draft {
    /// Clears the draft for a new event, with a fresh `metadata.uid`.
    fn reset(&mut self, rng: &mut SplitMix64) {
        self.uid = (rng.next_u64(), rng.next_u64());
        self.name_nanos = 0;
        self.creation_secs = 0;
        self.kind = "";
        self.api_version = "";
        self.namespaced = true;
        self.obj_name.clear();
        self.scratch.clear();
        self.obj_uid = ObjUid::None;
        self.obj_resource_version = 0;
        self.field_path.clear();
        self.reason = "";
        self.message.clear();
        self.component.clear();
        self.host.clear();
        self.first_secs = None;
        self.last_secs = None;
        self.count = 0;
        self.interval_secs = 0;
        self.warning = false;
        self.event_time_us = None;
        self.action = "";
        self.reporting_component = "";
        self.reporting_instance = "";
    }

    fn set_object(
        &mut self,
        kind: &'static str,
        api_version: &'static str,
        namespaced: bool,
        hash: u64,
    ) {
        self.kind = kind;
        self.api_version = api_version;
        self.namespaced = namespaced;
        let (hi, lo) = object_uid(hash);
        self.obj_uid = ObjUid::Uuid(hi, lo);
        self.obj_resource_version = 100_000 + hash % 1_400_000;
    }

    /// A legacy (`core/v1`) event that happened once, now.
    fn once(&mut self, rng: &mut SplitMix64, now_us: u64) {
        self.occurred(rng, now_us, 1..=1, 1);
    }

    /// A legacy (`core/v1`) event that happened a number of times drawn from `counts`,
    /// `interval_secs` apart, the last time now.
    fn occurred(
        &mut self,
        rng: &mut SplitMix64,
        now_us: u64,
        counts: std::ops::RangeInclusive<u32>,
        interval_secs: u64,
    ) {
        let (min, max) = counts.into_inner();
        let count = min + rng.below(u64::from(max - min) + 1) as u32;
        let now = now_us / 1_000_000;
        let interval = interval_secs.max(1);
        let first = now.saturating_sub(u64::from(count - 1) * interval);
        self.count = count;
        self.interval_secs = interval;
        self.first_secs = Some(first);
        self.last_secs = Some(now);
        self.creation_secs = first;
        self.name_nanos = if count == 1 {
            now_us * 1_000 + rng.below(1_000)
        } else {
            first * 1_000_000_000 + rng.below(1_000_000_000)
        };
    }

    /// An `events.k8s.io` style event from the scheduler: `eventTime`, empty `source`, no count.
    fn scheduler(&mut self, rng: &mut SplitMix64, now_us: u64, action: &'static str) {
        self.event_time_us = Some(now_us);
        self.creation_secs = now_us / 1_000_000;
        self.name_nanos = now_us * 1_000 + rng.below(1_000);
        self.interval_secs = 1;
        self.action = action;
        self.reporting_component = "default-scheduler";
        self.reporting_instance = SCHEDULER_INSTANCES[(rng.next_u64() % 3) as usize];
    }
}

// ----------------------------------------------------------------------------------------------
// Writing JSON the way Go's encoding/json does.

/// Writes one `core/v1` Event object, in the Go struct's field order.
fn write_event(buf: &mut Vec<u8>, d: &Draft, namespace: &str, v: &Version) {
    buf.extend_from_slice(b"{\"metadata\":{\"name\":\"");
    escape_json_into(buf, &d.obj_name);
    buf.push(b'.');
    push_hex(buf, d.name_nanos);
    buf.extend_from_slice(b"\",\"namespace\":");
    write_json_str(buf, namespace);
    buf.extend_from_slice(b",\"uid\":\"");
    push_uuid(buf, d.uid.0, d.uid.1);
    buf.extend_from_slice(b"\",\"resourceVersion\":\"");
    push_u64(buf, v.resource_version);
    buf.extend_from_slice(b"\",\"creationTimestamp\":");
    write_time(buf, Some(d.creation_secs));

    buf.extend_from_slice(b"},\"involvedObject\":{\"kind\":");
    write_json_str(buf, d.kind);
    if d.namespaced {
        buf.extend_from_slice(b",\"namespace\":");
        write_json_str(buf, namespace);
    }
    buf.extend_from_slice(b",\"name\":");
    write_json_str(buf, &d.obj_name);
    match d.obj_uid {
        ObjUid::None => {}
        ObjUid::Uuid(hi, lo) => {
            buf.extend_from_slice(b",\"uid\":\"");
            push_uuid(buf, hi, lo);
            buf.push(b'"');
        }
        ObjUid::Name => {
            buf.extend_from_slice(b",\"uid\":");
            write_json_str(buf, &d.obj_name);
        }
    }
    if !d.api_version.is_empty() {
        buf.extend_from_slice(b",\"apiVersion\":");
        write_json_str(buf, d.api_version);
    }
    if d.obj_resource_version != 0 {
        buf.extend_from_slice(b",\"resourceVersion\":\"");
        push_u64(buf, d.obj_resource_version);
        buf.push(b'"');
    }
    if !d.field_path.is_empty() {
        buf.extend_from_slice(b",\"fieldPath\":");
        write_json_str(buf, &d.field_path);
    }

    buf.extend_from_slice(b"},\"reason\":");
    write_json_str(buf, d.reason);
    buf.extend_from_slice(b",\"message\":");
    write_json_str(buf, &d.message);
    buf.extend_from_slice(b",\"source\":{");
    if !d.component.is_empty() {
        buf.extend_from_slice(b"\"component\":");
        write_json_str(buf, &d.component);
        if !d.host.is_empty() {
            buf.extend_from_slice(b",\"host\":");
            write_json_str(buf, &d.host);
        }
    }
    buf.extend_from_slice(b"},\"firstTimestamp\":");
    write_time(buf, d.first_secs);
    buf.extend_from_slice(b",\"lastTimestamp\":");
    write_time(buf, v.last_secs);
    if v.count != 0 {
        buf.extend_from_slice(b",\"count\":");
        push_u64(buf, u64::from(v.count));
    }
    buf.extend_from_slice(if d.warning {
        b",\"type\":\"Warning\",\"eventTime\":"
    } else {
        b",\"type\":\"Normal\",\"eventTime\":"
    });
    write_micro_time(buf, d.event_time_us);
    if !d.action.is_empty() {
        buf.extend_from_slice(b",\"action\":");
        write_json_str(buf, d.action);
    }
    buf.extend_from_slice(b",\"reportingComponent\":");
    write_json_str(buf, d.reporting_component);
    buf.extend_from_slice(b",\"reportingInstance\":");
    write_json_str(buf, d.reporting_instance);
    buf.push(b'}');
}

/// Writes `s` as a JSON string, quoted.
fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    escape_json_into(buf, s);
    buf.push(b'"');
}

/// Escapes `s` for the inside of a JSON string exactly like Go's `encoding/json` (with its
/// default HTML escaping): `"` and `\` backslashed; `\n`, `\r`, `\t` short; other control
/// characters as `\u00XX`; `<`, `>`, `&` as `\u003c`, `\u003e`, `\u0026`; U+2028 and U+2029 as
/// `\u2028`, `\u2029`; everything else, non-ASCII included, as is (UTF-8). `\b` and `\f` are
/// written `\u0008` and `\u000c`, as Go did before 1.22 (EventRouter v0.3 predates it).
fn escape_json_into(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !SPECIAL[usize::from(b)] {
            i += 1;
            continue;
        }
        let (escaped, len): (&[u8], usize) = match b {
            b'"' => (b"\\\"", 1),
            b'\\' => (b"\\\\", 1),
            b'\n' => (b"\\n", 1),
            b'\r' => (b"\\r", 1),
            b'\t' => (b"\\t", 1),
            b'<' => (b"\\u003c", 1),
            b'>' => (b"\\u003e", 1),
            b'&' => (b"\\u0026", 1),
            0x00..=0x1f => {
                buf.extend_from_slice(&bytes[start..i]);
                let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
                buf.extend_from_slice(b"\\u00");
                buf.extend_from_slice(&hex);
                i += 1;
                start = i;
                continue;
            }
            // 0xE2: U+2028 is E2 80 A8, U+2029 is E2 80 A9; other E2 sequences pass through.
            _ => match bytes.get(i + 1..i + 3) {
                Some([0x80, 0xa8]) => (b"\\u2028", 3),
                Some([0x80, 0xa9]) => (b"\\u2029", 3),
                _ => {
                    i += 1;
                    continue;
                }
            },
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(escaped);
        i += len;
        start = i;
    }
    buf.extend_from_slice(&bytes[start..]);
}

/// The bytes [`escape_json_into`] must look at: control characters, `"`, `\`, `<`, `>`, `&`,
/// and 0xE2, the lead byte of U+2028 and U+2029. Everything else is copied as is.
const SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[b'<' as usize] = true;
    table[b'>' as usize] = true;
    table[b'&' as usize] = true;
    table[0xe2] = true;
    table
};

/// `"2026-11-20T08:15:02Z"` (metav1.Time, RFC 3339 in seconds), or `null` when unset.
fn write_time(buf: &mut Vec<u8>, secs: Option<u64>) {
    match secs {
        Some(secs) => {
            buf.push(b'"');
            push_rfc3339(buf, secs);
            buf.extend_from_slice(b"Z\"");
        }
        None => buf.extend_from_slice(b"null"),
    }
}

/// `"2026-11-20T08:15:02.417391Z"` (metav1.MicroTime, always six digits), or `null` when unset.
fn write_micro_time(buf: &mut Vec<u8>, micros: Option<u64>) {
    match micros {
        Some(us) => {
            buf.push(b'"');
            push_rfc3339(buf, us / 1_000_000);
            buf.push(b'.');
            push_padded(buf, us % 1_000_000, 6);
            buf.extend_from_slice(b"Z\"");
        }
        None => buf.extend_from_slice(b"null"),
    }
}

/// `YYYY-MM-DDTHH:MM:SS` for a Unix time (UTC), without the zone.
fn push_rfc3339(buf: &mut Vec<u8>, secs: u64) {
    let (y, m, d) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    push_padded(buf, y, 4);
    buf.push(b'-');
    push_padded(buf, m, 2);
    buf.push(b'-');
    push_padded(buf, d, 2);
    buf.push(b'T');
    push_padded(buf, rem / 3600, 2);
    buf.push(b':');
    push_padded(buf, rem / 60 % 60, 2);
    buf.push(b':');
    push_padded(buf, rem % 60, 2);
}

/// Days since 1970-01-01 to a (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn push_padded(buf: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut tmp = [b'0'; 20];
    let mut i = tmp.len();
    while n > 0 || i == tmp.len() {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = i.min(tmp.len() - width);
    buf.extend_from_slice(&tmp[start..]);
}

fn push_u64(buf: &mut Vec<u8>, n: u64) {
    push_padded(buf, n, 1);
}

fn push_hex(buf: &mut Vec<u8>, mut n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = HEX[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// A UUID in the version-4 layout (`xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`), as Kubernetes
/// generates uids.
fn uuid_bytes(hi: u64, lo: u64) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hi = (hi & !0xf000) | 0x4000;
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62);
    let bits = (u128::from(hi) << 64) | u128::from(lo);
    let mut out = [b'-'; 36];
    let mut nibble = 32;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        nibble -= 1;
        *slot = HEX[((bits >> (nibble * 4)) & 0xf) as usize];
    }
    out
}

fn push_uuid(buf: &mut Vec<u8>, hi: u64, lo: u64) {
    buf.extend_from_slice(&uuid_bytes(hi, lo));
}

fn push_uuid_str(out: &mut String, hi: u64, lo: u64) {
    let bytes = uuid_bytes(hi, lo);
    out.push_str(std::str::from_utf8(&bytes).expect("a UUID is ASCII"));
}

/// `len` characters of Kubernetes' name-suffix alphabet, drawn from `seed`.
fn push_safe_suffix(out: &mut String, seed: u64, len: usize) {
    let mut x = seed;
    for i in 0..len {
        if i > 0 && i % 12 == 0 {
            x = mix64(x);
        }
        out.push(char::from(SAFE_ALPHABET[(x % 27) as usize]));
        x /= 27;
    }
}

// ----------------------------------------------------------------------------------------------
// Randomness.

/// SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number generators", 2014; the
/// constants of Vigna's `splitmix64.c`): a counter advanced by the golden-ratio increment, then
/// scrambled by [`mix64`]. Tiny, fast, statistically solid for test data, and fully determined by
/// its seed. Not for cryptography.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40 for our `n`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn weighted<T: Copy>(&mut self, table: &[(T, u64)]) -> T {
        let total: u64 = table.iter().map(|(_, w)| w).sum();
        let mut r = self.below(total);
        for &(item, weight) in table {
            if r < weight {
                return item;
            }
            r -= weight;
        }
        unreachable!("r < total")
    }
}

/// The uid bits of the object with this hash.
fn object_uid(hash: u64) -> (u64, u64) {
    (mix64(hash ^ 0x0075_6964), mix64(hash ^ 0x0075_6965))
}

/// SplitMix64's finaliser: a bijective 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, mixed: a stable hash for deriving names and uids from other names.
fn str_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in s.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::{BTreeMap, BTreeSet};

    // --- Decoding with the host's own decoder, as the pipeline does. ---

    use crate::bindings::{SourceRecord, Verb};
    use crate::event::Event;

    fn parse(raw: &[u8]) -> Result<Event, String> {
        let parsed = crate::event::parse(raw).map_err(|e| e.to_string())?;
        let source = SourceRecord {
            topic: String::new(),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: None,
            headers: Vec::new(),
        };
        Ok(parsed.into_event(raw.to_vec(), source))
    }

    /// The envelope's `old_event`, decoded by the host as if it were the event.
    fn old_event(value: &serde_json::Value) -> Option<Event> {
        let old = value.get("old_event")?;
        let envelope = serde_json::json!({"verb": "ADDED", "event": old});
        Some(parse(&serde_json::to_vec(&envelope).unwrap()).unwrap())
    }

    // --- Object keys in document order, to check Go's field order. ---

    #[derive(Debug, Default)]
    struct Keys(Vec<(String, Keys)>);

    impl Keys {
        fn names(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| k.as_str()).collect()
        }

        fn get(&self, key: &str) -> &Keys {
            &self
                .0
                .iter()
                .find(|(k, _)| k == key)
                .unwrap_or_else(|| panic!("no {key}"))
                .1
        }
    }

    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        let value = map.next_value::<Keys>()?;
                        keys.push((key, value));
                    }
                    Ok(Keys(keys))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Keys, A::Error> {
                    while seq.next_element::<Keys>()?.is_some() {}
                    Ok(Keys::default())
                }
                fn visit_bool<E>(self, _: bool) -> Result<Keys, E> {
                    Ok(Keys::default())
                }
                fn visit_i64<E>(self, _: i64) -> Result<Keys, E> {
                    Ok(Keys::default())
                }
                fn visit_u64<E>(self, _: u64) -> Result<Keys, E> {
                    Ok(Keys::default())
                }
                fn visit_f64<E>(self, _: f64) -> Result<Keys, E> {
                    Ok(Keys::default())
                }
                fn visit_str<E>(self, _: &str) -> Result<Keys, E> {
                    Ok(Keys::default())
                }
                fn visit_unit<E>(self) -> Result<Keys, E> {
                    Ok(Keys::default())
                }
            }
            d.deserialize_any(V)
        }
    }

    /// `keys` appear in `order`'s order, each at most once, and include every `required` key.
    fn assert_go_order(what: &str, keys: &[&str], order: &[&str], required: &[&str]) {
        let mut last = None;
        for key in keys {
            let pos = order.iter().position(|o| o == key);
            let pos = pos.unwrap_or_else(|| panic!("{what}: unexpected key {key} in {keys:?}"));
            assert!(
                last < Some(pos),
                "{what}: {keys:?} is not in Go's order {order:?}"
            );
            last = Some(pos);
        }
        for key in required {
            assert!(keys.contains(key), "{what}: {key} missing from {keys:?}");
        }
    }

    const EVENT_ORDER: &[&str] = &[
        "metadata",
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "type",
        "eventTime",
        "series",
        "action",
        "related",
        "reportingComponent",
        "reportingInstance",
    ];
    const EVENT_ALWAYS: &[&str] = &[
        "metadata",
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "type",
        "eventTime",
        "reportingComponent",
        "reportingInstance",
    ];
    const METADATA_ORDER: &[&str] = &[
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ];
    const OBJECT_ORDER: &[&str] = &[
        "kind",
        "namespace",
        "name",
        "uid",
        "apiVersion",
        "resourceVersion",
        "fieldPath",
    ];

    fn events(seed: u64, namespaces: usize, n: usize) -> Vec<GeneratedEvent> {
        EventGenerator::new(seed, namespaces).take(n).collect()
    }

    fn is_time(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 20
            && b.iter().enumerate().all(|(i, &c)| match i {
                4 | 7 => c == b'-',
                10 => c == b'T',
                13 | 16 => c == b':',
                19 => c == b'Z',
                _ => c.is_ascii_digit(),
            })
    }

    fn is_micro_time(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 27
            && is_time(&format!("{}Z", &s[..19]))
            && b[19] == b'.'
            && b[20..26].iter().all(u8::is_ascii_digit)
            && b[26] == b'Z'
    }

    fn is_uuid(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 36
            && b.iter().enumerate().all(|(i, &c)| match i {
                8 | 13 | 18 | 23 => c == b'-',
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
            })
            && b[14] == b'4'
            && b"89ab".contains(&b[19])
    }

    fn resource_version(value: &serde_json::Value) -> u64 {
        value["metadata"]["resourceVersion"]
            .as_str()
            .expect("resourceVersion is a string")
            .parse()
            .expect("resourceVersion is a number")
    }

    /// Outside strings, Go's compact output has no whitespace; inside, `<>&` and control
    /// characters are always escaped.
    fn assert_compact_and_escaped(raw: &[u8]) {
        let text = std::str::from_utf8(raw).expect("UTF-8");
        let (mut in_string, mut escaped) = (false, false);
        for &b in raw {
            assert!(!matches!(b, b'<' | b'>' | b'&'), "raw <>& in {text}");
            assert!(b >= 0x20, "raw control character in {text}");
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
            } else {
                assert!(b != b' ', "whitespace outside strings in {text}");
                in_string = b == b'"';
            }
        }
    }

    #[test]
    fn every_event_decodes_like_the_host_would() {
        for (seed, namespaces, n) in [
            (1, 30, 10_000),
            (2, 1, 3_000),
            (3, 4, 3_000),
            (4, 50, 5_000),
            (5, 200, 5_000),
        ] {
            let generator = EventGenerator::new(seed, namespaces);
            let known: BTreeSet<String> = generator.namespaces().iter().cloned().collect();
            for e in generator.take(n) {
                let text = std::str::from_utf8(&e.value).expect("UTF-8");
                let ev = &parse(&e.value).unwrap_or_else(|err| panic!("{err}: {text}"));
                serde_json::from_slice::<serde_json::Value>(&e.value).expect("valid JSON");
                assert_compact_and_escaped(&e.value);

                assert!(!e.key.is_empty());
                assert_eq!(
                    e.key,
                    ev.involved_object_name(),
                    "key is involvedObject.name"
                );
                assert_eq!(e.namespace, ev.namespace(), "{text}");
                assert!(
                    known.contains(&e.namespace),
                    "{} not in namespaces()",
                    e.namespace
                );

                let suffix = ev.name().strip_prefix(&format!("{}.", e.key));
                let suffix = suffix.unwrap_or_else(|| panic!("event name {}", ev.name()));
                assert!(
                    suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{text}"
                );
                assert!(is_uuid(ev.uid()), "{text}");

                let obj = &ev.involved_object();
                assert!(!obj.kind.is_empty() && !obj.uid.is_empty(), "{text}");
                if matches!(obj.kind.as_str(), "Node" | "PersistentVolume") {
                    assert_eq!(obj.namespace, "", "cluster-scoped: {text}");
                    assert_eq!(e.namespace, "default", "{text}");
                } else {
                    assert_eq!(obj.namespace, e.namespace, "{text}");
                    assert!(is_uuid(&obj.uid), "{text}");
                    assert!(!obj.api_version.is_empty(), "{text}");
                }
                if obj.kind == "Node" && obj.api_version.is_empty() {
                    assert_eq!(obj.uid, obj.name, "kubelet's node reference: {text}");
                }
                assert!(
                    !ev.reason().is_empty() && !ev.message().is_empty(),
                    "{text}"
                );
                assert!(matches!(ev.event_type(), "Normal" | "Warning"), "{text}");

                match &ev.event_time() {
                    Some(t) => {
                        // events.k8s.io style (the scheduler): no count, no legacy timestamps.
                        assert!(is_micro_time(t), "{t}");
                        assert_eq!(ev.count, 0);
                        assert_eq!(
                            (&ev.first_timestamp(), &ev.last_timestamp()),
                            (&None, &None)
                        );
                        assert_eq!(
                            (ev.source_component(), ev.source_host()),
                            ("", ""),
                            "{text}"
                        );
                        assert!(text.contains(r#""source":{}"#));
                        assert_eq!(ev.reporting_controller(), "default-scheduler");
                    }
                    None => {
                        assert!(ev.count >= 1, "{text}");
                        let first = ev.first_timestamp().expect("firstTimestamp");
                        let last = ev.last_timestamp().expect("lastTimestamp");
                        assert!(is_time(first) && is_time(last) && first <= last, "{text}");
                        assert!(!ev.source_component().is_empty(), "{text}");
                        assert_eq!(ev.reporting_controller(), "");
                    }
                }
                if ev.source_component() == "kubelet" {
                    assert!(!ev.source_host().is_empty(), "{text}");
                }
            }
        }
    }

    #[test]
    fn fields_are_in_go_struct_order() {
        for e in events(11, 30, 5_000) {
            let keys: Keys = serde_json::from_slice(&e.value).unwrap();
            let top = keys.names();
            assert!(
                top == ["verb", "event"] || top == ["verb", "event", "old_event"],
                "{top:?}"
            );
            for (name, event) in &keys.0[1..] {
                let what = name.as_str();
                assert_go_order(what, &event.names(), EVENT_ORDER, EVENT_ALWAYS);
                assert_eq!(event.get("metadata").names(), METADATA_ORDER);
                assert_go_order(
                    what,
                    &event.get("involvedObject").names(),
                    OBJECT_ORDER,
                    &["kind", "name", "uid"],
                );
                assert_go_order(
                    what,
                    &event.get("source").names(),
                    &["component", "host"],
                    &[],
                );
            }
        }

        // And by byte position, on a kubelet event (no field name can hide in its message).
        let pulling = events(11, 30, 5_000)
            .into_iter()
            .find(|e| {
                let text = std::str::from_utf8(&e.value).unwrap();
                text.starts_with(r#"{"verb":"ADDED""#) && text.contains(r#""reason":"Pulling""#)
            })
            .expect("a Pulling event");
        let text = std::str::from_utf8(&pulling.value).unwrap();
        let fields = [
            r#"{"verb":"ADDED","event":{"metadata":{"name":"#,
            r#"","namespace":"#,
            r#"","uid":"#,
            r#"","resourceVersion":"#,
            r#"","creationTimestamp":"#,
            r#"Z"},"involvedObject":{"kind":"Pod","namespace":"#,
            r#"","name":"#,
            r#"","uid":"#,
            r#"","apiVersion":"v1","resourceVersion":"#,
            r#"","fieldPath":"spec.containers{"#,
            r#"}"},"reason":"Pulling","message":"Pulling image \""#,
            r#"\"","source":{"component":"kubelet","host":"node-"#,
            r#""},"firstTimestamp":""#,
            r#"Z","lastTimestamp":""#,
            r#"Z","count":"#,
            r#","type":"Normal","eventTime":null,"reportingComponent":"","reportingInstance":""}}"#,
        ];
        let mut at = 0;
        for field in fields {
            let pos = text[at..]
                .find(field)
                .unwrap_or_else(|| panic!("{field} after byte {at} in {text}"));
            at += pos + field.len();
        }
        assert_eq!(at, text.len(), "{text}");
    }

    #[test]
    fn output_is_deterministic_for_a_seed() {
        let a = events(42, 30, 3_000);
        let b = events(42, 30, 3_000);
        assert_eq!(a, b, "same seed, same bytes");
        let c = events(43, 30, 3_000);
        assert_ne!(a, c, "another seed, other bytes");
        let differing = a.iter().zip(&c).filter(|(x, y)| x.value != y.value).count();
        assert!(differing > 2_900, "{differing}");
        // The iterator and next_event are the same stream.
        let mut g = EventGenerator::new(42, 30);
        let first: Vec<_> = (0..100).map(|_| g.next_event()).collect();
        assert_eq!(first, a[..100]);
    }

    #[test]
    fn keys_and_namespaces_match_the_event() {
        for e in events(8, 40, 5_000) {
            let ev = parse(&e.value).unwrap();
            assert_eq!(e.key, ev.involved_object_name());
            assert!(!e.key.is_empty());
            assert_eq!(e.namespace, ev.namespace());
        }
    }

    #[test]
    fn envelopes_average_about_one_kib() {
        for (seed, namespaces) in [(1, 30), (2, 30), (3, 30), (4, 1), (5, 200)] {
            let sample = events(seed, namespaces, 10_000);
            let (mut added, mut updated) = (Vec::new(), Vec::new());
            for e in &sample {
                if e.value.starts_with(br#"{"verb":"UPDATED""#) {
                    updated.push(e.value.len());
                } else {
                    added.push(e.value.len());
                }
            }
            let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len() as f64;
            let all: Vec<usize> = sample.iter().map(|e| e.value.len()).collect();
            let avg = mean(&all);
            assert!(
                (900.0..=1200.0).contains(&avg),
                "seed {seed}: average {avg:.0} bytes"
            );
            let long = all.iter().filter(|&&n| n > 2_000).count();
            assert!(
                (50..=800).contains(&long),
                "seed {seed}: {long} envelopes over 2 KB"
            );
            let added_max = *added.iter().max().unwrap();
            assert!(
                (2_500..=3_200).contains(&added_max),
                "seed {seed}: largest ADDED {added_max}"
            );
            assert!(*all.iter().max().unwrap() <= 3_600, "seed {seed}");
            assert!(
                mean(&updated) > 1.6 * mean(&added),
                "UPDATED carry the event twice"
            );
            assert!(*all.iter().min().unwrap() >= 450, "seed {seed}");
        }
    }

    #[test]
    fn namespaces_are_skewed_but_all_covered() {
        for namespaces in [1, 4, 10, 30, 50] {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            let generator = EventGenerator::new(namespaces as u64, namespaces);
            let names = generator.namespaces().to_vec();
            for e in generator.take(10_000) {
                *counts.entry(e.namespace).or_default() += 1;
            }
            assert_eq!(
                counts.len(),
                namespaces,
                "every namespace appears: {counts:?}"
            );
            let hottest = counts[&names[0]];
            let coldest = *counts.values().min().unwrap();
            if namespaces > 1 {
                assert!(
                    hottest > 3 * coldest,
                    "{namespaces}: {hottest} vs {coldest}"
                );
                assert_eq!(
                    counts.values().max(),
                    Some(&hottest),
                    "the first is the hottest"
                );
            }
            if namespaces == 50 {
                let top3: usize = names[..3].iter().map(|n| counts[n]).sum();
                assert!(top3 > 3_500, "a few hot namespaces: top 3 have {top3}");
                assert!(coldest >= 15, "the tail still shows up: {coldest}");
            }
        }
    }

    #[test]
    fn namespace_names_look_real_then_numbered() {
        assert_eq!(EventGenerator::new(0, 1).namespaces(), ["payments"]);
        let names = EventGenerator::new(0, 130).namespaces().to_vec();
        assert_eq!(
            names[..4],
            ["payments", "checkout", "kube-system", "default"]
        );
        assert_eq!(names[29], "staging");
        assert_eq!(names[30], "team-01");
        assert_eq!(names[34], "team-05");
        assert_eq!(names[129], "team-100");
        assert_eq!(names.iter().collect::<BTreeSet<_>>().len(), 130, "distinct");
        for name in &names {
            // Legal Kafka topic names and DNS labels.
            assert!(name.len() <= 63 && !name.starts_with('-'), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "at least one namespace")]
    fn zero_namespaces_is_refused() {
        EventGenerator::new(0, 0);
    }

    #[test]
    fn updated_events_carry_the_previous_version() {
        let sample = events(21, 30, 10_000);
        let mut updated = 0;
        for e in &sample {
            let new = parse(&e.value).unwrap();
            let value: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
            let old = old_event(&value);
            match new.verb {
                Verb::Added => assert!(old.is_none(), "ADDED has no old_event"),
                Verb::Updated => {
                    updated += 1;
                    let old = old.expect("UPDATED has old_event");
                    assert!(
                        old.count >= 1 && old.count < new.count,
                        "{} -> {}",
                        old.count,
                        new.count
                    );
                    assert!(old.last_timestamp() < new.last_timestamp());
                    assert_eq!(old.first_timestamp(), new.first_timestamp());
                    assert_eq!(
                        (&old.name(), &old.namespace(), &old.uid()),
                        (&new.name(), &new.namespace(), &new.uid()),
                        "the same Event object"
                    );
                    assert_eq!(old.involved_object(), new.involved_object());
                    assert_eq!(
                        (&old.reason(), &old.message()),
                        (&new.reason(), &new.message())
                    );
                    assert!(
                        resource_version(&value["old_event"]) < resource_version(&value["event"])
                    );
                    assert!(new.event_time().is_none());
                }
            }
        }
        assert!(
            (800..=1_200).contains(&updated),
            "about 10% UPDATED: {updated}"
        );
    }

    #[test]
    fn timestamps_move_forward() {
        let mut previous = String::new();
        let mut moments = 0;
        for e in events(3, 30, 20_000) {
            let ev = parse(&e.value).unwrap();
            let value: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
            let created = value["event"]["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap();
            assert!(is_time(created));
            let now = match (&ev.event_time(), &ev.last_timestamp()) {
                (Some(t), _) => format!("{}Z", &t[..19]),
                (None, Some(t)) => (*t).to_owned(),
                (None, None) => panic!("no timestamp"),
            };
            assert!(created <= now.as_str(), "created {created} after {now}");
            assert!(previous <= now, "{previous} then {now}");
            if previous != now {
                moments += 1;
            }
            previous = now;
        }
        assert!(previous.starts_with("2026-11-20T0"), "{previous}");
        assert!(moments > 100, "the clock advances: {moments}");
    }

    #[test]
    fn the_mix_covers_the_expected_events() {
        let sample = events(5, 30, 20_000);
        let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
        let (mut escaped_html, mut quotes, mut unicode, mut counted_warnings) = (0, 0, 0, 0);
        for e in &sample {
            let ev = parse(&e.value).unwrap();
            *seen
                .entry((ev.involved_object().kind.clone(), ev.reason().to_owned()))
                .or_default() += 1;
            let text = std::str::from_utf8(&e.value).unwrap();
            escaped_html += usize::from(text.contains(r"\u003c") && text.contains(r"\u0026"));
            quotes += usize::from(ev.message().contains('"'));
            unicode += usize::from(!ev.message().is_ascii());
            if matches!(ev.reason(), "BackOff" | "Unhealthy") {
                assert_eq!(ev.event_type(), "Warning");
                counted_warnings += usize::from(ev.count > 1);
            }
            if ev.reason() == "Pulling" {
                assert!(
                    ev.message().starts_with("Pulling image \"") && ev.message().contains(':'),
                    "{}",
                    ev.message()
                );
            }
            if ev.involved_object().kind == "Pod" {
                let parts: Vec<&str> = ev.involved_object_name().rsplitn(2, '-').collect();
                let last = parts[0];
                let safe = |s: &str| s.bytes().all(|b| SAFE_ALPHABET.contains(&b));
                assert!(
                    (last.len() == 5 && safe(last)) || last.parse::<u32>().is_ok(),
                    "pod name {}",
                    ev.involved_object_name()
                );
            }
            if ev.source_component() == "kubelet" {
                let host = ev.source_host().as_bytes();
                assert!(
                    host.starts_with(b"node-") && host.len() == 8,
                    "{}",
                    ev.source_host()
                );
            }
        }
        for (kind, reason) in [
            ("Pod", "Scheduled"),
            ("Pod", "Pulling"),
            ("Pod", "Pulled"),
            ("Pod", "Created"),
            ("Pod", "Started"),
            ("Pod", "Killing"),
            ("Pod", "BackOff"),
            ("Pod", "Unhealthy"),
            ("Pod", "FailedScheduling"),
            ("Pod", "FailedMount"),
            ("Pod", "FailedCreatePodSandBox"),
            ("Deployment", "ScalingReplicaSet"),
            ("ReplicaSet", "SuccessfulCreate"),
            ("StatefulSet", "SuccessfulCreate"),
            ("DaemonSet", "SuccessfulCreate"),
            ("Job", "SuccessfulCreate"),
            ("CronJob", "SuccessfulCreate"),
            ("HorizontalPodAutoscaler", "SuccessfulRescale"),
            ("HorizontalPodAutoscaler", "FailedGetResourceMetric"),
            ("Job", "Completed"),
            ("CronJob", "SawCompletedJob"),
            ("PersistentVolumeClaim", "ProvisioningSucceeded"),
            ("Node", "NodeNotReady"),
            ("Node", "NodeReady"),
            ("Node", "RegisteredNode"),
            ("Node", "Rebooted"),
            ("PersistentVolume", "VolumeFailedDelete"),
        ] {
            assert!(
                seen.contains_key(&(kind.into(), reason.into())),
                "no {kind} {reason}: {seen:?}"
            );
        }
        let pod_share = seen
            .iter()
            .filter(|((k, _), _)| k == "Pod")
            .map(|(_, n)| n)
            .sum::<usize>();
        assert!(pod_share > 12_000, "pod lifecycle dominates: {pod_share}");
        assert!(escaped_html > 200, "{escaped_html}");
        assert!(quotes > 2_000, "{quotes}");
        assert!(unicode > 100, "{unicode}");
        assert!(counted_warnings > 1_000, "{counted_warnings}");
    }

    fn escaped(s: &str) -> String {
        let mut buf = Vec::new();
        write_json_str(&mut buf, s);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn escaper_writes_what_go_writes() {
        let cases = [
            ("", r#""""#),
            ("plain text", r#""plain text""#),
            (r#"say "hi""#, r#""say \"hi\"""#),
            (r"C:\path\n", r#""C:\\path\\n""#),
            ("a\nb\rc\td", r#""a\nb\rc\td""#),
            ("\u{0}\u{1}\u{1f}", r#""\u0000\u0001\u001f""#),
            ("\u{8}\u{c}", r#""\u0008\u000c""#),
            (
                "<a href=\"x\">&amp;</a>",
                r#""\u003ca href=\"x\"\u003e\u0026amp;\u003c/a\u003e""#,
            ),
            ("\u{7f}", "\"\u{7f}\""),
            ("é 日本語 😀 Größe", "\"é 日本語 😀 Größe\""),
            (
                "line\u{2028}para\u{2029}end",
                r#""line\u2028para\u2029end""#,
            ),
            ("\u{2027}\u{202a}", "\"\u{2027}\u{202a}\""),
            ("{\"json\":[1,2]}", r#""{\"json\":[1,2]}""#),
        ];
        for (input, expected) in cases {
            assert_eq!(escaped(input), expected, "{input:?}");
        }
        // Every ASCII character and some non-ASCII round-trip through a JSON parser.
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é日😀\u{2028}\u{fffd}");
        let back: String = serde_json::from_str(&escaped(&all)).unwrap();
        assert_eq!(back, all);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let time = |secs| {
            let mut buf = Vec::new();
            write_time(&mut buf, secs);
            String::from_utf8(buf).unwrap()
        };
        let micro = |us| {
            let mut buf = Vec::new();
            write_micro_time(&mut buf, us);
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(time(None), "null");
        assert_eq!(time(Some(0)), r#""1970-01-01T00:00:00Z""#);
        assert_eq!(time(Some(START_UNIX_SECS)), r#""2026-11-20T08:00:00Z""#);
        assert_eq!(time(Some(1_795_162_502)), r#""2026-11-20T08:15:02Z""#);
        assert_eq!(time(Some(1_798_761_599)), r#""2026-12-31T23:59:59Z""#);
        assert_eq!(time(Some(1_835_440_496)), r#""2028-02-29T12:34:56Z""#);
        assert_eq!(time(Some(4_107_542_400)), r#""2100-03-01T00:00:00Z""#);
        assert_eq!(micro(None), "null");
        assert_eq!(
            micro(Some(1_795_162_502_417_391)),
            r#""2026-11-20T08:15:02.417391Z""#
        );
        assert_eq!(
            micro(Some(1_795_162_502_000_007)),
            r#""2026-11-20T08:15:02.000007Z""#
        );
    }

    #[test]
    fn small_formatters() {
        let dur = |ms| {
            let mut s = String::new();
            push_go_duration_ms(&mut s, ms);
            s
        };
        assert_eq!(dur(0), "0ms");
        assert_eq!(dur(812), "812ms");
        assert_eq!(dur(1_000), "1s");
        assert_eq!(dur(1_874), "1.874s");
        assert_eq!(dur(12_500), "12.5s");
        assert_eq!(dur(20_030), "20.03s");

        let mut s = String::new();
        push_uuid_str(&mut s, 0, 0);
        assert_eq!(s, "00000000-0000-4000-8000-000000000000");
        s.clear();
        push_uuid_str(&mut s, u64::MAX, u64::MAX);
        assert_eq!(s, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert!(is_uuid(&s));

        let mut buf = Vec::new();
        push_u64(&mut buf, 0);
        buf.push(b' ');
        push_u64(&mut buf, 18_446_744_073_709_551_615);
        buf.push(b' ');
        push_hex(&mut buf, 0x18ea_9728_58fb_5f98);
        buf.push(b' ');
        push_padded(&mut buf, 7, 6);
        assert_eq!(buf, b"0 18446744073709551615 18ea972858fb5f98 000007");
    }

    #[test]
    fn splitmix64_matches_the_reference() {
        // First outputs of Vigna's splitmix64.c seeded with 1234567.
        let mut rng = SplitMix64(1_234_567);
        let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423
            ]
        );
        let mut rng = SplitMix64(9);
        for n in [1, 2, 3, 27, 1_000] {
            for _ in 0..1_000 {
                assert!(rng.below(n) < n);
            }
        }
    }
}
