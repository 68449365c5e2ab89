//! The test kit's audio helpers and WAV builders, with the daemon started on
//! [`crate::common::program`].

// Each test file uses part of this module.
#![allow(dead_code, unused_imports)]

pub use sipconf_testkit::audio::*;
pub use sipconf_testkit::wav::*;

use crate::common::api::Api;
use crate::common::tempdir::TempDir;
use crate::common::{program, Daemon};

/// A daemon with the API and room 1000, `extra` appended to its configuration.
pub fn daemon(dir: &TempDir, extra: &str) -> (Daemon, Api) {
    let (daemon, api) = sipconf_testkit::audio::daemon(program(), dir, extra);
    (daemon.into(), api)
}
