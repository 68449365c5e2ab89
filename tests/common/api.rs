//! The test kit's API helpers, with the daemons started on [`super::program`].

pub use sipconf_testkit::api::*;

use super::{program, Daemon};
use std::path::Path;

/// A daemon with the API, its records in `store`; `extra` adds sections and rooms.
pub fn start_with_api(store: &Path, extra: &str) -> (Daemon, Api) {
    let (daemon, api) = sipconf_testkit::api::start_with_api(program(), store, extra);
    (daemon.into(), api)
}

/// Same as [`start_with_api`] on a port chosen by the caller (restarts).
pub fn start_with_api_on(port: u16, store: &Path, extra: &str) -> Daemon {
    sipconf_testkit::api::start_with_api_on(program(), port, store, extra).into()
}
