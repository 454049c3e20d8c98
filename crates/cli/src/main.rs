//! `streamcell`: the command-line entry point. `streamcell server` runs the database; later
//! subcommands (the SQL shell, the DataCell sensor and actuator) live here too.

mod actuator;
mod config;
mod sensor;
mod server;
mod shell;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// StreamCell: a streaming database for robots, edge boxes and servers.
#[derive(Debug, Parser)]
#[command(name = "streamcell", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the database server: the HStreamDB gRPC API (--port), PostgreSQL (--pg-port) and HTTP (--http-port)
    Server(config::ServerFlags),
    /// SQL shell: interactive, or runs statements from -e, -f or stdin
    Sql(shell::SqlFlags),
    /// DataCell sensor simulator: sends generated or replayed CSV events to a receptor
    Sensor(sensor::SensorFlags),
    /// DataCell actuator simulator: receives events from an emitter; counts them and reports
    /// throughput and latency
    Actuator(actuator::ActuatorFlags),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            // An empty STREAMCELL_LOG is treated as unset (it would otherwise log nothing).
            std::env::var("STREAMCELL_LOG")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .and_then(|v| EnvFilter::try_new(v).ok())
                .unwrap_or_else(|| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Server(flags) => server(flags),
        Command::Sql(flags) => shell::run(flags),
        Command::Sensor(flags) => sensor::run(flags),
        Command::Actuator(flags) => actuator::run(flags),
    }
}

/// Raises the soft limit on open files to the hard limit: every shard keeps its segment
/// files open, and the default soft limit (often 1024) is too low for many streams.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let old = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            tracing::debug!("raised the open-file limit from {old} to {}", lim.rlim_max);
        }
    }
}

fn server(flags: config::ServerFlags) -> ExitCode {
    raise_open_file_limit();
    let cfg = match flags.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamcell: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = cfg.validate() {
        eprintln!("streamcell: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(server::RUNTIME_THREAD_STACK_BYTES)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamcell: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(server::run(cfg, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streamcell: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
