//! Operator logs: text or JSON lines on standard error, level from the CLI.

use std::sync::atomic::Ordering;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `level` is a level name or a full filter
/// (e.g. `info,paas_runner=debug`). `quiet_default` lowers the default
/// `info` to `warn` (the demo shows its own progress instead).
pub fn init(level: &str, format: LogFormat, quiet_default: bool) -> anyhow::Result<()> {
    let level = if quiet_default && level == "info" {
        "warn"
    } else {
        level
    };
    let filter = EnvFilter::try_new(level)
        .map_err(|error| anyhow::anyhow!("invalid --log-level {level:?}: {error}"))?;
    // No colour codes in files and journals.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(CountWarnings);
    match format {
        LogFormat::Text => registry.with(fmt_layer).try_init(),
        LogFormat::Json => registry
            .with(fmt_layer.json().flatten_event(true))
            .try_init(),
    }
    .map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))
}

/// Counts the warnings and errors logged, for `gitlab_runner_errors_total`.
struct CountWarnings;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountWarnings {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let counter = match *event.metadata().level() {
            tracing::Level::ERROR => &crate::metrics::ERRORS_LOGGED,
            tracing::Level::WARN => &crate::metrics::WARNINGS_LOGGED,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The log level and format a configuration file asks for (gitlab-runner's
/// `log_level` and `log_format`), read before the logger exists: `None`
/// where the file says nothing or cannot be read (the service reports that
/// itself once it loads the file).
pub fn from_config_file(path: &std::path::Path) -> (Option<String>, Option<LogFormat>) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return (None, None);
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return (None, None);
    };
    let level = table
        .get("log_level")
        .and_then(toml::Value::as_str)
        .map(|level| match level.to_lowercase().as_str() {
            "fatal" | "panic" => "error".to_owned(),
            "warning" => "warn".to_owned(),
            other => other.to_owned(),
        });
    let format = table
        .get("log_format")
        .and_then(toml::Value::as_str)
        .and_then(|format| match format {
            "json" => Some(LogFormat::Json),
            "text" | "runner" => Some(LogFormat::Text),
            _ => None,
        });
    (level, format)
}
