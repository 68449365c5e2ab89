//! `sipconf loadtest`: N simulated phones against a running bridge, each a real
//! SIP call over UDP with real-paced G.711 or G.722 RTP, driven from one thread so the
//! generator stays far cheaper than what it measures.
//!
//! One loop does everything: it places calls at `--ramp` per second, and on an
//! absolute 20 ms schedule each phone reads what the bridge sent it since its
//! last tick (one `recvmmsg`, with kernel arrival timestamps, so the loop's own
//! delays do not show up as the bridge's) and sends its frame (one `sendmmsg`,
//! more frames in the same call if the loop fell behind). Phone sockets are
//! not in the epoll set, which holds only the SIP socket: over loopback the
//! bridge's send delivers into the phone's socket in the bridge's own context,
//! and a socket in an epoll set makes every delivery run epoll's wake-up
//! callback there too, a cost a phone across the network never puts on the
//! bridge. Like real phones with free-running clocks, the phones send at
//! different phases of the 20 ms tick (`PHASES` slots 1 ms apart). Talkers
//! send speech-like audio, the others low noise; every second one of the
//! first `PHASES` phones of a room, in an order that strides across the send
//! phases (`pip_sender`), sends a 2 kHz pip whose onset everyone else in the
//! room times: the bridge-added delay, over every phase between a packet's
//! arrival and the bridge's tick.
//! See `generator` for the loop, `audio` for the signals, `report` for the
//! figures and `limit` for `--find-limit`.
//!
//! A tool, not part of the bridge: it reaches the bridge only over SIP and
//! RTP, like any phone, and reads its CPU and memory from /proc.

pub mod audio; // what the phones send, and how a listener judges what it hears
pub mod flood; // --flood: INVITEs never ACKed from another address, meanwhile
mod generator; // the one loop: calls, RTP at 20 ms on 20 phases, pips, the window
pub mod limit; // --find-limit: the largest member count whose audio holds
pub mod report; // the figures, as text and JSON
pub mod sip; // one dialog per phone over a shared SIP socket
mod system; // open-file limit, CPU time, clock ticks

use report::Report;
use sipconf::media::Codec;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

/// The command line of `sipconf loadtest`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadtestArgs {
    /// The bridge's SIP address.
    #[arg(long, default_value = "127.0.0.1:5060")]
    pub target: SocketAddr,
    /// The room number dialled (the first room when `--rooms` > 1).
    #[arg(long, default_value = "1000")]
    pub room: String,
    /// Simulated phones.
    #[arg(long, default_value_t = 20)]
    pub members: usize,
    /// Talkers in each room; the others send low noise.
    #[arg(long, default_value_t = 3)]
    pub talkers: usize,
    /// Members are spread round-robin over rooms `room`, `room+1`, ...
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// pcmu, pcma or g722 (wideband: the bridge mixes at 16 kHz).
    #[arg(long, default_value = "pcmu", value_parser = parse_codec)]
    pub codec: Codec,
    /// Seconds measured once every call is up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Calls placed per second.
    #[arg(long, default_value_t = 100.0)]
    pub ramp: f64,
    /// The bridge's process id on this host: measure its CPU and RSS.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Also write the report here as JSON.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Local address for the phones' sockets.
    #[arg(long, default_value = "127.0.0.1")]
    pub local_ip: IpAddr,
    /// Find how many members the bridge carries before the audio breaks:
    /// run again and again, from `--members` up (doubling, then halving the
    /// gap), each run judged by what the phones heard (see `limit`).
    #[arg(long)]
    pub find_limit: bool,
    /// With `--find-limit`: never try more members than this.
    #[arg(long, default_value_t = 5000, value_name = "MEMBERS")]
    pub limit_max: usize,
    /// With `--find-limit`: seconds between runs (twice this after a run
    /// that did not hold). The bridge keeps a finished SIP transaction 32 s
    /// (64 x T1) to answer retransmissions, so a shorter pause lets one
    /// run's calls fill the tables of the next.
    #[arg(long, default_value_t = 35.0, value_name = "SECONDS")]
    pub limit_pause: f64,
    /// Meanwhile, flood the room with this many INVITEs a second that are
    /// never ACKed, from `--flood-from` (docs/security.md).
    #[arg(long, value_name = "PER_S")]
    pub flood: Option<f64>,
    /// The flood's source address.
    #[arg(long, default_value = "127.0.0.2")]
    pub flood_from: IpAddr,
}

fn parse_codec(text: &str) -> Result<Codec, String> {
    match text.to_ascii_lowercase().as_str() {
        "pcmu" | "ulaw" => Ok(Codec::Pcmu),
        "pcma" | "alaw" => Ok(Codec::Pcma),
        "g722" | "g.722" => Ok(Codec::G722),
        other => Err(format!("unknown codec {other:?} (pcmu, pcma or g722)")),
    }
}

/// Why a load test could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("--members must be at least 1 and --rooms between 1 and --members")]
    BadCounts,
    #[error("--rooms > 1 needs a numeric --room, not {0:?}")]
    RoomNotNumeric(String),
    #[error("--duration, --ramp and --flood must be positive, --limit-pause not negative")]
    BadTimes,
    #[error("cannot open sockets for {members} phones ({error}); the open-file limit is {limit}")]
    Sockets {
        members: usize,
        limit: u64,
        error: io::Error,
    },
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

/// Runs `sipconf loadtest`: prints the report and writes the JSON if asked.
/// Exits 1 when the test could not run, 2 when it ran but some call failed
/// (with `--find-limit`: when no member count held).
pub fn main(args: &LoadtestArgs) -> ExitCode {
    if args.find_limit {
        let found = limit::find(args, &mut io::stderr());
        return conclude(args, found, limit::LimitReport::to_text, |r| {
            r.members_held.is_none()
        });
    }
    let report = run(args, &mut io::stderr());
    conclude(args, report, Report::to_text, |r| r.calls.failed > 0)
}

/// Prints what a load test found and writes it as JSON to `--json`: exit 0,
/// 2 when `failed` says so, 1 when it could not run or the file could not be
/// written.
fn conclude<R: serde::Serialize>(
    args: &LoadtestArgs,
    result: Result<R, LoadError>,
    text: impl Fn(&R) -> String,
    failed: impl Fn(&R) -> bool,
) -> ExitCode {
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("sipconf loadtest: {e}");
            return ExitCode::from(1);
        }
    };
    print!("{}", text(&report));
    if let Some(path) = &args.json {
        if let Err(e) = write_json(path, &report) {
            eprintln!("sipconf loadtest: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if failed(&report) {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

/// Writes `value` to `path` as pretty JSON.
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> io::Result<()> {
    let json = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    std::fs::write(path, json + "\n")
}

/// Runs the load test; progress lines go to `progress` once a second.
pub fn run(args: &LoadtestArgs, progress: &mut dyn Write) -> Result<Report, LoadError> {
    if args.members == 0 || args.rooms == 0 || args.rooms > args.members {
        return Err(LoadError::BadCounts);
    }
    if !(args.duration > 0.0 && args.ramp > 0.0 && args.limit_pause >= 0.0) {
        return Err(LoadError::BadTimes);
    }
    let first_room: Option<u64> = args.room.parse().ok();
    if args.rooms > 1 && first_room.is_none() {
        return Err(LoadError::RoomNotNumeric(args.room.clone()));
    }
    let mut generator = generator::Generator::new(args)?;
    let flood = match args.flood {
        Some(rate) if rate > 0.0 => Some(flood::Flood::start(
            args.target,
            &args.room,
            args.flood_from,
            rate,
        )?),
        Some(_) => return Err(LoadError::BadTimes),
        None => None,
    };
    let ran = generator.run(progress);
    let flood = flood.map(flood::Flood::stop).transpose()?;
    ran?;
    Ok(Report {
        flood,
        ..generator.report()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_names_parse_in_either_case() {
        assert_eq!(parse_codec("PCMA"), Ok(Codec::Pcma));
        assert_eq!(parse_codec("pcmu"), Ok(Codec::Pcmu));
        assert_eq!(parse_codec("G722"), Ok(Codec::G722));
        assert!(parse_codec("g729").is_err());
    }
}
