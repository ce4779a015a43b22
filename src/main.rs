//! The `moongate` binary: parse the command line, set up logging, run.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use moongate::cli::{Cli, Command};
use moongate::{Gateway, shutdown, telemetry};
use tikv_jemallocator::Jemalloc;

// Per-request allocations (headers, bodies, futures) dominate allocator traffic. jemalloc's
// per-thread caches suit the thread-per-core workers, and it serves every allocation aligned to 16
// bytes or less on its plain path. mimalloc 3, which Rust reaches through its aligned entry point,
// over-allocated in a larger size class whenever a size had no free block at hand (about five times
// per proxied request), and held more memory at rest.
#[global_allocator]
static GLOBAL: Jemalloc = Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Start);
    if command == Command::Version {
        #[allow(clippy::print_stdout)]
        {
            println!("moongate {}", env!("CARGO_PKG_VERSION"));
        }
        return ExitCode::SUCCESS;
    }
    let env: HashMap<String, String> = std::env::vars().collect();
    let gateway = match Gateway::load(cli.config.as_deref(), &env) {
        Ok(g) => g,
        Err(err) => {
            telemetry::init(cli.log_format, "info");
            return fail(&err.to_string(), err.exit_code());
        }
    };
    telemetry::init(cli.log_format, gateway.log_filter());
    for warning in gateway.warnings() {
        tracing::warn!("{warning}");
    }
    tracing::debug!(config = %gateway.summary(), "effective configuration");
    let output = match &command {
        Command::Check => Some(gateway.check()),
        Command::Export => Some(gateway.export()),
        Command::Import { file } => Some(gateway.import(file)),
        Command::Start | Command::Version => None,
    };
    if let Some(output) = output {
        return match output {
            Ok(text) => {
                // A reader that went away (`moongate export | head`) is not an error.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", text.trim_end()).and_then(|()| out.flush());
                ExitCode::SUCCESS
            }
            Err(err) => fail(&err.to_string(), err.exit_code()),
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => return fail(&format!("cannot start the runtime: {err}"), 1),
    };
    runtime.block_on(async move {
        let handle = match gateway.start().await {
            Ok(h) => h,
            Err(err) => return fail(&err.to_string(), err.exit_code()),
        };
        shutdown::shutdown_signal().await;
        tracing::info!(
            "shutting down: draining in-flight requests (a second signal exits at once)"
        );
        handle.shutdown();
        tokio::spawn(async {
            shutdown::shutdown_signal().await;
            std::process::exit(1);
        });
        handle.wait().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

fn fail(message: &str, code: i32) -> ExitCode {
    tracing::error!("{message}");
    eprintln!("moongate: {message}");
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
