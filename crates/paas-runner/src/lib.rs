//! `paas-runner`'s library: the modules of the binary (driver, status
//! server, operator commands, benchmark), so that integration tests import
//! them. `main.rs` only parses the command line and calls into them.

/// `println!` for the whole crate: when standard output is closed (`paas-runner
/// state CONFIG | head`), the command ends quietly with status 0, as
/// ripgrep does, instead of panicking. Defined before the modules so that
/// it is the one they use.
macro_rules! println {
    () => {
        $crate::print_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::print_line(format_args!($($arg)*))
    };
}

pub mod admin;
pub mod bench;
pub mod credentials;
pub mod demo;
pub mod driver;
pub mod ha;
pub mod import;
pub mod logging;
pub mod metrics;
pub mod reference_options;
pub mod register;
pub mod reload;
pub mod run;
pub mod runners;
pub mod setup;
pub mod setup_error;
pub mod signals;
pub mod sim_cmd;
pub mod snapshot;
pub mod statistics;
pub mod status;
pub mod store_cmd;
pub mod tls;

/// Writes one line to standard output; see [`println!`].
#[doc(hidden)]
pub fn print_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(error) => {
            eprintln!("paas-runner: cannot write to standard output: {error}");
            std::process::exit(1);
        }
    }
}
