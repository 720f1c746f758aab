//! Where the service keeps its state: the embedded SQLite database (the
//! default, `state_file`), or a PostgreSQL database shared by replicas
//! (`state_file = "postgresql://…"`, or a `[store]` section).
//!
//! ```toml
//! [store]
//! url = "postgresql://paas@db.internal:5432/paas_runner"
//! password = "secret:store_password"   # from secrets_file, never logged
//! secrets_file = "/etc/paas-runner/secrets.toml"
//! lease_seconds = 15                   # takeover time of a standby
//! replica_name = "runner-a"            # default: host name and process id
//! ca_file = "/etc/paas-runner/db-ca.pem" # authorities of the server's certificate
//! ```
//!
//! TLS follows the URL's `sslmode` (see [`crate::store_tls`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use paas_core::Secret;

use crate::reader::TableReader;
use crate::secrets::{ReadFile, Secrets};
use crate::store_tls::{SslMode, TrustRoots};
use crate::ConfigError;

/// The state database used when no `state_file` is configured, relative to
/// the current directory (and what `register` writes beside a new file).
pub const DEFAULT_STATE_FILE: &str = "paas-runner-state.db";

/// Default lease of the active replica (`[store] lease_seconds`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// The shortest lease accepted: renewals come every third of it.
pub const MIN_LEASE: Duration = Duration::from_secs(3);

/// Keys of the `[store]` section.
pub(crate) const STORE_KEYS: &[&str] = &[
    "url",
    "password",
    "secrets_file",
    "lease_seconds",
    "replica_name",
    "ca_file",
];

/// The store the configuration chooses.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreSettings {
    /// The embedded SQLite database at `state_file` ([`DEFAULT_STATE_FILE`]
    /// when unset).
    Sqlite { state_file: Option<PathBuf> },
    /// A PostgreSQL database; every replica with the same settings joins
    /// the same runner, one active at a time.
    Postgres(PostgresSettings),
}

/// A PostgreSQL store.
#[derive(Clone, PartialEq)]
pub struct PostgresSettings {
    /// A `postgresql://` (or `postgres://`) URL, which carries no password
    /// (refused at load).
    pub url: String,
    /// The password (`[store] password`, usually `secret:NAME`).
    pub password: Option<Secret>,
    /// How long the active replica's lease lasts without renewal.
    pub lease: Duration,
    /// This replica's name in the lease table and the logs.
    pub replica_name: Option<String>,
    /// `[store] ca_file`: the authorities the server's certificate must
    /// chain to (else `sslrootcert` in the URL, else the system's).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("lease", &self.lease)
            .field("replica_name", &self.replica_name)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Whether a `state_file` value names a PostgreSQL database.
pub fn is_postgres_url(value: &str) -> bool {
    value.starts_with("postgresql://") || value.starts_with("postgres://")
}

impl StoreSettings {
    /// The SQLite `state_file`, if this is the SQLite store.
    pub fn state_file(&self) -> Option<&Path> {
        match self {
            StoreSettings::Sqlite { state_file } => state_file.as_deref(),
            StoreSettings::Postgres(_) => None,
        }
    }
}

/// Reads `state_file` and the `[store]` section.
pub(crate) fn parse_store(
    root: &TableReader<'_>,
    read_file: ReadFile<'_>,
) -> Result<StoreSettings, ConfigError> {
    let state_file = root.string("state_file")?;
    let section = root.table("store")?;
    let Some(section) = section else {
        return Ok(match state_file {
            Some(url) if is_postgres_url(&url) => {
                let settings = postgres_from_url(root, "state_file", url, None)?;
                check_tls(root, "state_file", &settings, None, read_file)?;
                StoreSettings::Postgres(settings)
            }
            state_file => StoreSettings::Sqlite {
                state_file: state_file.map(PathBuf::from),
            },
        });
    };
    for (key, _) in section.entries() {
        if !STORE_KEYS.contains(&key) {
            return Err(section.error(key, format!("unknown key; expected one of {STORE_KEYS:?}")));
        }
    }
    if state_file.is_some() {
        return Err(root.error(
            "state_file",
            "both state_file and [store] name a store: keep only [store] url \
             (`paas-runner store migrate` copies a state_file's jobs into it)",
        ));
    }
    let url = section.required_string("url")?;
    let secrets = Secrets::load(&section, "secrets_file", read_file)?;
    let password = match section.secret_string("password")? {
        Some(value) => Some(Secret::new(secrets.resolve(value, &section, "password")?)),
        None => None,
    };
    let mut settings = postgres_from_url(&section, "url", url, password)?;
    if let Some(lease) = section.seconds("lease_seconds", false)? {
        if lease < MIN_LEASE {
            return Err(section.error(
                "lease_seconds",
                format!("at least {} seconds", MIN_LEASE.as_secs()),
            ));
        }
        settings.lease = lease;
    }
    settings.replica_name = section.string("replica_name")?;
    settings.ca_file = section
        .string("ca_file")?
        .filter(|path| !path.is_empty())
        .map(PathBuf::from);
    check_tls(&section, "url", &settings, Some("ca_file"), read_file)?;
    Ok(StoreSettings::Postgres(settings))
}

/// Checks `url`, which must not carry a password: it would be shown
/// wherever the URL is.
fn postgres_from_url(
    table: &TableReader<'_>,
    key: &str,
    url: String,
    password: Option<Secret>,
) -> Result<PostgresSettings, ConfigError> {
    if !is_postgres_url(&url) {
        return Err(table.error(key, "expected a postgresql://user@host:port/database URL"));
    }
    // The parser's message only: it never quotes the URL.
    let parsed = url::Url::parse(&url)
        .map_err(|error| table.error(key, format!("not a valid URL ({error})")))?;
    if parsed.password().is_some() {
        return Err(table.error(
            key,
            "the URL carries a password: remove it and write it in the secrets file, \
             as `[store] password = \"secret:NAME\"`",
        ));
    }
    if parsed.query_pairs().any(|(key, _)| key == "password") {
        return Err(table.error(
            key,
            "the URL carries a password (`password=`): remove it and write it in the \
             secrets file, as `[store] password = \"secret:NAME\"`",
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty)
        && !parsed.query().is_some_and(|q| q.contains("host="))
    {
        return Err(table.error(key, "the URL names no host"));
    }
    Ok(PostgresSettings {
        url,
        password,
        lease: DEFAULT_LEASE,
        replica_name: None,
        ca_file: None,
    })
}

/// Checks the URL's TLS settings, and that the certificate authorities
/// (`ca_file`, or `sslrootcert` in the URL) can be read: a mistake there is
/// reported at load, not at the first connection.
fn check_tls(
    table: &TableReader<'_>,
    url_key: &str,
    settings: &PostgresSettings,
    ca_key: Option<&str>,
    read_file: ReadFile<'_>,
) -> Result<(), ConfigError> {
    let tls = crate::store_tls::pg_tls(&settings.url, settings.ca_file.as_deref())
        .map_err(|message| table.error(url_key, message))?;
    let TrustRoots::File(path) = &tls.roots else {
        return Ok(());
    };
    let key = match (&settings.ca_file, ca_key) {
        (Some(_), Some(ca_key)) => ca_key,
        _ => url_key,
    };
    let text = read_file(path).map_err(|error| {
        table.error(
            key,
            format!(
                "cannot read the certificate authorities {}: {error}",
                path.display()
            ),
        )
    })?;
    crate::store_tls::check_pem_certificates(&text)
        .map_err(|message| table.error(key, format!("{}: {message}", path.display())))?;
    if tls.mode == SslMode::Disable {
        return Err(table.error(
            key,
            "certificate authorities are set but sslmode=disable turns TLS off: \
             remove one of them",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::{parse_with, Config};

    const RUNNER: &str = r#"
[quota_computation]
reference_runner = "main"
reference_flavor = "M"
reference_jobs_count = 4

[[runners]]
name = "main"
url = "https://heptapod.example/"
token = "glrt-main-token-value"
executor = "clever-docker"
cc_orga_id = "orga_x"
cc_token = "cc-main-token-value"
"#;
    const PASSWORD: &str = "pg-secret-value-81";

    fn parse(head: &str, store: &str) -> Result<Config, ConfigError> {
        let text = format!("{head}{RUNNER}{store}");
        let read_file = |path: &Path| -> io::Result<String> {
            if path == Path::new("/etc/paas/secrets.toml") {
                Ok(format!("pg = {PASSWORD:?}\n"))
            } else if path == Path::new("/etc/paas/ca.pem") {
                Ok("-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n".into())
            } else if path == Path::new("/etc/paas/not-a-ca.pem") {
                Ok("just text\n".into())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no such file (test)",
                ))
            }
        };
        parse_with(&text, Path::new("/etc/paas.toml"), &read_file)
    }

    fn error(head: &str, store: &str) -> String {
        let message = parse(head, store).unwrap_err().to_string();
        assert!(!message.contains(PASSWORD), "{message}");
        message
    }

    #[test]
    fn sqlite_is_the_default_and_a_url_in_state_file_is_postgresql() {
        let config = parse("state_file = \"/var/lib/p/state.db\"\n", "").unwrap();
        assert_eq!(
            config.store,
            StoreSettings::Sqlite {
                state_file: Some("/var/lib/p/state.db".into())
            }
        );
        let config = parse("state_file = \"postgresql://paas@db:5432/paas\"\n", "").unwrap();
        let StoreSettings::Postgres(settings) = &config.store else {
            panic!("{:?}", config.store)
        };
        assert_eq!(settings.url, "postgresql://paas@db:5432/paas");
        assert_eq!(
            (settings.password.as_ref(), settings.lease),
            (None, DEFAULT_LEASE)
        );
        assert_eq!(config.state_file, None);
    }

    #[test]
    fn a_store_section_takes_its_password_from_the_secrets_file() {
        let section = "\n[store]\nurl = \"postgresql://paas@db/paas\"\npassword = \"secret:pg\"\n\
                       secrets_file = \"/etc/paas/secrets.toml\"\nlease_seconds = 20\nreplica_name = \"a\"\n";
        let config = parse("", section).unwrap();
        let StoreSettings::Postgres(settings) = &config.store else {
            panic!("{:?}", config.store)
        };
        assert_eq!(
            settings.password.as_ref().map(Secret::expose),
            Some(PASSWORD)
        );
        assert_eq!(settings.lease, Duration::from_secs(20));
        assert_eq!(settings.replica_name.as_deref(), Some("a"));
        let shown = format!("{config:?}");
        assert!(!shown.contains(PASSWORD), "{shown}");
    }

    #[test]
    fn bad_store_settings_are_refused_with_their_key() {
        let message = error(
            "",
            "\n[store]\nurl = \"postgresql://paas:pw-in-url@db/paas\"\n",
        );
        assert!(
            message.contains("key `store.url`") && message.contains("carries a password"),
            "{message}"
        );
        assert!(!message.contains("pw-in-url"), "{message}");
        let message = error(
            "",
            "\n[store]\nurl = \"postgresql://paas@db/paas?password=pw-in-query\"\n",
        );
        assert!(message.contains("carries a password"), "{message}");
        assert!(!message.contains("pw-in-query"), "{message}");
        let message = error("", "\n[store]\nurl = \"mysql://db/paas\"\n");
        assert!(message.contains("expected a postgresql://"), "{message}");
        let message = error(
            "",
            "\n[store]\nurl = \"postgresql://db/p\"\nlease_seconds = 1\n",
        );
        assert!(
            message.contains("store.lease_seconds") && message.contains("at least 3"),
            "{message}"
        );
        let message = error(
            "",
            "\n[store]\nurl = \"postgresql://db/p\"\npasword = \"x\"\n",
        );
        assert!(
            message.contains("store.pasword") && message.contains("unknown key"),
            "{message}"
        );
        let message = error(
            "",
            "\n[store]\nurl = \"postgresql://db/p\"\npassword = \"secret:pg\"\n",
        );
        assert!(message.contains("no `secrets_file`"), "{message}");
        let message = error(
            "state_file = \"postgresql://db/a\"\n",
            "\n[store]\nurl = \"postgresql://db/p\"\n",
        );
        assert!(message.contains("both state_file and [store]"), "{message}");
    }

    #[test]
    fn ca_file_and_sslmode_are_checked_at_load_where_they_are_written() {
        let config = parse(
            "",
            "\n[store]\nurl = \"postgresql://paas@db/p?sslmode=verify-full\"\nca_file = \"/etc/paas/ca.pem\"\n",
        )
        .unwrap();
        let StoreSettings::Postgres(settings) = &config.store else {
            panic!("{:?}", config.store)
        };
        assert_eq!(
            settings.ca_file.as_deref(),
            Some(Path::new("/etc/paas/ca.pem"))
        );
        let config = parse(
            "state_file = \"postgresql://paas@db/p?sslrootcert=/etc/paas/ca.pem\"\n",
            "",
        )
        .unwrap();
        assert!(matches!(config.store, StoreSettings::Postgres(_)));

        let message = error(
            "",
            "\n[store]\nurl = \"postgresql://db/p\"\nca_file = \"/etc/paas/missing.pem\"\n",
        );
        assert!(
            message.contains("key `store.ca_file`")
                && message
                    .contains("cannot read the certificate authorities /etc/paas/missing.pem"),
            "{message}"
        );
        let message = error(
            "",
            "\n[store]\nurl = \"postgresql://db/p\"\nca_file = \"/etc/paas/not-a-ca.pem\"\n",
        );
        assert!(
            message.contains("key `store.ca_file`") && message.contains("no PEM certificate"),
            "{message}"
        );
        let message = error(
            "state_file = \"postgresql://db/p?sslrootcert=/etc/paas/missing.pem\"\n",
            "",
        );
        assert!(
            message.contains("key `state_file`") && message.contains("missing.pem"),
            "{message}"
        );
        let message = error(
            "",
            "\n[store]\nurl = \"postgresql://db/p?sslmode=verify\"\n",
        );
        assert!(
            message.contains("key `store.url`") && message.contains("unknown sslmode"),
            "{message}"
        );
        let message = error(
            "",
            "\n[store]\nurl = \"postgresql://db/p?sslmode=disable\"\nca_file = \"/etc/paas/ca.pem\"\n",
        );
        assert!(
            message.contains("sslmode=disable turns TLS off"),
            "{message}"
        );
    }
}
