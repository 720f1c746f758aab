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
        LogFormat::Json => registry.with(fmt_layer.event_format(JsonLines)).try_init(),
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

/// JSON lines: `timestamp`, `level`, `target`, then the event's fields
/// (`message` among them) at the top level. A field logged with `?` whose
/// text is a JSON array (a list of strings or numbers, as `Debug` writes
/// them) stays an array, so that tools read lists as lists.
struct JsonLines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _context: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing_subscriber::fmt::time::FormatTime as _;
        let mut timestamp = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(
            &mut tracing_subscriber::fmt::format::Writer::new(&mut timestamp),
        )?;
        let metadata = event.metadata();
        let mut fields = JsonFieldVisitor(serde_json::Map::new());
        fields.0.insert("timestamp".into(), timestamp.into());
        fields
            .0
            .insert("level".into(), metadata.level().as_str().into());
        event.record(&mut fields);
        fields.0.insert("target".into(), metadata.target().into());
        writeln!(writer, "{}", serde_json::Value::Object(fields.0))
    }
}

struct JsonFieldVisitor(serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFieldVisitor {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        let value = if text.starts_with('[') {
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(array @ serde_json::Value::Array(_)) => array,
                _ => text.into(),
            }
        } else {
            text.into()
        };
        self.0.insert(field.name().into(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_keep_lists_as_arrays() {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let writer = {
            let buffer = buffer.clone();
            move || BufferWriter(buffer.clone())
        };
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .event_format(JsonLines),
        );
        tracing::subscriber::with_default(subscriber, || {
            let names = vec!["XS".to_owned(), "S".to_owned()];
            tracing::info!(runner = %"r", flavors = ?names, weight = 5.66, "catalogue read");
            tracing::info!(text = ?"[not a list", "other");
        });
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines[0]["flavors"], serde_json::json!(["XS", "S"]));
        assert_eq!(lines[0]["message"], "catalogue read");
        assert_eq!(lines[0]["runner"], "r");
        assert_eq!(lines[0]["weight"], 5.66);
        assert_eq!(lines[0]["level"], "INFO");
        assert!(lines[0]["timestamp"].as_str().is_some_and(|t| t.len() > 10));
        assert_eq!(lines[1]["text"], "\"[not a list\"");
    }

    struct BufferWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for BufferWriter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
