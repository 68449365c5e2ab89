//! A small network built by a test: one network namespace per host, all on
//! one Ethernet segment (a Linux bridge in a hub namespace, a veth pair per
//! host), IPv4 10.0.0.0/24. Needs root (CI runs as root). Everything lives
//! in namespaces named after this process, so parallel runs never meet, and
//! the namespaces (with their links) are deleted when the [`Lab`] is dropped.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The hosts of one test and the segment that joins them.
pub struct Lab {
    prefix: String,
    hosts: Vec<String>,
}

/// Runs `ip ARGS`, panicking with its error output if it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip: {e}"));
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether this process may build namespaces: in CI it must (a failure),
/// elsewhere the test says why it skips.
pub fn can_build(test: &str) -> bool {
    let probe = format!("sc-probe-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        let _ = Command::new("ip").args(["netns", "del", &probe]).output();
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: cannot create network namespaces (CI runs as root with iproute2)");
    }
    eprintln!("SKIPPED {test}: creating network namespaces needs root and `ip`");
    false
}

impl Lab {
    /// One namespace per name in `hosts`, host `i` at 10.0.0.(i+1).
    pub fn new(hosts: &[&str]) -> Lab {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "sc{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            prefix,
            hosts: Vec::new(),
        };
        let hub = lab.hub();
        ip(&["netns", "add", &hub]);
        lab.hosts.push("hub".to_string());
        ip(&["-n", &hub, "link", "add", "seg", "type", "bridge"]);
        ip(&[
            "-n",
            &hub,
            "link",
            "set",
            "seg",
            "type",
            "bridge",
            "forward_delay",
            "0",
        ]);
        ip(&["-n", &hub, "link", "set", "seg", "up"]);
        for (i, host) in hosts.iter().enumerate() {
            let netns = lab.netns(host);
            ip(&["netns", "add", &netns]);
            lab.hosts.push(host.to_string());
            let port = format!("p{i}");
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &netns,
            ]);
            ip(&["-n", &hub, "link", "set", &port, "master", "seg", "up"]);
            let address = format!("10.0.0.{}/24", i + 1);
            ip(&["-n", &netns, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", &netns, "link", "set", "eth0", "up"]);
            ip(&["-n", &netns, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.prefix)
    }

    /// The namespace of `host`.
    pub fn netns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// The address of `host`.
    pub fn addr(&self, host: &str) -> IpAddr {
        let index = self.hosts[1..]
            .iter()
            .position(|h| h == host)
            .unwrap_or_else(|| panic!("no host {host} in this lab"));
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, index as u8 + 1))
    }

    /// Moves the calling thread into `host`'s namespace: the sockets it
    /// opens and the programs it starts from then on live there.
    pub fn enter(&self, host: &str) {
        let path = format!("/var/run/netns/{}", self.netns(host));
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns(2) on a descriptor this function holds open; it
        // changes only the calling thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "setns into {path}: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and their peers.
        for host in &self.hosts {
            let netns = format!("{}-{host}", self.prefix);
            let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        }
    }
}
