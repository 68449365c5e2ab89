//! The daemon harness: runs the real `sipconf` program on loopback with a
//! configuration of the test's choosing, collects its log, and stops it with
//! SIGTERM; and the ports, addresses and temporary directories it needs.
//!
//! The caller names the program (Cargo tells only the tests of the package
//! that builds it where it is: `env!("CARGO_BIN_EXE_sipconf")`). Nothing
//! here knows the bridge's internals: it speaks to it only through its
//! configuration file, its log and signals.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::tempdir::TempDir;

/// A port free for both UDP and TCP on 127.0.0.1, never handed out twice
/// by one test process.
///
/// A port from the kernel's ephemeral range (32768 up) is free only at the
/// moment it is checked: a parallel test's client connection, a TIME_WAIT
/// socket or another `free_port` could take it before the daemon binds it,
/// and the daemon would fail to start ("Address already in use"). So the
/// ports come from 12000-19999, below the ephemeral range, below the RTP
/// blocks of [`rtp_range`] and below the default configuration's RTP ports
/// (20000-29999) that a bridge running on the same machine uses. Each
/// process starts at its own offset, steps by 4 (sipp also uses its media
/// port + 2) and skips ports someone else holds.
pub fn free_port() -> u16 {
    const LOW: u32 = 12_000;
    const SLOTS: u32 = 2_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 50) * 40;
    for _ in 0..SLOTS {
        let slot = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SLOTS;
        let port = (LOW + slot * 4) as u16;
        let Ok(_udp) = UdpSocket::bind(("127.0.0.1", port)) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 12000-19999 on 127.0.0.1");
}

/// A block of RTP ports for one daemon, different for every daemon a test
/// process starts (ports taken by someone else are skipped by the bridge).
fn rtp_range() -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let block = NEXT.fetch_add(1, Ordering::Relaxed);
    let base = 30_000 + ((std::process::id() as u16 % 40) * 700) + (block % 7) * 100;
    (base, base + 99)
}

/// Where a test daemon listens for SIP, what its SDP answers name
/// (`media.address`; `None`: found per caller) and where its RTP sockets
/// are bound (`media.bind_address`).
#[derive(Clone, Copy)]
pub struct Addresses {
    pub sip: IpAddr,
    pub media: Option<IpAddr>,
    pub bind: IpAddr,
}

impl Addresses {
    /// Everything on `host`.
    pub fn on(host: IpAddr) -> Addresses {
        Addresses {
            sip: host,
            media: Some(host),
            bind: host,
        }
    }

    /// Everything on the IPv6 loopback.
    pub fn ipv6_loopback() -> Addresses {
        Addresses::on(IpAddr::from(Ipv6Addr::LOCALHOST))
    }

    /// Dual-stack sockets, as a bridge bound to `::` has, on loopback alone:
    /// IPv6 sockets on the IPv4-mapped loopback, which carry IPv4 and report
    /// IPv4 peers as ::ffff:a.b.c.d. The SDP address is found per caller.
    pub fn dual_stack_loopback() -> Addresses {
        let mapped = IpAddr::from(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        Addresses {
            sip: mapped,
            media: None,
            bind: mapped,
        }
    }
}

/// A running bridge.
pub struct Daemon {
    child: Child,
    pub sip: SocketAddr,
    pub config_path: PathBuf,
    /// Everything the daemon logged so far (stderr lines).
    pub log: Arc<Mutex<Vec<String>>>,
    _dir: TempDir,
}

impl Daemon {
    /// Starts `program` (the `sipconf` binary) with `[sip]` on a free
    /// loopback port, a private RTP range (unless `media_extra` sets
    /// `rtp_ports`), `media_extra` in `[media]` and `rooms` appended to the
    /// configuration (rooms, other sections).
    pub fn start(program: &Path, media_extra: &str, rooms: &str) -> Daemon {
        Daemon::start_with_env(program, media_extra, rooms, &[])
    }

    /// As [`Daemon::start`], with extra environment variables for the daemon.
    pub fn start_with_env(
        program: &Path,
        media_extra: &str,
        rooms: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::start_at(
            program,
            None,
            Addresses::on(IpAddr::from([127, 0, 0, 1])),
            ("", media_extra, rooms),
            env,
        )
    }

    /// As [`Daemon::start`], with `sip_extra` (keys of `[sip]`, one a line).
    pub fn start_with_sip(
        program: &Path,
        sip_extra: &str,
        media_extra: &str,
        rooms: &str,
    ) -> Daemon {
        Daemon::start_at(
            program,
            None,
            Addresses::on(IpAddr::from([127, 0, 0, 1])),
            (sip_extra, media_extra, rooms),
            &[],
        )
    }

    /// As [`Daemon::start`], with SIP and media on the addresses given.
    pub fn start_with_addresses(
        program: &Path,
        addresses: Addresses,
        media_extra: &str,
        rooms: &str,
    ) -> Daemon {
        Daemon::start_at(program, None, addresses, ("", media_extra, rooms), &[])
    }

    /// As [`Daemon::start`], with SIP on loopback port `port` (bridges that
    /// must know each other's address before they start, restarts).
    pub fn start_on(program: &Path, port: u16, media_extra: &str, rooms: &str) -> Daemon {
        Daemon::start_at_port(
            program,
            None,
            Some(port),
            Addresses::on(IpAddr::from([127, 0, 0, 1])),
            ("", media_extra, rooms),
            &[],
        )
    }

    /// As [`Daemon::start_with_addresses`], inside the network namespace
    /// `netns` (made by `ip netns add`): the program runs under
    /// `ip netns exec`, which execs it, so signals still reach it directly.
    pub fn start_in_netns(
        program: &Path,
        netns: &str,
        addresses: Addresses,
        media_extra: &str,
        rooms: &str,
    ) -> Daemon {
        Daemon::start_at(
            program,
            Some(netns),
            addresses,
            ("", media_extra, rooms),
            &[],
        )
    }

    fn start_at(
        program: &Path,
        netns: Option<&str>,
        addresses: Addresses,
        extra: (&str, &str, &str),
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::start_at_port(program, netns, None, addresses, extra, env)
    }

    fn start_at_port(
        program: &Path,
        netns: Option<&str>,
        port: Option<u16>,
        addresses: Addresses,
        (sip_extra, media_extra, rooms): (&str, &str, &str),
        env: &[(&str, &str)],
    ) -> Daemon {
        let port = port.unwrap_or_else(free_port);
        let sip = SocketAddr::new(addresses.sip, port);
        let (low, high) = rtp_range();
        let dir = TempDir::new("sipconf-test");
        let config_path = dir.path().join("sipconf.toml");
        // Each daemon keeps its records in its own directory unless the test
        // chooses a store (restart tests share one across two daemons).
        let store = if rooms.contains("[store]") {
            String::new()
        } else {
            format!(
                "[store]\npath = \"{}\"\n\n",
                dir.path().join("sipconf.db").display()
            )
        };
        let address = match addresses.media {
            Some(address) => format!("address = \"{address}\"\n"),
            None => String::new(),
        };
        let bind = addresses.bind;
        // A test may choose the RTP ports (restart tests keep them).
        let rtp_ports = if media_extra.contains("rtp_ports") {
            String::new()
        } else {
            format!("rtp_ports = \"{low}-{high}\"\n")
        };
        let config = format!(
            "[sip]\nlisten = \"{sip}\"\nt1_ms = 100\n{sip_extra}\n\n[media]\n{address}bind_address = \"{bind}\"\n{rtp_ports}{media_extra}\n\n[log]\nlevel = \"info,sipconf=debug\"\n\n{store}{rooms}\n"
        );
        std::fs::write(&config_path, config).expect("write config");
        let mut command = match netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(program);
                command
            }
            None => Command::new(program),
        };
        let mut child = command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env_remove("SIPCONF_LOG")
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("sipconf ready") {
                    let _ = ready_tx.send(());
                }
                if std::env::var_os("SIPCONF_TEST_LOG").is_some() {
                    eprintln!("[daemon] {line}");
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            panic!(
                "sipconf did not become ready; log:\n{}",
                log.lock().expect("log").join("\n")
            );
        }
        Daemon {
            child,
            sip,
            config_path,
            log,
            _dir: dir,
        }
    }

    /// The default test rooms: 1000 (roomy) and 2000 (two members at most).
    pub fn with_rooms(program: &Path) -> Daemon {
        Daemon::start(
            program,
            "",
            "[[room]]\nnumber = \"1000\"\n\n[[room]]\nnumber = \"2000\"\nmax_members = 2\n",
        )
    }

    /// Whether some log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Waits (bounded) until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.logged(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.logged(needle)
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        None
    }

    /// The process id (to freeze it with SIGSTOP, as a hung box would be).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether an external tool is on PATH. In CI (`CI` set) a missing tool is a
/// failure, never a silent skip; locally the test says clearly why it skips.
pub fn require_tool(tool: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: `{tool}` is required in CI but is not installed (.ci/run installs it)");
        }
        eprintln!(
            "SKIPPED {test}: `{tool}` is not installed (apt-get install it to run this test)"
        );
    }
    found
}
