//! What the load generator asks of the system about itself and the bridge's
//! process: enough open files for thousands of phone sockets, its own CPU
//! time, and the unit of the kernel's per-process CPU figures. Sockets are
//! `sipconf::net`'s; nothing here touches one.
//!
//! Each unsafe block is one libc call on memory this module owns, and says
//! why it is sound.

/// Raises the open-file limit to its hard maximum (a phone is one socket);
/// returns the limit now in force.
// rlim_t is 32 bits wide on 32-bit Raspberry Pi OS.
#[allow(clippy::unnecessary_cast)]
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to read into and then pass back.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            }
        }
    }
    limit.rlim_cur as u64
}

/// CPU time (user + system) this process has used, in microseconds.
pub fn own_cpu_us() -> u64 {
    // SAFETY: rusage is plain old data; getrusage fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage to write into.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// The kernel's clock ticks per second, the unit of /proc/PID/stat times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}
