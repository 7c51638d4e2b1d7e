//! Logging through the host.

use std::fmt;

/// Severity of a log line, mapped to the host's log levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing, normally filtered out by the host.
    Trace,
    /// Diagnostics useful while developing or debugging a plugin.
    Debug,
    /// Normal operational messages.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Something failed.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        })
    }
}

#[cfg(target_arch = "wasm32")]
impl From<Level> for crate::__private::bindings::LogLevel {
    fn from(level: Level) -> Self {
        use crate::__private::bindings::LogLevel;
        match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        }
    }
}

/// Writes one line to the host's log, tagged with the plugin's name.
///
/// The host decides which levels it keeps. Outside WebAssembly (native unit tests) the line is
/// written to stderr as `[LEVEL] message`, where the test harness captures it.
///
/// The [`trace!`](crate::trace), [`debug!`](crate::debug), [`info!`](crate::info),
/// [`warn!`](crate::warn) and [`error!`](crate::error) macros format and call this.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::__private::bindings::log(level.into(), message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level}] {message}");
}

/// Formats and logs; avoids an allocation when the message is a plain string literal.
#[doc(hidden)]
pub fn log_args(level: Level, args: fmt::Arguments<'_>) {
    match args.as_str() {
        Some(message) => log(level, message),
        None => log(level, &args.to_string()),
    }
}

/// Logs a message at [`Level::Trace`], with `format!` syntax.
///
/// ```
/// fanout_sdk::trace!("looked at {} labels", 3);
/// ```
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => {
        $crate::__private::log_args($crate::Level::Trace, ::core::format_args!($($arg)+))
    };
}

/// Logs a message at [`Level::Debug`], with `format!` syntax.
///
/// ```
/// let reason = "BackOff";
/// fanout_sdk::debug!("dropping event: reason {reason} is filtered");
/// ```
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::__private::log_args($crate::Level::Debug, ::core::format_args!($($arg)+))
    };
}

/// Logs a message at [`Level::Info`], with `format!` syntax.
///
/// ```
/// fanout_sdk::info!("configured with prefix {:?}", "k8s-");
/// ```
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::__private::log_args($crate::Level::Info, ::core::format_args!($($arg)+))
    };
}

/// Logs a message at [`Level::Warn`], with `format!` syntax.
///
/// ```
/// fanout_sdk::warn!("event {} has no labels", "x.1");
/// ```
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::__private::log_args($crate::Level::Warn, ::core::format_args!($($arg)+))
    };
}

/// Logs a message at [`Level::Error`], with `format!` syntax.
///
/// ```
/// fanout_sdk::error!("cannot parse {}: {}", "x", "oops");
/// ```
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::__private::log_args($crate::Level::Error, ::core::format_args!($($arg)+))
    };
}

#[cfg(test)]
mod tests {
    use super::Level;

    #[test]
    fn logging_natively_does_not_crash() {
        crate::log(Level::Info, "plain");
        crate::trace!("literal");
        crate::debug!("formatted {}", 1);
        let x = 2;
        crate::info!("captured {x}");
        crate::warn!("w");
        crate::error!("e {:?}", "q");
    }

    #[test]
    fn levels_display_in_capitals() {
        assert_eq!(Level::Warn.to_string(), "WARN");
        assert_eq!(format!("{:<5}|", Level::Info), "INFO |");
    }
}
