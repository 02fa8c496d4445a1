//! Where everything lives: one directory per process under the data directory, the
//! logs side by side, and the ports each process listens on.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// The data directory's layout. Paths are absolute, so the printed commands work
/// from any directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// Where the running federation's nodes listen (see `Federation::publish`).
    pub fn endpoints_file(&self) -> PathBuf {
        self.root.join("endpoints.json")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn log(&self, process: &str) -> PathBuf {
        self.logs().join(format!("{process}.log"))
    }

    pub fn center_dir(&self) -> PathBuf {
        self.root.join("center")
    }

    /// The development CA the center generates in its data directory on first start.
    pub fn center_ca(&self) -> PathBuf {
        self.center_dir().join("tls").join("ca.crt")
    }

    pub fn edge_dir(&self, edge: &str) -> PathBuf {
        self.root.join(edge)
    }

    pub fn edge_ca(&self, edge: &str) -> PathBuf {
        self.edge_dir(edge).join("tls").join("ca.crt")
    }

    pub fn simulator_dir(&self, edge: &str) -> PathBuf {
        self.root.join(format!("devices-{edge}"))
    }
}

/// Edge `i` (0-based) is called `edge-{i+1}`, at the center and on disk.
pub fn edge_name(i: usize) -> String {
    format!("edge-{}", i + 1)
}

/// The ports asked for: the center's API on the base, its link endpoint on the next,
/// then per edge its site API and its device endpoint. A base of 0 asks for 0
/// everywhere, so each process binds a free port and announces it.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    base: u16,
}

impl Ports {
    pub fn new(base: u16, edges: usize) -> Result<Self, Error> {
        let last = u32::from(base) + 1 + 2 * u32::try_from(edges).unwrap_or(u32::MAX);
        if base != 0 && last > u32::from(u16::MAX) {
            return Err(Error::Options(format!(
                "--port-base {base} leaves no room for {edges} edges (the last port would be {last})"
            )));
        }
        Ok(Self { base })
    }

    fn at(&self, offset: usize) -> u16 {
        if self.base == 0 {
            return 0;
        }
        // `new` checked that every offset in use fits.
        self.base
            .saturating_add(u16::try_from(offset).unwrap_or(u16::MAX))
    }

    pub fn center_api(&self) -> u16 {
        self.at(0)
    }

    pub fn center_link(&self) -> u16 {
        self.at(1)
    }

    pub fn edge_api(&self, i: usize) -> u16 {
        self.at(2 + 2 * i)
    }

    pub fn edge_devices(&self, i: usize) -> u16 {
        self.at(3 + 2 * i)
    }
}
