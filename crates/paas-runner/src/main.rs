//! `paas-runner`: runs GitLab/Heptapod CI jobs, each on its own freshly
//! provisioned Clever Cloud machine.

mod admin;
mod bench;
mod demo;
mod driver;
mod import;
mod logging;
mod run;
mod runners;
mod setup;
mod sim_cmd;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "paas-runner",
    version,
    about = "Runs GitLab/Heptapod CI jobs, each on its own Clever Cloud machine"
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, global = true, default_value = "info", env = "PAAS_RUNNER_LOG")]
    log_level: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
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
    /// tracked job accounts for; with --yes, delete them.
    Reap {
        /// Path of the configuration file (TOML).
        config: PathBuf,
        /// Delete what is listed.
        #[arg(long)]
        yes: bool,
    },
    /// Run a demonstration on embedded simulators of GitLab and Clever Cloud.
    Demo(demo::DemoArgs),
    /// Start the GitLab and Clever Cloud simulators alone, for any runner.
    Sim(sim_cmd::SimArgs),
    /// Measure the service against the simulators (throughput, latencies,
    /// memory, CPU).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet_default = matches!(cli.command, Commands::Demo(_) | Commands::Bench(_));
    if let Err(error) = logging::init(&cli.log_level, cli.log_format, quiet_default) {
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
            Commands::Run { config } => run::main(&config).await,
            Commands::State { config } => admin::state(&config).await,
            Commands::Reap { config, yes } => admin::reap(&config, yes).await,
            Commands::Demo(args) => demo::main(args).await,
            Commands::Sim(args) => sim_cmd::main(args).await,
            Commands::Bench(args) => bench::main(args).await,
        }
    })
}
