//! Running sipp (Debian `sip-tester`) against the daemon: the scenarios in
//! tests/sipp, one call each, bounded in time.

use super::tempdir::TempDir;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A scenario file of tests/sipp.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// Runs sipp as a UAC against the daemon at `bridge`: one call to `service`,
/// given at most `timeout_s` seconds. Returns whether sipp reported success,
/// and its error log.
pub fn run_uac(
    bridge: SocketAddr,
    dir: &TempDir,
    scenario_file: &Path,
    service: &str,
    timeout_s: u32,
) -> (bool, String) {
    let port = super::free_port();
    let media_port = super::free_port();
    let mut cmd = Command::new("sipp");
    cmd.current_dir(dir.path())
        .arg("-sf")
        .arg(scenario_file)
        .args(["-s", service, "-i", "127.0.0.1", "-mi", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-mp", &media_port.to_string()])
        .args(["-m", "1", "-l", "1", "-timeout", &timeout_s.to_string()])
        .args(["-timeout_error", "-trace_err", "-error_file", "errors.log"])
        .arg("-nostdin")
        .arg(bridge.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let output = cmd.output().expect("run sipp");
    let errors = std::fs::read_to_string(dir.path().join("errors.log")).unwrap_or_default();
    (
        output.status.success(),
        format!("{}\n{errors}", String::from_utf8_lossy(&output.stderr)),
    )
}
