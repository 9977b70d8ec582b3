//! Structured logs: one subscriber for the whole process, writing to stderr.

use tracing_subscriber::EnvFilter;

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, with the current span's fields (`request{request_id=..}:`),
    /// coloured only when stderr is a terminal.
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, the event's fields
    /// (`message` among them) at the top level, and `span` with the current span's fields
    /// (`span.request_id` inside a request).
    Json,
}

/// A `log.level` that is not a filter.
#[derive(Debug)]
pub struct LoggingError(pub String);

impl std::fmt::Display for LoggingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoggingError {}

/// The filter of `level` (`info`, `warn`, `api_server=debug,info`...), or `RUST_LOG`
/// when the environment sets it (a developer's override).
fn filter(level: &str) -> Result<EnvFilter, LoggingError> {
    if let Ok(f) = EnvFilter::try_from_default_env() {
        return Ok(f);
    }
    EnvFilter::try_new(level).map_err(|e| LoggingError(format!("log.level: `{level}`: {e}")))
}

/// Installs the process's subscriber: `format` lines on stderr, filtered by `level`
/// (`RUST_LOG` wins when set). A second call changes nothing (the first one stays).
pub fn init_logging(format: LogFormat, level: &str) -> Result<(), LoggingError> {
    let filter = filter(level)?;
    // Colours only for a terminal: a file or a log collector gets plain text.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    Ok(())
}
