//! baresip (Debian `baresip-core`) as a third-party phone in the tests: run
//! it from a configuration directory, dialling one URI, and read what it did.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts baresip with the configuration in `dir` for `seconds`, dialling
/// `uri` at once, its SIP traced to stdout.
pub fn run(dir: &Path, uri: &str, seconds: u32) -> Child {
    Command::new("baresip")
        .arg("-s")
        .arg("-f")
        .arg(dir)
        .arg("-e")
        .arg(format!("/dial {uri}"))
        .arg("-t")
        .arg(seconds.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start baresip")
}

/// Waits for baresip to end; returns its output, after asserting its call
/// was established, and the bridge's answer (from its 200 OK on).
pub async fn established_call(baresip: Child) -> (String, String) {
    let output = tokio::task::spawn_blocking(move || baresip.wait_with_output())
        .await
        .expect("join")
        .expect("baresip ran");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        log.contains("Call established"),
        "baresip's call was not established:\n{log}"
    );
    let answer_at = log
        .find("SIP/2.0 200 OK")
        .expect("a 200 in baresip's trace");
    let answer = log[answer_at..].to_string();
    (log, answer)
}
