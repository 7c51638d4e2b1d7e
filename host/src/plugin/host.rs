//! What a plugin instance can reach: its own `log` import, a WASI context that grants nothing,
//! stdout/stderr that go to the host's log, and a memory limiter that remembers when it refused.
//!
//! One [`HostState`] lives in each wasmtime `Store`, so it is per plugin and per routing thread.

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::fanout::router::types;
use crate::bindings::{LogLevel, ObjectReference, RouterImports, SourceRecord, Verb};
use crate::event::SharedEvent;

/// Longest single log line kept from a plugin; longer lines are cut.
const MAX_LOG_LINE: usize = 4096;

/// The data of one plugin instance's store.
pub struct HostState {
    wasi: WasiCtx,
    /// WASI's resources and the `event` handle of the call in progress.
    pub(super) table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    log: LogBudget,
}

impl HostState {
    pub fn new(plugin: Arc<str>, memory_bytes: usize, log_lines_per_call: u32) -> Self {
        let log = LogBudget::new(plugin, log_lines_per_call);
        // WasiCtxBuilder::new() inherits nothing: no preopened directories, no environment, no
        // arguments, no network. Only stdout and stderr are wired, to our log.
        let wasi = WasiCtxBuilder::new()
            .stdout(PluginOutput {
                log: log.clone(),
                stream: "stdout",
            })
            .stderr(PluginOutput {
                log: log.clone(),
                stream: "stderr",
            })
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max_bytes: memory_bytes,
                refused: false,
            },
            log,
        }
    }

    /// Resets the per-call log budget; called before each `route` or `init`.
    pub fn start_call(&mut self) {
        self.log.reset();
        self.limiter.refused = false;
    }

    /// The memory cap, in bytes.
    pub fn memory_limit(&self) -> usize {
        self.limiter.max_bytes
    }

    /// Whether the memory limiter refused growth during the current call.
    pub fn memory_refused(&self) -> bool {
        self.limiter.refused
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl RouterImports for HostState {
    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        self.log.emit(Some(level), "log", message.as_bytes());
        Ok(())
    }
}

impl types::Host for HostState {}

/// The `event` handle: each method copies one field of the host's event into the plugin.
impl types::HostEvent for HostState {
    fn verb(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<Verb> {
        Ok(self.table.get(&ev)?.verb)
    }

    fn name(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.name.clone())
    }

    fn namespace(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.namespace.clone())
    }

    fn uid(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.uid.clone())
    }

    fn involved_object(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<ObjectReference> {
        Ok(self.table.get(&ev)?.involved_object.clone())
    }

    fn reason(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.reason.clone())
    }

    fn message(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.message.clone())
    }

    fn event_type(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.event_type.clone())
    }

    fn count(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<i32> {
        Ok(self.table.get(&ev)?.count)
    }

    fn source_component(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.source_component.clone())
    }

    fn source_host(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.source_host.clone())
    }

    fn reporting_controller(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.reporting_controller.clone())
    }

    fn first_timestamp(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&ev)?.first_timestamp.clone())
    }

    fn last_timestamp(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&ev)?.last_timestamp.clone())
    }

    fn event_time(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&ev)?.event_time.clone())
    }

    fn raw(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&ev)?.raw.clone())
    }

    fn raw_len(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<u32> {
        Ok(u32::try_from(self.table.get(&ev)?.raw.len()).unwrap_or(u32::MAX))
    }

    fn source(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<SourceRecord> {
        Ok(self.table.get(&ev)?.source.clone())
    }

    fn source_key(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.table.get(&ev)?.source.key.clone())
    }

    fn drop(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<()> {
        // Plugins only ever borrow an event; the host owns and deletes it after each call.
        debug_assert!(
            ev.owned(),
            "a borrowed handle is never dropped by the guest"
        );
        Ok(())
    }
}

/// Caps linear memory and tables, and remembers a refusal so a resulting trap can be reported
/// as "memory limit exceeded" rather than as whatever the guest's allocator did next.
pub struct MemoryLimiter {
    max_bytes: usize,
    refused: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.max_bytes;
        self.refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Function tables of real plugins hold a few thousand entries at most.
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        // A Rust component instantiates a handful of core instances (main module, adapters).
        64
    }

    fn memories(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        64
    }
}

/// Shared by the `log` import and both output streams of one instance: counts lines per call and
/// turns them into `tracing` events tagged with the plugin's name.
#[derive(Clone)]
struct LogBudget {
    inner: Arc<std::sync::Mutex<BudgetState>>,
}

struct BudgetState {
    plugin: Arc<str>,
    per_call: u32,
    used: u32,
    dropped: u32,
    partial: Vec<u8>,
}

impl LogBudget {
    fn new(plugin: Arc<str>, per_call: u32) -> Self {
        Self {
            inner: Arc::new(std::sync::Mutex::new(BudgetState {
                plugin,
                per_call,
                used: 0,
                dropped: 0,
                partial: Vec::new(),
            })),
        }
    }

    fn reset(&self) {
        let mut state = self.lock();
        if state.dropped > 0 {
            tracing::warn!(
                plugin = %state.plugin,
                dropped = state.dropped,
                "plugin log lines dropped: more than {} in one call",
                state.per_call
            );
        }
        state.used = 0;
        state.dropped = 0;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        // The lock is only ever taken by the thread that owns the store; poisoning can only
        // follow a panic in `tracing`, after which logging on is still the right thing to do.
        crate::lock(&self.inner)
    }

    /// Logs one message. `level` is `None` for output streams, whose text is logged at info.
    fn emit(&self, level: Option<LogLevel>, stream: &'static str, bytes: &[u8]) {
        let mut state = self.lock();
        if state.used >= state.per_call {
            state.dropped += 1;
            return;
        }
        state.used += 1;
        let cut = &bytes[..bytes.len().min(MAX_LOG_LINE)];
        let text = String::from_utf8_lossy(cut);
        let text = text.trim_end();
        let plugin = &*state.plugin;
        match level.unwrap_or(LogLevel::Info) {
            LogLevel::Trace => tracing::trace!(plugin, stream, "{text}"),
            LogLevel::Debug => tracing::debug!(plugin, stream, "{text}"),
            LogLevel::Info => tracing::info!(plugin, stream, "{text}"),
            LogLevel::Warn => tracing::warn!(plugin, stream, "{text}"),
            LogLevel::Error => tracing::error!(plugin, stream, "{text}"),
        }
    }

    /// Splits written bytes into lines; a partial line waits for its end (up to the line cap).
    fn write(&self, stream: &'static str, bytes: &[u8]) {
        let mut pending = std::mem::take(&mut self.lock().partial);
        pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
            self.emit(None, stream, &pending[start..start + pos]);
            start += pos + 1;
        }
        let rest = &pending[start..];
        if rest.len() >= MAX_LOG_LINE {
            self.emit(None, stream, rest);
        } else {
            self.lock().partial = rest.to_vec();
        }
    }
}

/// A plugin's stdout or stderr: every line becomes a log event tagged with the plugin's name.
struct PluginOutput {
    log: LogBudget,
    stream: &'static str,
}

impl IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(PluginOutput {
            log: self.log.clone(),
            stream: self.stream,
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(PluginOutput {
            log: self.log.clone(),
            stream: self.stream,
        })
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for PluginOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for PluginOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.log.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for PluginOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.log.write(self.stream, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
