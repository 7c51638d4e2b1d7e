//! Command-line interface: flags are parsed here into the typed settings the rest of the host
//! takes. This is the only place that knows about flags and environment variables.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::bindings;
use crate::plugin::{
    CacheOutcome, CompileCache, Plugin, PluginEngine, PluginSet, PluginSource, RuntimeLimits,
};
use crate::policy::OutputPolicy;

#[derive(Debug, Parser)]
#[command(
    name = "fanout",
    version,
    about = "Route Kubernetes events between Kafka topics with WebAssembly plugins"
)]
pub struct Cli {
    /// Log filter, e.g. `info` or `fanout=debug` (tracing EnvFilter syntax).
    #[arg(long, global = true, env = "FANOUT_LOG", default_value = "info")]
    pub log_level: String,

    /// Log format: `text` for people, `json` (one object per line) for log collectors, or
    /// `auto`: text on a terminal, JSON otherwise (as in a container).
    #[arg(long, global = true, env = "FANOUT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Dry run: route EventRouter envelopes from a file through plugins, without Kafka.
    ///
    /// Prints one JSON object per input line: {"line":N,"destinations":[...],"dead_letter":...}.
    Route(RouteArgs),
    /// Validate a plugin and print its exports, imports, size and compile time.
    Check(CheckArgs),
    /// Run the service: consume EventRouter envelopes from Kafka and route them.
    Run(RunArgs),
    /// Run the real pipeline on an embedded Kafka, with generated events and live counts.
    Demo(DemoArgs),
    /// Create a new plugin project that builds, tests and routes out of the box.
    New(NewArgs),
    /// Run the embedded Kafka (librdkafka's mock cluster) on its own, for local development and
    /// tests: fanout processes can then be killed and restarted against the same broker.
    MockBroker(MockBrokerArgs),
    /// Work with config files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `fanout run`. Every flag overrides the environment and the config file; see `config`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML config file [env: FANOUT_CONFIG].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers [env: FANOUT_BOOTSTRAP_SERVERS, or the old tool's ENDPOINT].
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// The topic EventRouter writes to [env: FANOUT_SOURCE_TOPIC or TOPIC; default cluster-events].
    #[arg(long)]
    pub source_topic: Option<String>,
    /// Consumer group [env: FANOUT_GROUP_ID; default fanout].
    #[arg(long)]
    pub group_id: Option<String>,
    /// Dead-letter topic [env: FANOUT_DEAD_LETTER_TOPIC; default fanout-dead-letter].
    #[arg(long)]
    pub dead_letter_topic: Option<String>,
    /// Plugin directory [env: FANOUT_PLUGINS; default /etc/fanout/plugins].
    #[arg(long)]
    pub plugins: Option<PathBuf>,
    /// Compile cache directory [env: FANOUT_CACHE_DIR].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Routing threads [env: FANOUT_WORKERS; default: one per core].
    #[arg(long)]
    pub workers: Option<u32>,
    #[arg(long)]
    pub memory_limit_mib: Option<u32>,
    #[arg(long)]
    pub deadline_ms: Option<u64>,
    #[arg(long)]
    pub max_destinations: Option<u32>,
    #[arg(long)]
    pub max_record_bytes: Option<u64>,
    /// A librdkafka property for both clients, KEY=VALUE; repeatable.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    pub kafka_properties: Vec<String>,
    /// Address of /metrics, /healthz, /readyz and /status, or `none` [env: FANOUT_HTTP_LISTEN;
    /// default 0.0.0.0:9090].
    #[arg(long)]
    pub http_listen: Option<String>,
    /// `at-least-once` or `exactly-once` (Kafka transactions) [env: FANOUT_DELIVERY; default
    /// at-least-once].
    #[arg(long)]
    pub delivery: Option<String>,
    /// Exactly-once: this replica's transactional id, unique per replica and stable across its
    /// restarts [env: FANOUT_TRANSACTIONAL_ID; default <group id>-<host name>].
    #[arg(long)]
    pub transactional_id: Option<String>,
    /// Route with the built-in by-namespace function instead of plugins, as the old tool did:
    /// no plugin directory, no hot reload. The baseline of `cargo bench --bench pipeline`.
    #[arg(long, conflicts_with = "plugins")]
    pub builtin_router: bool,
}

/// `fanout config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file (with this environment) and print the effective config, with
    /// secrets redacted. Exits 2 if it is invalid.
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// The TOML config file.
    pub file: PathBuf,
}

/// `fanout new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name: a crate name, `[a-z][a-z0-9_-]*`.
    pub name: String,
    /// The language of the project. Rust is the one with an SDK; for Python, see
    /// plugins/python-warnings in the fanout repository.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    pub lang: Lang,
    /// Where to create the project directory `<NAME>`.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The fanout-sdk crate to depend on [default: the guest-sdk of the checkout this fanout
    /// was built from].
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

/// A plugin project's language.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Lang {
    Rust,
}

/// `fanout mock-broker`.
#[derive(Debug, Args)]
#[command(after_long_help = MOCK_BROKER_CONTROL_HELP)]
pub struct MockBrokerArgs {
    /// Brokers in the cluster, on 127.0.0.1 with ports chosen by the system.
    #[arg(long, default_value_t = 1)]
    pub brokers: i32,
    /// A topic to create, NAME:PARTITIONS (the mock has no CreateTopics call); repeatable.
    #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
    pub topics: Vec<String>,
    /// Write the bootstrap servers to this file once the cluster is up (written to a temporary
    /// name and renamed, so a reader never sees half of it).
    #[arg(long)]
    pub port_file: Option<PathBuf>,
    /// Take fault-injection commands while running: `stdin` reads one command per line from
    /// standard input and answers each on standard output (the commands are listed in --help).
    /// The end of standard input then stops the cluster.
    #[arg(long, value_enum)]
    pub control: Option<MockBrokerControl>,
}

/// Where `fanout mock-broker` takes fault-injection commands from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MockBrokerControl {
    Stdin,
}

const MOCK_BROKER_CONTROL_HELP: &str = "\
Fault control (--control stdin): one command per line on standard input, one answer per line on
standard output, `ok <what was done>` or `error <what is wrong>`. Empty lines and lines starting
with `#` get no answer. The end of standard input stops the cluster, so it never outlives the
process driving it. Broker ids run from 1 to --brokers; `all` means every broker.

  broker-down ID|all                 close the broker's connections and refuse new ones; its
                                     partitions keep it as their leader (no failover), so their
                                     clients wait for it, as for a crashed broker
  broker-up ID|all                   accept connections again, on the same port
  request-errors API COUNT ERROR     fail the next COUNT requests of API, from any client, with
                                     ERROR, without executing them; e.g.
                                       request-errors Produce 5 NOT_LEADER_FOR_PARTITION
                                       request-errors OffsetCommit 3 COORDINATOR_NOT_AVAILABLE
                                     ERROR is a Kafka error name as librdkafka spells it (or its
                                     number); _TRANSPORT closes the connection instead
  clear-request-errors API           drop the errors still queued for API
  create-topic NAME PARTITIONS       create a topic (the mock has no CreateTopics request)
  stop                               stop the cluster and exit 0
  help                               list the commands, the APIs and a few errors

APIs: Produce, Fetch, ListOffsets, Metadata, OffsetCommit, OffsetFetch, FindCoordinator,
JoinGroup, Heartbeat, LeaveGroup, SyncGroup, ApiVersion, InitProducerId, OffsetForLeaderEpoch,
AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit.";

/// `fanout demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Plugin directory or .wasm file to route with.
    #[arg(long)]
    pub plugins: PathBuf,
    /// Events to produce (the repo's fixtures first, then generated ones).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Events per second to produce; 0 is as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Partitions of the source topic.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..=256))]
    pub partitions: i32,
    /// Namespaces the generated events spread over.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub namespaces: u64,
    /// Routing threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub workers: u64,
    /// Keep running (and the embedded Kafka up) after every event is routed, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// Also run the same pipeline with a native Rust by-namespace function, and print the ratio.
    #[arg(long)]
    pub compare_native: bool,
}

#[derive(Debug, Args)]
pub struct RouteArgs {
    /// A plugin directory (every *.wasm, each with optional X.json config) or one .wasm file.
    #[arg(long, env = "FANOUT_PLUGINS")]
    pub plugins: PathBuf,
    /// Config (JSON) for a single plugin file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// EventRouter envelopes, one per line; `-` reads standard input.
    #[arg(long, default_value = "-")]
    pub input: PathBuf,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The plugin file.
    pub wasm: PathBuf,
    /// Config (JSON) to pass to the plugin's `init`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Limits and caching for the plugin runtime.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Linear memory one plugin instance may use, in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub memory_limit_mib: u32,
    /// Deadline of one plugin call, in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub deadline_ms: u64,
    /// Most destinations one event may have.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_destinations: u32,
    /// Largest record (key + value + headers) a destination may produce, in bytes.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub max_record_bytes: u64,
    /// The service's source topic, which no plugin may write to (as `fanout run` refuses it).
    #[arg(long, env = crate::config::ENV_SOURCE_TOPIC, default_value = crate::config::DEFAULT_SOURCE_TOPIC)]
    pub source_topic: String,
    /// The service's dead-letter topic, which no plugin may write to (as `fanout run` refuses it).
    #[arg(long, env = crate::config::ENV_DEAD_LETTER_TOPIC, default_value = crate::config::DEFAULT_DEAD_LETTER_TOPIC)]
    pub dead_letter_topic: String,
    /// Where precompiled plugins are cached [default: $XDG_CACHE_HOME/fanout or ~/.cache/fanout].
    #[arg(long, env = "FANOUT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every plugin from scratch; read and write no cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl RuntimeArgs {
    fn limits(&self) -> RuntimeLimits {
        RuntimeLimits {
            memory_bytes: (self.memory_limit_mib as usize) << 20,
            call_deadline: Duration::from_millis(self.deadline_ms),
            output: OutputPolicy {
                max_destinations: self.max_destinations as usize,
                max_record_bytes: self.max_record_bytes as usize,
                // The service's own reservations (`Config::runtime_limits`), so that the dry run
                // refuses what `fanout run` would.
                reserved_topics: crate::policy::service_reservations(
                    &self.source_topic,
                    &self.dead_letter_topic,
                ),
                ..OutputPolicy::default()
            },
            ..RuntimeLimits::default()
        }
    }

    fn cache(&self) -> anyhow::Result<Option<CompileCache>> {
        if self.no_cache {
            return Ok(None);
        }
        CompileCache::configured(self.cache_dir.as_deref())
    }

    pub fn engine(&self) -> anyhow::Result<PluginEngine> {
        PluginEngine::new(self.limits(), self.cache()?)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

/// Installs the log subscriber, on standard error.
pub fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level).unwrap_or_else(|e| {
        eprintln!(
            "warning: invalid log filter {:?} ({e}); using `info`",
            cli.log_level
        );
        tracing_subscriber::EnvFilter::new("info")
    });
    use std::io::IsTerminal as _;
    let terminal = std::io::stderr().is_terminal();
    let json = match cli.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !terminal,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.with_ansi(terminal).init();
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Route(args) => route(args),
        Command::Check(args) => check(args),
        Command::Run(args) => run_service(args),
        Command::Demo(args) => demo(args),
        Command::MockBroker(args) => mock_broker(args),
        Command::New(args) => new_plugin(args),
        Command::Config(ConfigCommand::Check(args)) => config_check(args),
    }
}

fn new_plugin(args: NewArgs) -> anyhow::Result<ExitCode> {
    let Lang::Rust = args.lang;
    if let Err(e) = crate::scaffold::check_name(&args.name) {
        eprintln!("error: invalid plugin name: {e}");
        return Ok(ExitCode::from(2));
    }
    let sdk = args
        .sdk
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk"));
    let dir = crate::scaffold::create(&crate::scaffold::NewPlugin {
        name: args.name.clone(),
        parent: args.dir,
        sdk,
        fanout: std::env::current_exe().context("finding this fanout binary")?,
    })?;
    println!("created {}", dir.display());
    println!("  cd {} && cargo test", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn mock_broker(args: MockBrokerArgs) -> anyhow::Result<ExitCode> {
    let mut topics = Vec::new();
    for spec in &args.topics {
        let parsed = spec
            .rsplit_once(':')
            .and_then(|(name, n)| Some((name, n.parse::<i32>().ok().filter(|n| *n > 0)?)));
        let Some((name, partitions)) = parsed else {
            eprintln!("error: --topic {spec}: expected NAME:PARTITIONS, e.g. cluster-events:8");
            return Ok(ExitCode::from(2));
        };
        if let Err(e) = crate::topic_name::check_topic_name(name) {
            eprintln!("error: --topic {spec}: {e}");
            return Ok(ExitCode::from(2));
        }
        topics.push((name.to_owned(), partitions));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    crate::signals::install(stop.clone())?;
    let kafka = crate::demo::EmbeddedKafka::start(args.brokers)?;
    for (name, partitions) in &topics {
        kafka.create_topic(name, *partitions)?;
    }
    let bootstrap = kafka.bootstrap_servers();
    if let Some(path) = &args.port_file {
        let partial = path.with_extension("partial");
        std::fs::write(&partial, format!("{bootstrap}\n"))
            .and_then(|()| std::fs::rename(&partial, path))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("mock Kafka cluster ({} brokers): {bootstrap}", args.brokers);
    // The cluster handle is not Send: commands are read on a thread of their own and carried
    // out here, on the thread that owns it.
    let commands = match args.control {
        Some(MockBrokerControl::Stdin) => Some(read_control_lines()?),
        None => None,
    };
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Some(commands) = &commands else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let line = match commands.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => line,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break, // end of input
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let answer = mock_broker_command(&kafka, line);
        let stopping = answer == MockBrokerAnswer::Stop;
        {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{answer}")
                .and_then(|()| stdout.flush())
                .context("answering a control command")?;
        }
        if stopping {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Standard input, line by line, on a thread of its own. Bytes that are not UTF-8 are replaced
/// (and the command then refused), never fatal. The channel closes at the end of input.
fn read_control_lines() -> anyhow::Result<std::sync::mpsc::Receiver<String>> {
    let (lines, commands) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("mock-broker-control".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut line = Vec::new();
            loop {
                line.clear();
                match stdin.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if lines
                            .send(String::from_utf8_lossy(&line).into_owned())
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        })
        .context("starting the control reader")?;
    Ok(commands)
}

/// The one-line answer to a control command.
#[derive(Debug, PartialEq, Eq)]
enum MockBrokerAnswer {
    Done(String),
    Refused(String),
    Stop,
}

impl std::fmt::Display for MockBrokerAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Done(what) => write!(f, "ok {what}"),
            // One line, whatever the error said.
            Self::Refused(why) => write!(f, "error {}", why.replace('\n', " ")),
            Self::Stop => f.write_str("ok stopping"),
        }
    }
}

/// Carries out one control command (see `MOCK_BROKER_CONTROL_HELP`).
fn mock_broker_command(kafka: &crate::demo::EmbeddedKafka, line: &str) -> MockBrokerAnswer {
    let words: Vec<&str> = line.split_whitespace().collect();
    let result = match words.as_slice() {
        ["broker-down", id] => parse_broker(id).and_then(|id| {
            kafka
                .broker_down(id)
                .map(|()| format!("{} down", broker_label(id)))
                .map_err(|e| format!("{e:#}"))
        }),
        ["broker-up", id] => parse_broker(id).and_then(|id| {
            kafka
                .broker_up(id)
                .map(|()| format!("{} up", broker_label(id)))
                .map_err(|e| format!("{e:#}"))
        }),
        ["request-errors", api, count, error] => inject_request_errors(kafka, api, count, error),
        ["clear-request-errors", api] => parse_api(api).map(|api| {
            kafka.clear_request_errors(api);
            format!("no more injected {api:?} errors")
        }),
        ["create-topic", name, partitions] => create_topic_command(kafka, name, partitions),
        ["stop"] => return MockBrokerAnswer::Stop,
        ["help"] => Ok(format!(
            "commands: broker-down ID|all, broker-up ID|all, request-errors API COUNT ERROR, \
             clear-request-errors API, create-topic NAME PARTITIONS, stop, help; brokers 1 to \
             {}; APIs: {}; errors e.g. NOT_LEADER_FOR_PARTITION, REQUEST_TIMED_OUT, \
             COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, _TRANSPORT",
            kafka.broker_count(),
            crate::demo::EmbeddedKafka::api_names().join(", ")
        )),
        [command, ..] if MOCK_BROKER_COMMANDS.contains(command) => Err(format!(
            "wrong arguments for {command} in {line:?}; see help"
        )),
        _ => Err(format!("unknown command {line:?}; see help")),
    };
    match result {
        Ok(what) => MockBrokerAnswer::Done(what),
        Err(why) => MockBrokerAnswer::Refused(why),
    }
}

const MOCK_BROKER_COMMANDS: &[&str] = &[
    "broker-down",
    "broker-up",
    "request-errors",
    "clear-request-errors",
    "create-topic",
    "stop",
    "help",
];

/// A broker id, or `all` (`None`).
fn parse_broker(word: &str) -> Result<Option<i32>, String> {
    match word {
        "all" => Ok(None),
        id => id
            .parse()
            .map(Some)
            .map_err(|_| format!("broker id {id:?} is not a number or `all`")),
    }
}

fn broker_label(id: Option<i32>) -> String {
    id.map_or("every broker".to_owned(), |id| format!("broker {id}"))
}

fn parse_api(word: &str) -> Result<rdkafka::types::RDKafkaApiKey, String> {
    crate::demo::EmbeddedKafka::api_key(word).ok_or_else(|| {
        format!(
            "unknown API {word:?}; the mock serves {}",
            crate::demo::EmbeddedKafka::api_names().join(", ")
        )
    })
}

/// `request-errors API COUNT ERROR`.
fn inject_request_errors(
    kafka: &crate::demo::EmbeddedKafka,
    api: &str,
    count: &str,
    error: &str,
) -> Result<String, String> {
    let api = parse_api(api)?;
    let count: usize = count
        .parse()
        .ok()
        .filter(|n| (1..=100_000).contains(n))
        .ok_or_else(|| format!("COUNT {count:?} is not a number from 1 to 100000"))?;
    let code = crate::demo::EmbeddedKafka::error_code(error).ok_or_else(|| {
        format!(
            "unknown error {error:?}; use librdkafka's name without RD_KAFKA_RESP_ERR_, e.g. \
             NOT_LEADER_FOR_PARTITION, or its number"
        )
    })?;
    kafka.request_errors(api, count, code);
    Ok(format!(
        "the next {count} {api:?} requests fail with {}",
        rdkafka::types::RDKafkaErrorCode::from(code)
    ))
}

/// `create-topic NAME PARTITIONS`.
fn create_topic_command(
    kafka: &crate::demo::EmbeddedKafka,
    name: &str,
    partitions: &str,
) -> Result<String, String> {
    let partitions: i32 = partitions
        .parse()
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| format!("PARTITIONS {partitions:?} is not a number from 1 to 10000"))?;
    crate::topic_name::check_topic_name(name).map_err(|e| format!("topic {name:?}: {e}"))?;
    kafka
        .create_topic(name, partitions)
        .map_err(|e| format!("{e:#}"))?;
    Ok(format!("topic {name} created with {partitions} partitions"))
}

fn run_service(args: RunArgs) -> anyhow::Result<ExitCode> {
    let builtin_router = args.builtin_router;
    let overrides = crate::config::Overrides {
        bootstrap_servers: args.bootstrap_servers,
        source_topic: args.source_topic,
        group_id: args.group_id,
        dead_letter_topic: args.dead_letter_topic,
        plugins: args.plugins,
        cache_dir: args.cache_dir,
        workers: args.workers,
        memory_limit_mib: args.memory_limit_mib,
        deadline_ms: args.deadline_ms,
        max_destinations: args.max_destinations,
        max_record_bytes: args.max_record_bytes,
        kafka_properties: args.kafka_properties,
        http_listen: args.http_listen,
        delivery: args.delivery,
        transactional_id: args.transactional_id,
    };
    let config = match crate::config::load(
        args.config.as_deref(),
        &|k| std::env::var(k).ok(),
        &overrides,
    ) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("error: invalid configuration:\n{errors}");
            return Ok(ExitCode::from(2));
        }
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    crate::signals::install(stop.clone())?;
    let stats = Arc::new(crate::stats::Stats::default());
    let limits = config.runtime_limits();
    // One event runs every plugin, each within its deadline (plus a fresh instance after a
    // trap); far beyond that, a thread is stuck.
    let wedged_after = (limits.call_deadline * 20).max(Duration::from_secs(30));
    let ops = crate::ops::OpsState::new(
        stats.clone(),
        config.redacted(),
        wedged_after,
        config.http_status_token.clone(),
    );
    let _http = config
        .http_listen
        .map(|listen| {
            crate::ops::http::HttpServer::start(
                listen,
                ops.clone(),
                crate::ops::http::HttpLimits::default(),
            )
        })
        .transpose()?;

    let cache = CompileCache::configured(config.cache_dir.as_deref())?;
    let routing = if builtin_router {
        ops.set_routing(crate::ops::RoutingState::Native);
        crate::pipeline::Routing::Native(crate::native::NativeRouter::old_tool(
            limits.output.clone(),
        ))
    } else if !config.plugins_dir.exists()
        && config.plugins_dir == std::path::Path::new(crate::config::DEFAULT_PLUGINS_DIR)
    {
        // A drop-in for the old tool: with only ENDPOINT and TOPIC set, route as it did.
        tracing::warn!(
            "no plugin directory at {}: routing by namespace with the built-in router, \
             exactly as by-namespace.wasm does; mount plugins there to change the routing",
            config.plugins_dir.display()
        );
        ops.set_routing(crate::ops::RoutingState::Native);
        crate::pipeline::Routing::Native(crate::native::NativeRouter::old_tool(
            limits.output.clone(),
        ))
    } else {
        let engine = PluginEngine::new(limits, cache)?;
        let Some(set) = wait_for_initial_set(&engine, &config.plugins_dir, &ops, &stop) else {
            return Ok(ExitCode::SUCCESS); // stopped while waiting
        };
        let live = crate::reload::LiveSet::new(set, config.reload.rollback.clone());
        ops.set_routing(crate::ops::RoutingState::Plugins(live.clone()));
        crate::pipeline::Routing::Plugins {
            engine,
            live,
            latency: Some(ops.latency.clone()),
        }
    };
    // Stopped (dropped) after the pipeline, so a swap can't race the final drain's logging.
    let _reloader = match (&routing, &config.reload.watch) {
        (crate::pipeline::Routing::Plugins { engine, live, .. }, Some(watch)) => {
            Some(crate::reload::Reloader::start(
                engine.clone(),
                config.plugins_dir.clone(),
                live.clone(),
                watch.clone(),
            )?)
        }
        _ => None,
    };
    let settings = crate::pipeline::PipelineSettings::from_config(&config);
    crate::pipeline::run(&settings, &routing, stats, stop)?;
    Ok(ExitCode::SUCCESS)
}

/// Loads the plugins the service starts with, exactly as a reload reads them. Until a set loads
/// there is nothing to route with: the service stays up but not ready (`/readyz` says why), and
/// tries again every second, so a pod whose ConfigMap is broken or still empty recovers by
/// itself once it is fixed. `None` if stopped meanwhile.
fn wait_for_initial_set(
    engine: &PluginEngine,
    path: &std::path::Path,
    ops: &crate::ops::OpsState,
    stop: &std::sync::atomic::AtomicBool,
) -> Option<PluginSet> {
    let mut last_error = None;
    loop {
        match load_initial_set(engine, path) {
            Ok(set) => return Some(set),
            Err(e) => {
                let error = format!("{e:#}");
                if last_error.as_ref() != Some(&error) {
                    tracing::error!("no plugin set to start with, retrying every second: {error}");
                    ops.set_routing(crate::ops::RoutingState::Loading(Some(error.clone())));
                    last_error = Some(error);
                }
            }
        }
        for _ in 0..10 {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Reads and loads the plugins at `path`.
fn load_initial_set(engine: &PluginEngine, path: &std::path::Path) -> anyhow::Result<PluginSet> {
    let snapshot = crate::reload::scan::snapshot(path)
        .with_context(|| format!("reading the plugins at {}", path.display()))?;
    if snapshot.files.is_empty() {
        anyhow::bail!(
            "{}: no plugins (*.wasm, *.wasm.gz or *.wasm.zst)",
            path.display()
        );
    }
    let set = PluginSet::load_files(engine, snapshot.files, None)?;
    tracing::info!(
        version = set.version(),
        plugins = ?set.plugins().iter().map(|p| &*p.name).collect::<Vec<_>>(),
        "plugin set loaded"
    );
    Ok(set)
}

/// `fanout config check`: validates a config as `fanout run` would (with this environment) and
/// prints the effective config with secrets redacted.
fn config_check(args: ConfigCheckArgs) -> anyhow::Result<ExitCode> {
    match crate::config::load(
        Some(&args.file),
        &|k| std::env::var(k).ok(),
        &crate::config::Overrides::default(),
    ) {
        Ok(config) => {
            print!("{}", config.redacted());
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("error: invalid configuration:\n{errors}");
            Ok(ExitCode::from(2))
        }
    }
}

fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let settings = crate::demo::DemoSettings {
        events: args.events,
        rate: args.rate,
        partitions: args.partitions,
        namespaces: args.namespaces as usize,
        workers: args.workers as usize,
        keep_running: args.keep_running,
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    crate::signals::install(stop.clone())?;
    let limits = RuntimeLimits::default();
    let native = if args.compare_native {
        println!("== native Rust by-namespace (the practical limit)");
        let routing = crate::pipeline::Routing::Native(crate::native::NativeRouter::old_tool(
            limits.output.clone(),
        ));
        Some(crate::demo::run(&settings, routing, &stop)?)
    } else {
        None
    };
    let engine = PluginEngine::new(limits, CompileCache::configured(None)?)?;
    let set = PluginSet::load_path(&engine, &args.plugins, None)?;
    println!("== plugins: {}", args.plugins.display());
    let routing = crate::pipeline::Routing::fixed(engine, set);
    let report = crate::demo::run(&settings, routing, &stop)?;
    if let Some(native) = native {
        println!(
            "end to end: plugins {:.0} events/s, native {:.0} events/s, ratio {:.2}",
            report.events_per_second(),
            native.events_per_second(),
            report.events_per_second() / native.events_per_second()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn route(args: RouteArgs) -> anyhow::Result<ExitCode> {
    let engine = args.runtime.engine()?;
    let set = PluginSet::load_path(&engine, &args.plugins, args.config.as_deref())?;
    tracing::info!(
        version = set.version(),
        plugins = ?set.plugins().iter().map(|p| &*p.name).collect::<Vec<_>>(),
        "plugin set loaded"
    );
    let input: Box<dyn BufRead + Send> = if args.input.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(&args.input)
            .with_context(|| format!("opening input {}", args.input.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let summary = crate::dryrun::run(engine, Arc::new(set), input, &mut out)?;
    tracing::info!("{summary}");
    Ok(ExitCode::SUCCESS)
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let engine = args.runtime.engine()?;
    let source = PluginSource::file(&args.wasm, args.config.clone());
    let plugin = Plugin::load(&engine, source)?;
    // Also time a compile that bypasses the cache, so the saving is visible.
    let uncached = {
        let wasm = crate::plugin::PluginFiles::read(&plugin.source)?.wasm;
        let started = Instant::now();
        wasmtime::component::Component::new(engine.engine(), &wasm)?;
        started.elapsed()
    };
    print_check(&plugin, uncached);
    Ok(ExitCode::SUCCESS)
}

fn print_check(plugin: &Plugin, uncached: Duration) {
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!(
        "plugin:    {} ({})",
        plugin.name,
        plugin.source.wasm.display()
    );
    println!(
        "size:      {} bytes, sha256 {}",
        plugin.size,
        crate::plugin::cache::hex(&plugin.sha256)
    );
    println!(
        "world:     fanout:router@{} (this host implements fanout:router@{})",
        plugin.wit_version(),
        bindings::WIT_VERSION
    );
    if crate::plugin::load::wit_older(plugin.wit_version()) {
        println!(
            "warning:   built against an older fanout:router ({}) than this host's ({}); it \
             loads, but rebuild with the current fanout-sdk to use what the newer version adds",
            plugin.wit_version(),
            bindings::WIT_VERSION
        );
    }
    println!("exports:   {}", plugin.exports().join(", "));
    println!("imports:   {}", plugin.imports().join(", "));
    let load = match plugin.timing.cache {
        CacheOutcome::Hit => format!("{} (from the compile cache)", ms(plugin.timing.compile)),
        CacheOutcome::Miss => format!("{} (compiled, now cached)", ms(plugin.timing.compile)),
        CacheOutcome::Disabled => {
            format!("{} (compiled, cache disabled)", ms(plugin.timing.compile))
        }
        CacheOutcome::Reused => format!("{} (reused)", ms(plugin.timing.compile)),
    };
    println!("load:      {load}");
    println!("compile:   {} (Cranelift, without the cache)", ms(uncached));
    println!(
        "init:      ok in {} with config {}",
        ms(plugin.timing.init),
        plugin.config.trim()
    );
}
