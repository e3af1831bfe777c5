//! Which part of the fleet this process is: its role and its name.

use std::time::Duration;

/// What a node of the fleet does. One binary, one config: the role is chosen per node
/// (`[fleet] role`, or `phiwatch run --role`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything in one process on the SQLite store (no `[database]`).
    #[default]
    All,
    /// Tail, receive, spool and decode the configured sources; append numbered batches of
    /// decoded records with each source's checkpoint to the database.
    Collect,
    /// Hold the detector lease (or stand by for it) and apply the queued batches: enrich,
    /// judge with policies and plugins, store accesses, findings and plugin state, fenced.
    Detect,
    /// Send the notifications the detector queued in the outbox, beside any number of other
    /// dispatch nodes (each row is claimed by one of them at a time).
    Dispatch,
    /// Serve the console, pages and API, on the fleet's database (accounts, sessions, alerts, cases).
    Console,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Collect => "collect",
            Role::Detect => "detect",
            Role::Dispatch => "dispatch",
            Role::Console => "console",
        }
    }
}

/// `[fleet]`: this node's role and name.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    #[serde(default)]
    pub role: Role,
    /// This node's name in the lease, the queue and the outbox claims; default: the host name.
    /// Two nodes must not share one.
    #[serde(default)]
    pub node: Option<String>,
    /// How long the detector lease lasts unless renewed: a standby takes over this long
    /// after the active detector stops renewing it.
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            role: Role::All,
            node: None,
            lease_seconds: default_lease(),
        }
    }
}

fn default_lease() -> u64 {
    10
}

impl FleetConfig {
    /// The node's name: configured, else the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(host_name)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds.max(1))
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "phiwatch".to_owned())
}
