//! Kamailio (Debian `kamailio`) run by a test: in the foreground with its log
//! in a file, its PID and control files in the test's directory, optionally
//! inside a network namespace; stopped with its worker processes on drop.

use super::{free_port, tempdir::TempDir};
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

    /// Starts it on loopback at a free port with the configuration `config`
    /// writes for that port (kept in `dir` as `kamailio.cfg`).
    pub fn start_on_loopback(dir: &TempDir, config: impl FnOnce(u16) -> String) -> Kamailio {
        let port = free_port();
        let path = dir.path().join("kamailio.cfg");
        std::fs::write(&path, config(port)).expect("write config");
        Kamailio::start(
            dir,
            &path,
            &[],
            None,
            SocketAddr::from(([127, 0, 0, 1], port)),
        )
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

    /// Waits (at most 10 s) until an OPTIONS sent to it is answered 200 (by
    /// it, or by whoever its configuration relays OPTIONS to).
    pub async fn wait_until_answering(&self) {
        let probe = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let local = probe.local_addr().expect("addr");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 4096];
        for attempt in 0.. {
            assert!(
                Instant::now() < deadline,
                "kamailio never answered an OPTIONS with 200; its log:\n{}",
                self.log()
            );
            let options = format!(
                "OPTIONS sip:1000@{0} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKprobe{attempt}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p{attempt}\r\nTo: <sip:1000@{0}>\r\n\
                 Call-ID: probe{attempt}@{local}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                self.addr
            );
            let _ = probe.send_to(options.as_bytes(), self.addr).await;
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(300), probe.recv_from(&mut buf)).await
            {
                if buf[..n].starts_with(b"SIP/2.0 200") {
                    return;
                }
            }
        }
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
