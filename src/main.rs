//! The `sipconf` command: run the bridge (the default), check a configuration,
//! read the keypad digits in a recording, or load-test a running bridge. It
//! parses the command line and hands over; the bridge is the `sipconf` library.

use clap::{Parser, Subcommand};
use sipconf::config::{self, Config};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "sipconf",
    version,
    about = "An embedded SIP audio conference bridge"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Commands>,
    /// Configuration file (default: config/sipconf.toml).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the bridge (the default when no command is given).
    Run,
    /// Check a configuration file; print the first error with its key and line.
    CheckConfig,
    /// Decode the keypad digits in a WAV recording (PCM 16-bit, u-law or A-law,
    /// any rate, mono): one `DIGIT START_MS END_MS` line each, then `digits: ...`.
    Dtmf {
        /// The WAV file to read.
        file: PathBuf,
    },
    /// Simulate phones calling a running bridge and report what it did (exit 2 if a call failed).
    Loadtest(sipconf_loadtest::LoadtestArgs),
    /// The room's sound card (`[soundcard]`, built with the feature `soundcard`).
    Soundcard {
        /// List the capture and playback devices: the names `[soundcard]` takes.
        #[arg(long)]
        list: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // These read files or call a bridge: they need no configuration of their own.
    match &cli.command {
        Some(Commands::Dtmf { file }) => return dtmf(file),
        Some(Commands::Loadtest(args)) => return sipconf_loadtest::main(args),
        Some(Commands::Soundcard { list }) => return soundcard(*list),
        _ => {}
    }
    let path = config::resolve_path(cli.config);
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sipconf: configuration error: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command.unwrap_or(Commands::Run) {
        Commands::CheckConfig => {
            println!(
                "{}: ok ({} room{}, SIP on {}, RTP ports {}-{})",
                path.display(),
                config.rooms.len(),
                if config.rooms.len() == 1 { "" } else { "s" },
                config.sip.listen,
                config.media.rtp_ports.start,
                config.media.rtp_ports.end - 1
            );
            ExitCode::SUCCESS
        }
        Commands::Run => run(config),
        Commands::Dtmf { file } => dtmf(&file),
        Commands::Loadtest(args) => sipconf_loadtest::main(&args),
        Commands::Soundcard { list } => soundcard(list),
    }
}

/// `sipconf soundcard --list`: the devices `[soundcard]` can name.
fn soundcard(list: bool) -> ExitCode {
    if !list {
        eprintln!("sipconf soundcard: say what to do: --list");
        return ExitCode::from(2);
    }
    match sipconf::audio::soundcard::list_devices() {
        Ok(devices) => {
            println!("name\tdirection\tdescription");
            for device in devices {
                println!("{device}");
            }
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("sipconf soundcard: {why}");
            ExitCode::from(1)
        }
    }
}

/// `sipconf dtmf FILE`: what the bridge's digit receiver hears in a recording.
fn dtmf(file: &std::path::Path) -> ExitCode {
    match sipconf::audio::wav::decode_wav_digits(file) {
        Ok(reports) => {
            print!("{}", sipconf::media::dtmf::format_report(&reports));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sipconf: cannot read {}: {e}", file.display());
            ExitCode::from(1)
        }
    }
}

fn run(config: Config) -> ExitCode {
    init_logging(&config.log.level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sipconf-signal")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sipconf: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(sipconf::app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sipconf: {e}");
            ExitCode::from(1)
        }
    }
}

/// Logs to journald when systemd started us with its journal on stderr, else to
/// the terminal (stderr).
fn init_logging(level: &str) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIPCONF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            registry.with(journald).init();
            return;
        }
    }
    registry
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
}
