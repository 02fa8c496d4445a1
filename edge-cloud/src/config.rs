//! The edge's command line: the settings every node has (`EDGE_…` variables, a TOML
//! file, flags), with the edge's own defaults.

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use operator_api::settings::{self, ConfigError, Dialect, NodeArgs, NodeDefaults, NodeSettings};
use serde::Deserialize;

pub const DEFAULTS: NodeDefaults = NodeDefaults {
    listen: ([127, 0, 0, 1], 9443),
    data_dir: "data/edge",
    db_file: "edge.db",
};

#[derive(Debug, Parser)]
#[command(
    name = "edge-cloud",
    version,
    about = "An edge cloud of the device federation: the site server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line, with every setting also readable from `EDGE_…`.
    pub fn from_env_and_args() -> Result<Self, clap::Error> {
        let matches = settings::for_node(Self::command(), "EDGE", DEFAULTS).get_matches();
        Self::from_arg_matches(&matches)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the site API.
    Serve(Box<ServeArgs>),
    /// Print the database schema DDL this binary creates.
    PrintSchema {
        #[arg(long, value_enum, default_value_t = Dialect::Mysql)]
        dialect: Dialect,
    },
}

#[derive(Debug, Default, Clone, Args, Deserialize)]
pub struct ServeArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub node: NodeArgs,
}

/// The resolved settings of an edge.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: NodeSettings,
}

impl Settings {
    pub fn with_data_dir(data_dir: &std::path::Path) -> Self {
        Self {
            node: NodeSettings::with_data_dir(DEFAULTS, data_dir),
        }
    }

    /// Layers the config file (if any) under the flags and variables in `args`.
    pub fn resolve(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.node.config {
            Some(path) => settings::read_file::<ServeArgs>(path)?,
            None => ServeArgs::default(),
        };
        Ok(Self {
            node: NodeSettings::resolve(DEFAULTS, args.node, file.node)?,
        })
    }
}
