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
            software_version: None,
        }
    }
}

/// Where status comes from: the host itself, or a made-up but plausible device (the
/// simulator), cheap enough for tens of thousands in one process.
pub enum StatusSource {
    Host(Box<Reporter>),
    Synthetic {
        seed: u64,
        reports: u64,
        started: std::time::Instant,
    },
}

impl StatusSource {
    pub fn synthetic(seed: u64) -> Self {
        StatusSource::Synthetic {
            seed,
            reports: 0,
            started: std::time::Instant::now(),
        }
    }

    pub fn collect(&mut self) -> Status {
        match self {
            StatusSource::Host(r) => r.collect(),
            StatusSource::Synthetic {
                seed,
                reports,
                started,
            } => {
                *reports += 1;
                let wave = (*seed).wrapping_mul(31).wrapping_add(*reports * 7) % 100;
                Status {
                    cpu_percent: Some(wave as f32 / 2.0),
                    memory_used_bytes: Some(256 * 1024 * 1024 + (wave << 20)),
                    memory_total_bytes: Some(1024 * 1024 * 1024),
                    disk_used_bytes: Some(4 * 1024 * 1024 * 1024),
                    disk_total_bytes: Some(16 * 1024 * 1024 * 1024),
                    uptime_s: Some(started.elapsed().as_secs()),
                    network: None,
                    agent_version: Some(env!("CARGO_PKG_VERSION").to_string()),
                    software_version: None,
                }
            }
        }
    }
}
