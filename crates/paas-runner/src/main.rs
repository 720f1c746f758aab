//! `paas-runner`: runs GitLab/Heptapod CI jobs, each on its own freshly
//! provisioned Clever Cloud machine.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use paas_runner::{admin, bench, demo, logging, register, run, sim_cmd, store_cmd};

#[derive(Parser, Debug)]
#[command(
    name = "paas-runner",
    version,
    about = "Runs GitLab/Heptapod CI jobs, each on its own Clever Cloud machine"
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace (or a tracing filter).
    /// Wins over the file's `log_level`.
    #[arg(long, global = true, default_value = "info", env = "PAAS_RUNNER_LOG")]
    log_level: String,
    /// Log format. Wins over the file's `log_format`.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    #[command(flatten)]
    reference: run::ReferenceOptions,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Run the service with a heptapod-paas-runner configuration file.
    Run {
        /// Path of the configuration file (TOML).
        config: PathBuf,
    },
    /// Print the jobs and resources the service tracks (no secrets).
    State {
        /// Path of the configuration file (TOML).
        config: PathBuf,
    },
    /// List the cloud applications of this configuration's runners that no
    /// tracked job accounts for; with --yes, delete those this installation
    /// owns that are older than `paas_orphan_min_age`.
    Reap {
        /// Path of the configuration file (TOML).
        config: PathBuf,
        /// Delete what is listed as deletable (needs the state database).
        #[arg(long)]
        yes: bool,
        /// With --yes, also delete applications of other installations and
        /// unmarked ones (still only untracked ones past the minimum age).
        #[arg(long, requires = "yes")]
        include_foreign: bool,
    },
    /// Register a runner on a GitLab instance and write its section in the
    /// configuration file (created if absent).
    Register(Box<register::RegisterArgs>),
    /// Check the runner tokens of a configuration; with --delete, remove
    /// the runners whose token is refused.
    Verify(register::VerifyArgs),
    /// Unregister runners from GitLab and remove them from the
    /// configuration.
    Unregister(register::UnregisterArgs),
    /// Run a demonstration on embedded simulators of GitLab and Clever Cloud.
    Demo(demo::DemoArgs),
    /// Start the GitLab and Clever Cloud simulators alone, for any runner.
    Sim(sim_cmd::SimArgs),
    /// Measure the service against the simulators (throughput, latencies,
    /// memory, CPU).
    Bench(bench::BenchArgs),
    /// Operations on the state store (`migrate FROM TO`).
    #[command(subcommand)]
    Store(store_cmd::StoreCommand),
}

/// Accepts heptapod-paas-runner's command line too, so that a unit file
/// written for it keeps working: `paas-runner CONFIG` means `run CONFIG`, and
/// its `-l`/`--logging-level LEVEL` is `--log-level LEVEL`.
fn reference_style_args(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    for arg in args.iter_mut().skip(1) {
        if arg == "-l" || arg == "--logging-level" {
            *arg = "--log-level".into();
        } else if let Some(level) = arg
            .to_str()
            .and_then(|text| text.strip_prefix("--logging-level="))
        {
            *arg = format!("--log-level={}", level.to_lowercase()).into();
        }
    }
    // The first argument that is neither an option nor an option's value.
    let mut index = 1;
    while index < args.len() {
        let arg = args[index].to_string_lossy();
        if arg == "--log-level"
            || arg == "--log-format"
            || run::REFERENCE_VALUE_OPTIONS.contains(&&*arg)
        {
            // Reference levels are upper case (INFO, DEBUG).
            if let Some(value) = args.get_mut(index + 1) {
                *value = value.to_string_lossy().to_lowercase().into();
            }
            index += 2;
        } else if arg.starts_with('-') {
            index += 1;
        } else {
            let is_command = Cli::command()
                .get_subcommands()
                .any(|command| command.get_name() == arg)
                || arg == "help";
            if !is_command && std::path::Path::new(&*arg).is_file() {
                args.insert(index, "run".into());
            }
            break;
        }
    }
    args
}

fn main() -> ExitCode {
    let matches =
        Cli::command().get_matches_from(reference_style_args(std::env::args_os().collect()));
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let quiet_default = matches!(cli.command, Commands::Demo(_) | Commands::Bench(_));
    // The service's file may set gitlab-runner's `log_level`/`log_format`;
    // the command line (or PAAS_RUNNER_LOG) wins.
    let (mut log_level, mut log_format) = (cli.log_level.clone(), cli.log_format);
    if let Commands::Run { config } = &cli.command {
        let (file_level, file_format) = logging::from_config_file(config);
        if matches.value_source("log_level") == Some(ValueSource::DefaultValue) {
            log_level = file_level.unwrap_or(log_level);
        }
        if matches.value_source("log_format") == Some(ValueSource::DefaultValue) {
            log_format = file_format.unwrap_or(log_format);
        }
    }
    if let Err(error) = logging::init(&log_level, log_format, quiet_default) {
        eprintln!("paas-runner: {error}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("paas-runner: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Commands::Run { config } => run::main(&config, &cli.reference).await,
            Commands::State { config } => admin::state(&config).await,
            Commands::Reap {
                config,
                yes,
                include_foreign,
            } => admin::reap(&config, yes, include_foreign).await,
            Commands::Register(args) => register::register(*args).await,
            Commands::Verify(args) => register::verify(args).await,
            Commands::Unregister(args) => register::unregister(args).await,
            Commands::Demo(args) => demo::main(args).await,
            Commands::Sim(args) => sim_cmd::main(args).await,
            Commands::Bench(args) => bench::main(args).await,
            Commands::Store(command) => store_cmd::main(command).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        reference_style_args(args.iter().map(|arg| (*arg).into()).collect())
            .into_iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn reference_command_lines_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("paas-runner.toml");
        std::fs::write(&config, "").unwrap();
        let config = config.to_str().unwrap();
        assert_eq!(
            rewrite(&["paas-runner", config]),
            ["paas-runner", "run", config]
        );
        assert_eq!(
            rewrite(&["paas-runner", "-l", "DEBUG", config]),
            ["paas-runner", "--log-level", "debug", "run", config]
        );
        assert_eq!(
            rewrite(&["paas-runner", "--logging-level=INFO", config]),
            ["paas-runner", "--log-level=info", "run", config]
        );
        // Our own command lines are left alone.
        assert_eq!(
            rewrite(&["paas-runner", "run", config]),
            ["paas-runner", "run", config]
        );
        assert_eq!(
            rewrite(&["paas-runner", "demo", "--jobs", "3"]),
            ["paas-runner", "demo", "--jobs", "3"]
        );
        assert_eq!(
            rewrite(&["paas-runner", "no-such-file"]),
            ["paas-runner", "no-such-file"]
        );
    }
}
