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
            limiter: MemoryLimiter::new(memory_bytes),
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
        self.limiter.refused()
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
        Ok(self.table.get(&ev)?.name().to_owned())
    }

    fn namespace(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.namespace().to_owned())
    }

    fn uid(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.uid().to_owned())
    }

    fn involved_object(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<ObjectReference> {
        Ok(self.table.get(&ev)?.involved_object())
    }

    fn reason(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.reason().to_owned())
    }

    fn message(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.message().to_owned())
    }

    fn event_type(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.event_type().to_owned())
    }

    fn count(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<i32> {
        Ok(self.table.get(&ev)?.count)
    }

    fn source_component(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.source_component().to_owned())
    }

    fn source_host(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.source_host().to_owned())
    }

    fn reporting_controller(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<String> {
        Ok(self.table.get(&ev)?.reporting_controller().to_owned())
    }

    fn first_timestamp(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&ev)?.first_timestamp().map(str::to_owned))
    }

    fn last_timestamp(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&ev)?.last_timestamp().map(str::to_owned))
    }

    fn event_time(&mut self, ev: Resource<SharedEvent>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&ev)?.event_time().map(str::to_owned))
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

/// Most table elements one instance may have, over all its tables. Function tables of real
/// plugins hold a few thousand entries at most.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// What one table element costs the host: a pointer (wasmtime's funcref and externref slots).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// Caps an instance's linear memories and tables, and remembers a refusal so a resulting trap
/// can be reported as "memory limit exceeded" rather than as whatever the guest's allocator did
/// next.
///
/// The cap is on the sum over every memory and table of the instance (a component has several
/// core instances, each may have several memories), not on each one: 16 memories of 64 MiB each
/// would otherwise be 1 GiB. A store holds one instance and wasm memories never shrink, so a
/// running total of what was granted is exact.
pub struct MemoryLimiter {
    max_bytes: usize,
    refused: bool,
    /// Bytes of linear memory granted so far, over all memories.
    memory_bytes: usize,
    /// Elements granted so far, over all tables.
    table_elements: usize,
}

impl MemoryLimiter {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            refused: false,
            memory_bytes: 0,
            table_elements: 0,
        }
    }

    /// Bytes granted so far to memories and tables together.
    pub fn used_bytes(&self) -> usize {
        self.memory_bytes
            .saturating_add(self.table_elements.saturating_mul(TABLE_ELEMENT_BYTES))
    }

    /// Whether growth was refused since the last [`HostState::start_call`].
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// Grants `extra` bytes if the total stays within the cap.
    fn grant(&mut self, extra: usize) -> bool {
        let allowed = self
            .used_bytes()
            .checked_add(extra)
            .is_some_and(|total| total <= self.max_bytes);
        self.refused |= !allowed;
        allowed
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.grant(desired.saturating_sub(current));
        if allowed {
            self.memory_bytes += desired.saturating_sub(current);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let extra = desired.saturating_sub(current);
        let within_count = self
            .table_elements
            .checked_add(extra)
            .is_some_and(|total| total <= MAX_TABLE_ELEMENTS);
        self.refused |= !within_count;
        let allowed = within_count && self.grant(extra.saturating_mul(TABLE_ELEMENT_BYTES));
        if allowed {
            self.table_elements += extra;
        }
        Ok(allowed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_are_summed_over_the_instance() {
        let mut limiter = MemoryLimiter::new(64 << 20);
        assert!(limiter.memory_growing(0, 40 << 20, None).unwrap());
        // A second memory of the same instance: alone it fits, together they do not.
        assert!(!limiter.memory_growing(0, 40 << 20, None).unwrap());
        assert!(limiter.refused());
        assert!(limiter.memory_growing(0, 20 << 20, None).unwrap());
        assert_eq!(limiter.used_bytes(), 60 << 20);
        // Growing the first memory counts only the difference.
        assert!(limiter.memory_growing(40 << 20, 42 << 20, None).unwrap());
        assert!(!limiter.memory_growing(42 << 20, 45 << 20, None).unwrap());
        // Tables: elements count as pointers, in the same budget, and their number is capped
        // over all tables.
        let mut limiter = MemoryLimiter::new(64 << 20);
        assert!(limiter.table_growing(0, 60_000, None).unwrap());
        assert!(
            !limiter.table_growing(0, 50_000, None).unwrap(),
            "110,000 in all"
        );
        assert!(limiter.refused());
        assert!(limiter.table_growing(0, 40_000, None).unwrap());
        assert_eq!(limiter.used_bytes(), 100_000 * TABLE_ELEMENT_BYTES);
        let memory_left = (64 << 20) - limiter.used_bytes();
        assert!(!limiter.memory_growing(0, memory_left + 1, None).unwrap());
        assert!(limiter.memory_growing(0, memory_left, None).unwrap());
    }

    /// A component whose one core module has two memories of `pages` 64 KiB pages each.
    fn two_memories(pages: u32) -> String {
        format!(
            "(component (core module $m (memory {pages}) (memory {pages})) \
             (core instance (instantiate $m)))"
        )
    }

    fn instantiate(wat: &str, memory_bytes: usize) -> (wasmtime::Result<()>, bool) {
        let engine = wasmtime::Engine::default();
        let component = wasmtime::component::Component::new(&engine, wat).unwrap();
        let state = HostState::new("t".into(), memory_bytes, 10);
        let mut store = wasmtime::Store::new(&engine, state);
        store.limiter(|state| &mut state.limiter);
        let linker = wasmtime::component::Linker::<HostState>::new(&engine);
        let result = linker.instantiate(&mut store, &component).map(|_| ());
        (result, store.data().memory_refused())
    }

    #[test]
    fn an_instance_with_two_memories_gets_one_cap() {
        // 640 pages = 40 MiB: each memory is under the 64 MiB cap, both are not.
        let (result, refused) = instantiate(&two_memories(640), 64 << 20);
        assert!(result.is_err() && refused, "{result:?}");
        let (result, refused) = instantiate(&two_memories(320), 64 << 20);
        assert!(result.is_ok() && !refused, "{result:?}");
    }

    #[test]
    fn an_instance_with_two_tables_gets_one_cap() {
        let tables = |a: u32, b: u32| {
            format!(
                "(component (core module $m (table {a} funcref) (table {b} funcref)) \
                 (core instance (instantiate $m)))"
            )
        };
        let (result, refused) = instantiate(&tables(60_000, 50_000), 64 << 20);
        assert!(result.is_err() && refused, "{result:?}");
        let (result, refused) = instantiate(&tables(40_000, 50_000), 64 << 20);
        assert!(result.is_ok() && !refused, "{result:?}");
    }
}
