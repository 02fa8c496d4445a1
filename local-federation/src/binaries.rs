//! The three binaries a federation runs: built by cargo in this binary's own profile,
//! or taken as they are from a directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::Error;

#[derive(Debug, Clone)]
pub struct Binaries {
    pub center: PathBuf,
    pub edge: PathBuf,
    pub agent: PathBuf,
}

const CENTER: &str = "center-cloud";
const EDGE: &str = "edge-cloud";
const AGENT: &str = "device-agent";

impl Binaries {
    /// The binaries in `dir`, which must all be there.
    pub fn in_dir(dir: &Path) -> Result<Self, Error> {
        let find = |name: &str| {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(Error::MissingBinary { path });
            }
            // Absolute, since each child runs in its own directory.
            path.canonicalize()
                .map_err(Error::io(format!("reading {}", path.display())))
        };
        Ok(Self {
            center: find(CENTER)?,
            edge: find(EDGE)?,
            agent: find(AGENT)?,
        })
    }

    /// Builds the three packages of this workspace with `$CARGO` (or `cargo`), release
    /// when this binary is a release build. Cargo's progress goes to the terminal; the
    /// executables' paths come from its JSON report, which stays right whatever target
    /// directory or profile layout is configured.
    pub async fn build() -> Result<Self, Error> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // The workspace this binary was built from, so the build works from any
        // directory and never picks up another checkout.
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut command = tokio::process::Command::new(&cargo);
        command
            .arg("build")
            .arg("--manifest-path")
            .arg(&manifest)
            .arg("--message-format=json-render-diagnostics");
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        // This package too, so that features resolve as they did for `cargo run -p
        // local-federation`, and nothing already built is built again.
        for package in [env!("CARGO_PKG_NAME"), CENTER, EDGE, AGENT] {
            command.arg("-p").arg(package);
        }
        // Under `cargo run` this process has the variables cargo sets for a crate
        // (CARGO_MANIFEST_DIR, CARGO_PKG_NAME...). Some build scripts rerun when one
        // of those changes (ring's does for CARGO_MANIFEST_DIR), which would rebuild
        // half the tree here and again at the next plain `cargo build`.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(set_by_cargo_for_a_crate) {
                command.env_remove(&key);
            }
        }
        let output = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .await
            .map_err(Error::io(format!(
                "running {} (set CARGO, or use --bin-dir)",
                Path::new(&cargo).display()
            )))?;
        if !output.status.success() {
            return Err(Error::Build(format!(
                "cargo build of {CENTER}, {EDGE} and {AGENT} failed ({}); its errors are above",
                output.status
            )));
        }
        let report = String::from_utf8_lossy(&output.stdout);
        let find = |name: &str| {
            executable(&report, name)
                .ok_or_else(|| Error::Build(format!("cargo reported no executable for {name}")))
        };
        Ok(Self {
            center: find(CENTER)?,
            edge: find(EDGE)?,
            agent: find(AGENT)?,
        })
    }
}

/// Whether `key` is one of the variables cargo sets for the crate it runs.
fn set_by_cargo_for_a_crate(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        )
}

/// The executable of binary target `name` in cargo's `--message-format=json` lines.
fn executable(report: &str, name: &str) -> Option<PathBuf> {
    report
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"))
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inner_build_loses_what_cargo_run_set_and_keeps_what_configures_cargo() {
        for set in [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
        ] {
            assert!(set_by_cargo_for_a_crate(set), "{set} is dropped");
        }
        for kept in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO_PROFILE_RELEASE_LTO",
            "CARGO_INCREMENTAL",
        ] {
            assert!(!set_by_cargo_for_a_crate(kept), "{kept} is kept");
        }
    }
}
