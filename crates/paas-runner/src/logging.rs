//! Operator logs: text or JSON lines on standard error, level from the CLI.

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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))
}
