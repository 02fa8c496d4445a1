//! Device status from `sysinfo`: CPU, memory, disk, uptime, network, agent version.

use shared_proto::southbound::{NetworkInterface, Status};
use sysinfo::{Disks, Networks, System};

pub struct Reporter {
    system: System,
    disks: Disks,
    networks: Networks,
}

impl Default for Reporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter {
    pub fn new() -> Self {
        Self {
            system: System::new(),
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
        }
    }

    pub fn collect(&mut self) -> Status {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        let (used, total) = self.disks.list().iter().fold((0u64, 0u64), |(u, t), d| {
            (
                u + d.total_space().saturating_sub(d.available_space()),
                t + d.total_space(),
            )
        });
        let mut network: Vec<NetworkInterface> = self
            .networks
            .iter()
            .map(|(name, data)| NetworkInterface {
                name: name.clone(),
                rx_bytes: data.total_received(),
                tx_bytes: data.total_transmitted(),
                ipv4: data
                    .ip_networks()
                    .iter()
                    .filter(|n| n.addr.is_ipv4())
                    .map(|n| n.addr.to_string())
                    .collect(),
            })
            .collect();
        network.sort_by(|a, b| a.name.cmp(&b.name));
        Status {
            // Rounded so that noise does not make every report a change.
            cpu_percent: Some((self.system.global_cpu_usage() * 10.0).round() / 10.0),
            memory_used_bytes: Some(self.system.used_memory()),
            memory_total_bytes: Some(self.system.total_memory()),
            disk_used_bytes: Some(used),
            disk_total_bytes: Some(total),
            uptime_s: Some(System::uptime()),
            network: Some(network),
            agent_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        }
    }
}
