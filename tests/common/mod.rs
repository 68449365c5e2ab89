//! The test kit's daemon harness on this package's `sipconf` program: Cargo
//! tells only this package's tests where it built it, so every constructor
//! here passes `env!("CARGO_BIN_EXE_sipconf")` on to `sipconf_testkit`.

// Each test file uses part of this module.
#![allow(dead_code, unused_imports)]

pub mod api;
pub mod baresip;
pub mod kamailio;
pub mod netns;
pub mod sipp;
pub mod tone;

pub use sipconf_testkit::daemon::{free_port, require_tool, Addresses};
pub use sipconf_testkit::{room, tempdir};

use std::ops::{Deref, DerefMut};
use std::path::Path;

/// The program under test.
pub fn program() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sipconf"))
}

/// A running bridge: [`sipconf_testkit::daemon::Daemon`] on [`program`].
pub struct Daemon(sipconf_testkit::daemon::Daemon);

impl Daemon {
    pub fn start(media_extra: &str, rooms: &str) -> Daemon {
        Daemon(sipconf_testkit::daemon::Daemon::start(
            program(),
            media_extra,
            rooms,
        ))
    }

    pub fn start_with_env(media_extra: &str, rooms: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon(sipconf_testkit::daemon::Daemon::start_with_env(
            program(),
            media_extra,
            rooms,
            env,
        ))
    }

    pub fn start_on(port: u16, media_extra: &str, rooms: &str) -> Daemon {
        Daemon(sipconf_testkit::daemon::Daemon::start_on(
            program(),
            port,
            media_extra,
            rooms,
        ))
    }

    pub fn start_with_addresses(addresses: Addresses, media_extra: &str, rooms: &str) -> Daemon {
        Daemon(sipconf_testkit::daemon::Daemon::start_with_addresses(
            program(),
            addresses,
            media_extra,
            rooms,
        ))
    }

    pub fn start_in_netns(
        netns: &str,
        addresses: Addresses,
        media_extra: &str,
        rooms: &str,
    ) -> Daemon {
        Daemon(sipconf_testkit::daemon::Daemon::start_in_netns(
            program(),
            netns,
            addresses,
            media_extra,
            rooms,
        ))
    }

    pub fn start_with_sip(sip_extra: &str, media_extra: &str, rooms: &str) -> Daemon {
        Daemon(sipconf_testkit::daemon::Daemon::start_with_sip(
            program(),
            sip_extra,
            media_extra,
            rooms,
        ))
    }

    pub fn with_rooms() -> Daemon {
        Daemon(sipconf_testkit::daemon::Daemon::with_rooms(program()))
    }
}

impl From<sipconf_testkit::daemon::Daemon> for Daemon {
    fn from(daemon: sipconf_testkit::daemon::Daemon) -> Daemon {
        Daemon(daemon)
    }
}

impl Deref for Daemon {
    type Target = sipconf_testkit::daemon::Daemon;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
