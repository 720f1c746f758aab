//! A throwaway PostgreSQL cluster for tests and measurements: `initdb` and
//! `pg_ctl` (from `PATH` or `/usr/lib/postgresql/*/bin`) in a temporary
//! directory, on a free loopback port, its socket in that directory,
//! password authentication over TCP, stopped and removed on drop. Run as
//! root, the server runs as `nobody` (PostgreSQL refuses root).
//!
//! [`Throwaway::start_tls`] starts one with `ssl = on` and the given
//! certificate, accepting TCP connections over TLS only (`hostssl`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use paas_config::PostgresSettings;
use paas_core::Secret;

/// The cluster's superuser and its password.
pub const USER: &str = "paas";
pub const PASSWORD: &str = "throwaway-pw-9c41";

/// The server's certificate chain and private key (PEM), for
/// [`Throwaway::start_tls`].
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A running throwaway cluster.
pub struct Throwaway {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
    // Removed last.
    _dir: tempfile::TempDir,
}

/// The directory holding `initdb` and `pg_ctl`, if any.
pub fn binaries() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).find(|dir| complete(dir)));
    if on_path.is_some() {
        return on_path;
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| complete(bin))
        .collect();
    // The newest version.
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(Path::file_name)
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

fn complete(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "psql"]
        .iter()
        .all(|tool| dir.join(tool).is_file())
}

/// `Ok(None)` (with a notice on stderr) when PostgreSQL is not installed,
/// unless `PAAS_RUNNER_REQUIRE_TOOLS=1`: then an error.
pub fn start_or_skip(test: &str) -> Result<Option<Throwaway>, String> {
    if missing(test)? {
        return Ok(None);
    }
    Throwaway::start().map(Some)
}

/// Like [`start_or_skip`], for [`Throwaway::start_tls`].
pub fn start_tls_or_skip(test: &str, tls: &ServerTls) -> Result<Option<Throwaway>, String> {
    if missing(test)? {
        return Ok(None);
    }
    Throwaway::start_tls(tls).map(Some)
}

/// Whether `test` must be skipped (PostgreSQL not installed), with a
/// notice; an error instead under `PAAS_RUNNER_REQUIRE_TOOLS=1`.
fn missing(test: &str) -> Result<bool, String> {
    if binaries().is_some() {
        return Ok(false);
    }
    if std::env::var("PAAS_RUNNER_REQUIRE_TOOLS").as_deref() == Ok("1") {
        return Err(format!(
            "{test}: PostgreSQL (initdb, pg_ctl) not found and PAAS_RUNNER_REQUIRE_TOOLS=1"
        ));
    }
    eprintln!("SKIPPED {test}: PostgreSQL (initdb, pg_ctl) not found; install `postgresql`");
    Ok(true)
}

/// `nobody`'s uid and gid, from `/etc/passwd`.
fn nobody() -> (u32, u32) {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.first() == Some(&"nobody") && fields.len() > 3)
                    .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                    .flatten()
            })
        })
        .unwrap_or((65534, 65534))
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|e| e.to_string())
}

impl Throwaway {
    pub fn start() -> Result<Throwaway, String> {
        Throwaway::start_with(None)
    }

    /// A cluster with `ssl = on`, serving `tls`, whose `pg_hba.conf`
    /// accepts TCP connections over TLS only: a plain one is refused.
    pub fn start_tls(tls: &ServerTls) -> Result<Throwaway, String> {
        Throwaway::start_with(Some(tls))
    }

    fn start_with(tls: Option<&ServerTls>) -> Result<Throwaway, String> {
        let bin = binaries().ok_or("PostgreSQL binaries not found")?;
        let dir = tempfile::Builder::new()
            .prefix("paas-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let owner = rustix_is_root().then(nobody);
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = owner {
            for path in [dir.path(), pwfile.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
            }
        }
        let mut cluster = Throwaway {
            bin,
            data,
            port: 0,
            owner,
            _dir: dir,
        };
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                cluster.data.as_os_str(),
                "-U".as_ref(),
                USER.as_ref(),
                "--pwfile".as_ref(),
                pwfile.as_os_str(),
                "--auth-local=trust".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        if let Some(tls) = tls {
            cluster.configure_tls(tls)?;
        }
        let mut last_error = String::new();
        for _ in 0..3 {
            cluster.port = free_port()?;
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
                cluster.port,
                cluster.socket_dir().display()
            );
            let log = cluster.socket_dir().join("server.log");
            match cluster.run(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    cluster.data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-o".as_ref(),
                    options.as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "start".as_ref(),
                ],
            ) {
                Ok(()) => return Ok(cluster),
                Err(error) => {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    last_error = format!("{error}\n{log}");
                }
            }
        }
        Err(last_error)
    }

    /// Writes the certificate and key (0600, owned by the server's user, as
    /// PostgreSQL requires of the key), turns `ssl` on and accepts TCP
    /// connections over TLS only.
    fn configure_tls(&self, tls: &ServerTls) -> Result<(), String> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let write = |name: &str, text: &str, append: bool| -> Result<(), String> {
            let path = self.data.join(name);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .append(append)
                .truncate(!append)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            file.write_all(text.as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if let Some((uid, gid)) = self.owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        write("server.crt", &tls.cert_pem, false)?;
        write("server.key", &tls.key_pem, false)?;
        write(
            "postgresql.conf",
            "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            true,
        )?;
        write(
            "pg_hba.conf",
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostssl all all ::1/128 scram-sha-256\n",
            false,
        )
    }

    fn socket_dir(&self) -> PathBuf {
        self._dir.path().to_path_buf()
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let mut command = Command::new(self.bin.join(tool));
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid).current_dir("/");
        }
        let output = command.output().map_err(|e| format!("{tool}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL (no password) of database `database` over TCP on `port`
    /// (the cluster's own port unless a proxy sits in between).
    pub fn url_via(&self, port: u16, database: &str) -> String {
        format!("postgresql://{USER}@127.0.0.1:{port}/{database}?connect_timeout=5")
    }

    /// Settings for database `database` (created if needed) with the
    /// password, and a lease of `lease`.
    pub fn settings(&self, database: &str, lease: Duration) -> PostgresSettings {
        self.settings_via(self.port, database, lease)
    }

    pub fn settings_via(&self, port: u16, database: &str, lease: Duration) -> PostgresSettings {
        PostgresSettings {
            url: self.url_via(port, database),
            password: Some(Secret::new(PASSWORD)),
            lease,
            replica_name: None,
            ca_file: None,
        }
    }

    /// Creates database `name` (owned by [`USER`]).
    pub fn create_database(&self, name: &str) -> Result<(), String> {
        let psql = self.bin.join("psql");
        let mut command = Command::new(psql);
        command
            .args(["-h", &self.socket_dir().display().to_string()])
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", "postgres"])
            .args(["-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE \"{name}\""))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid).current_dir("/");
        }
        let output = command.output().map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

fn rustix_is_root() -> bool {
    // The owner of this process's /proc entry is its effective user.
    std::fs::metadata("/proc/self")
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta) == 0)
        .unwrap_or(false)
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
    }
}
