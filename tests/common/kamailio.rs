//! Kamailio (Debian `kamailio`) run by a test: in the foreground with its log
//! in a file, its PID and control files in the test's directory, optionally
//! inside a network namespace; stopped with its worker processes on drop.

use super::tempdir::TempDir;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Kamailio {
    child: Child,
    log: PathBuf,
    /// Where it listens for SIP.
    pub addr: SocketAddr,
}

impl Kamailio {
    /// Starts `kamailio -f config` with the preprocessor `defines`
    /// (`NAME=value`, as `-A` takes them), in `netns` if given.
    pub fn start(
        dir: &TempDir,
        config: &Path,
        defines: &[String],
        netns: Option<&str>,
        addr: SocketAddr,
    ) -> Kamailio {
        let log = dir.path().join("kamailio.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = match netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, "kamailio"]);
                command
            }
            None => Command::new("kamailio"),
        };
        command.arg("-f").arg(config);
        for define in defines {
            command.args(["-A", define]);
        }
        let child = command
            // Foreground, log to stderr, no PID or control files anywhere shared.
            .args(["-DD", "-E", "-w"])
            .arg(dir.path())
            .args(["-Y", &dir.path().display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start kamailio");
        Kamailio { child, log, addr }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until its log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log().contains(needle)
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // SIGTERM makes the main process stop its workers too.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
