//! The command line: `moongate [start|check|version]`, APISIX-style, with env var fallbacks.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

/// Moongate: an API gateway that runs Apache APISIX plugins and configs.
#[derive(Debug, Parser)]
#[command(name = "moongate", version, about, long_about = None)]
pub struct Cli {
    /// What to do (default: start).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Configuration file with overrides of the embedded defaults (default: conf/config.yaml if present).
    #[arg(short = 'c', long, env = "MOONGATE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log line format on stderr.
    #[arg(long, env = "MOONGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
}

/// Subcommands.
#[derive(Debug, Subcommand, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start the gateway in the foreground (the default).
    Start,
    /// Load and validate the configuration and the stored resources, print a summary, exit.
    #[command(alias = "test")]
    Check,
    /// Print the version.
    Version,
    /// Print every stored resource as a standalone file (APISIX's `conf/apisix.yaml` format).
    Export,
    /// Write the resources of a standalone file (`apisix.yaml` with `#END`, or `.json`) into the store.
    Import {
        /// The file to import.
        file: PathBuf,
    },
}
