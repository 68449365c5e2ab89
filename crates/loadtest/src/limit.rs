//! `sipconf loadtest --find-limit`: how many members this bridge carries
//! before the audio breaks. The load test runs again and again with more
//! members, doubling from `--members` until a run breaks, then halving the
//! gap between the last count that held and the first that broke until it is
//! within 5 %. Each run is judged by what the phones got, not by the bridge's
//! CPU: a run breaks when a call fails or cannot hang up, a frame is lost or
//! not sent, a listener hears nothing, or the bridge's packets come half a
//! frame late. A run in which the load generator itself could not keep up
//! proves nothing about the bridge: it counts as not holding, so the search
//! goes on below it, and if it was the first count that did not hold, the
//! answer is "at least" the last that did.

use crate::generator::PHASES;
use crate::report::Report;
use crate::{run, LoadError, LoadtestArgs};
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

/// A run breaks when the bridge's packets come this late at p99 against each
/// stream's 20 ms grid: half a frame, where a phone's jitter buffer of one
/// frame starts to run dry.
const LATENESS_LIMIT_MS: f64 = 10.0;
/// A run breaks when the bridge sent fewer of the packets due in the window:
/// a skipped tick is a 20 ms gap in every member's audio. The margin is the
/// window's edges (a packet either side).
const DELIVERED_MIN_PERCENT: f64 = 99.8;
/// The load generator could not keep up when it used this much of its core...
const GENERATOR_CPU_MAX_PERCENT: f64 = 90.0;
/// ...or when more than this share of its send phases in the window started
/// over 5 ms late.
const GENERATOR_LATE_MAX_PERCENT: f64 = 1.0;
/// Send phases per tick (`PHASES`), for the share of late ones.
const PHASES_PER_TICK: f64 = PHASES as f64;
/// The search stops when the gap between the last count that held and the
/// first that broke is at most this share of the former (or one member).
const RESOLUTION: f64 = 0.05;

/// What one run showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every call up, every frame delivered on time, every listener heard.
    Held,
    /// The audio broke.
    Broke,
    /// The load generator could not keep up: the run proves nothing.
    GeneratorLimited,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Held => "held",
            Outcome::Broke => "broke",
            Outcome::GeneratorLimited => "generator limited",
        }
    }
}

/// How long to wait after a run before the next. After a run that did not
/// hold, twice `pause_s`: calls the bridge set up but the generator gave up
/// on, or could not hang up, end only by the bridge's own timers (no ACK in
/// 32 s, no RTP in `media.rtp_timeout`, 30 s by default), and their BYEs'
/// transactions stay 32 s more.
fn pause_after(outcome: Outcome, pause_s: f64) -> Duration {
    let pause = Duration::from_secs_f64(pause_s);
    match outcome {
        Outcome::Held => pause,
        Outcome::Broke | Outcome::GeneratorLimited => 2 * pause,
    }
}

/// Judges one run, and says why it did not hold.
pub fn judge(report: &Report) -> (Outcome, Vec<String>) {
    let mut why = Vec::new();
    let g = &report.generator;
    let phase_sends = report.window_s * 50.0 * PHASES_PER_TICK;
    if g.cpu_percent_of_core >= GENERATOR_CPU_MAX_PERCENT {
        why.push(format!(
            "the load generator used {:.0} % of its core",
            g.cpu_percent_of_core
        ));
    }
    if g.late_ticks_in_window as f64 > phase_sends * GENERATOR_LATE_MAX_PERCENT / 100.0 {
        why.push(format!(
            "the load generator sent late {} times in the window",
            g.late_ticks_in_window
        ));
    }
    if !why.is_empty() {
        return (Outcome::GeneratorLimited, why);
    }
    let c = &report.calls;
    if c.failed > 0 {
        let reasons: Vec<String> = c
            .failures
            .iter()
            .map(|(r, n)| format!("{r} x{n}"))
            .collect();
        why.push(format!(
            "{} of {} calls failed ({})",
            c.failed,
            report.members,
            reasons.join(", ")
        ));
    }
    if c.hung_up_by_bridge > 0 {
        why.push(format!("the bridge hung up {} calls", c.hung_up_by_bridge));
    }
    if c.hangups_failed > 0 {
        // Calls the bridge still holds, sending to phones that are gone.
        why.push(format!(
            "{} hang-ups (BYE) were not answered with 2xx",
            c.hangups_failed
        ));
    }
    let r = &report.rtp;
    if r.lost_total > 0 {
        why.push(format!("{} frames lost", r.lost_total));
    }
    if r.stray_packets > 0 {
        // A stream the bridge left running toward a port a phone now uses:
        // a call it never ended, costing it a member's work every tick.
        why.push(format!(
            "{} packets came from streams that were not the phones' calls",
            r.stray_packets
        ));
    }
    // A member alone in its room is sent a packet a second by design.
    let rooms_are_shared = c.set_up >= 2 * report.rooms;
    if rooms_are_shared && r.member_ticks_delivered_percent < DELIVERED_MIN_PERCENT {
        why.push(format!(
            "the bridge sent {:.1} % of the member-ticks due",
            r.member_ticks_delivered_percent
        ));
    }
    if r.arrival_lateness_ms_p99 > LATENESS_LIMIT_MS {
        why.push(format!(
            "its packets came {:.1} ms late (p99)",
            r.arrival_lateness_ms_p99
        ));
    }
    if report.listeners.silent > 0 {
        why.push(format!(
            "{} listeners heard nothing",
            report.listeners.silent
        ));
    }
    let outcome = if why.is_empty() {
        Outcome::Held
    } else {
        Outcome::Broke
    };
    (outcome, why)
}

/// Which member count to try next, from what held and what broke so far.
#[derive(Clone, Debug)]
pub struct Search {
    start: usize,
    /// Fewer members than rooms cannot be spread over them.
    floor: usize,
    ceiling: usize,
    /// The most members that held, and the fewest that broke.
    held: Option<usize>,
    broke: Option<usize>,
}

impl Search {
    pub fn new(start: usize, floor: usize, ceiling: usize) -> Search {
        let ceiling = ceiling.max(floor);
        Search {
            start: start.clamp(floor, ceiling),
            floor,
            ceiling,
            held: None,
            broke: None,
        }
    }

    /// The next count to run, or None when the search is over.
    pub fn next(&self) -> Option<usize> {
        match (self.held, self.broke) {
            (None, None) => Some(self.start),
            (Some(held), None) if held >= self.ceiling => None,
            (Some(held), None) => Some(held.saturating_mul(2).min(self.ceiling)),
            (None, Some(broke)) if broke <= self.floor => None,
            (None, Some(broke)) => Some((broke / 2).max(self.floor)),
            (Some(held), Some(broke)) => {
                let close_enough = ((held as f64 * RESOLUTION) as usize).max(1);
                (broke - held > close_enough).then(|| held + (broke - held) / 2)
            }
        }
    }

    pub fn record(&mut self, members: usize, held: bool) {
        if held {
            self.held = Some(self.held.map_or(members, |h| h.max(members)));
        } else {
            self.broke = Some(self.broke.map_or(members, |b| b.min(members)));
        }
    }

    pub fn held(&self) -> Option<usize> {
        self.held
    }

    pub fn broke(&self) -> Option<usize> {
        self.broke
    }

    /// The search ended because the ceiling held, not because a count broke.
    pub fn reached_ceiling(&self) -> bool {
        self.broke.is_none() && self.held == Some(self.ceiling)
    }
}

/// One run of the search, in short.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub members: u64,
    pub outcome: Outcome,
    /// Why it did not hold (empty when it did).
    pub why: Vec<String>,
    pub calls_failed: u64,
    pub frames_lost: u64,
    pub member_ticks_delivered_percent: f64,
    pub arrival_lateness_ms_p99: f64,
    pub listeners_silent: u64,
    pub delay_ms_p50: Option<f64>,
    pub delay_ms_p99: Option<f64>,
    /// With `--pid`.
    pub bridge_cpu_percent_of_core: Option<f64>,
    pub bridge_cpu_us_per_member_tick: Option<f64>,
    pub bridge_rss_mb: Option<f64>,
    pub generator_cpu_percent_of_core: f64,
}

impl Step {
    fn of(report: &Report, outcome: Outcome, why: Vec<String>) -> Step {
        Step {
            members: report.members,
            outcome,
            why,
            calls_failed: report.calls.failed,
            frames_lost: report.rtp.lost_total,
            member_ticks_delivered_percent: report.rtp.member_ticks_delivered_percent,
            arrival_lateness_ms_p99: report.rtp.arrival_lateness_ms_p99,
            listeners_silent: report.listeners.silent,
            delay_ms_p50: report.delay_ms.as_ref().map(|d| d.p50_ms),
            delay_ms_p99: report.delay_ms.as_ref().map(|d| d.p99_ms),
            bridge_cpu_percent_of_core: report.bridge.as_ref().map(|b| b.cpu_percent_of_core),
            bridge_cpu_us_per_member_tick: report.bridge.as_ref().map(|b| b.cpu_us_per_member_tick),
            bridge_rss_mb: report.bridge.as_ref().map(|b| b.rss_mb),
            generator_cpu_percent_of_core: report.generator.cpu_percent_of_core,
        }
    }
}

/// Why the search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// The last count that held and the first that broke are within 5 %.
    Found,
    /// `--limit-max` held.
    ReachedLimitMax,
    /// The fewest members that did not hold were more than the load
    /// generator could keep up with: the bridge's own limit is higher.
    GeneratorLimited,
    /// Even the fewest members (one per room) broke.
    NothingHeld,
}

/// What `--find-limit` found; `--json` writes it.
#[derive(Clone, Debug, Serialize)]
pub struct LimitReport {
    pub target: String,
    pub codec: String,
    pub rooms: u64,
    pub talkers_per_room: u64,
    /// Each run's measurement window, seconds.
    pub window_s: f64,
    /// The most members that held.
    pub members_held: Option<u64>,
    /// The fewest members that did not hold (broke, or the generator could
    /// not keep up with them).
    pub members_broke: Option<u64>,
    pub ended: Ended,
    pub steps: Vec<Step>,
}

impl LimitReport {
    /// The report as a person reads it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sipconf loadtest --find-limit against {}: {} room(s), {} talker(s) per room, {}, window {:.1} s per run",
            self.target, self.rooms, self.talkers_per_room, self.codec, self.window_s
        );
        let _ = writeln!(
            out,
            "run  members  outcome            lost  delivered  late p99  delay p50/p99      bridge CPU  generator CPU"
        );
        for (n, step) in self.steps.iter().enumerate() {
            let delay = match (step.delay_ms_p50, step.delay_ms_p99) {
                (Some(p50), Some(p99)) => format!("{p50:.1} / {p99:.1} ms"),
                _ => "-".to_string(),
            };
            let bridge = step
                .bridge_cpu_percent_of_core
                .map_or("-".to_string(), |cpu| format!("{cpu:.0} %"));
            let _ = writeln!(
                out,
                "{:<4} {:<8} {:<18} {:<5} {:>7.1} %  {:>5.1} ms  {:<17} {:<11} {:.0} %",
                n + 1,
                step.members,
                step.outcome.as_str(),
                step.frames_lost,
                step.member_ticks_delivered_percent,
                step.arrival_lateness_ms_p99,
                delay,
                bridge,
                step.generator_cpu_percent_of_core
            );
            if !step.why.is_empty() {
                let _ = writeln!(out, "       {}", step.why.join("; "));
            }
        }
        let held = self.members_held.unwrap_or(0);
        let conclusion = match self.ended {
            Ended::Found => format!(
                "carries {held} members with unbroken audio; {} broke",
                self.members_broke.unwrap_or(0)
            ),
            Ended::ReachedLimitMax => {
                format!("carries {held} members with unbroken audio, the most tried (--limit-max)")
            }
            Ended::GeneratorLimited if self.members_held.is_some() => format!(
                "carries at least {held} members; at {} the load generator could not keep up \
                 on this machine: run it from another one to find the bridge's limit",
                self.members_broke.unwrap_or(0)
            ),
            Ended::GeneratorLimited => "the load generator could not keep up even with the \
                fewest members on this machine: run it from another one"
                .to_string(),
            Ended::NothingHeld => "no member count held".to_string(),
        };
        let _ = writeln!(out, "limit       {conclusion}");
        out
    }
}

/// Runs the search: progress lines go to `progress`. A run the load
/// generator could not keep up with counts as one that did not hold, so the
/// search goes on below it; if the first count that did not hold was such a
/// run, that is what ended the search.
pub fn find(args: &LoadtestArgs, progress: &mut dyn Write) -> Result<LimitReport, LoadError> {
    let mut search = Search::new(args.members, args.rooms, args.limit_max);
    let mut steps: Vec<Step> = Vec::new();
    let mut last: Option<Report> = None;
    while let Some(members) = search.next() {
        if let Some(previous) = steps.last() {
            std::thread::sleep(pause_after(previous.outcome, args.limit_pause));
        }
        let _ = writeln!(
            progress,
            "limit       run {}: {members} members",
            steps.len() + 1
        );
        let run_args = LoadtestArgs {
            members,
            ..args.clone()
        };
        let (report, outcome, why) = match run(&run_args, progress) {
            Ok(report) => {
                let (outcome, why) = judge(&report);
                (report, outcome, why)
            }
            // More phones than this machine lets the generator open.
            Err(e @ LoadError::Sockets { .. }) => {
                let report = Report {
                    members: members as u64,
                    ..Report::default()
                };
                (report, Outcome::GeneratorLimited, vec![e.to_string()])
            }
            Err(e) => return Err(e),
        };
        let _ = writeln!(
            progress,
            "limit       {members} members: {}{}{}",
            outcome.as_str(),
            if why.is_empty() { "" } else { ": " },
            why.join("; ")
        );
        search.record(members, outcome == Outcome::Held);
        steps.push(Step::of(&report, outcome, why));
        if report.window_s > 0.0 {
            last = Some(report);
        }
    }
    let first_failure = search.broke().and_then(|broke| {
        steps
            .iter()
            .find(|step| step.members == broke as u64)
            .map(|step| step.outcome)
    });
    let ended = match (search.held(), first_failure) {
        (_, Some(Outcome::GeneratorLimited)) => Ended::GeneratorLimited,
        (None, _) => Ended::NothingHeld,
        (Some(_), _) if search.reached_ceiling() => Ended::ReachedLimitMax,
        (Some(_), _) => Ended::Found,
    };
    let (target, codec, talkers_per_room, window_s) = match &last {
        Some(r) => (
            r.target.clone(),
            r.codec.clone(),
            r.talkers_per_room,
            r.window_s,
        ),
        None => (
            args.target.to_string(),
            args.codec.encoding_name().to_string(),
            args.talkers as u64,
            args.duration,
        ),
    };
    Ok(LimitReport {
        target,
        codec,
        rooms: args.rooms as u64,
        talkers_per_room,
        window_s,
        members_held: search.held().map(|n| n as u64),
        members_broke: search.broke().map(|n| n as u64),
        ended,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Calls, Generator, Listeners, Rtp};

    /// Runs a search against a bridge that carries `capacity` members.
    fn search_against(start: usize, floor: usize, ceiling: usize, capacity: usize) -> Vec<usize> {
        let mut search = Search::new(start, floor, ceiling);
        let mut tried = Vec::new();
        while let Some(members) = search.next() {
            assert!(tried.len() < 64, "the search does not end: {tried:?}");
            tried.push(members);
            search.record(members, members <= capacity);
        }
        tried
    }

    #[test]
    fn the_search_doubles_then_halves_the_gap_to_within_five_percent() {
        let tried = search_against(20, 1, 5000, 1234);
        assert_eq!(
            tried,
            [20, 40, 80, 160, 320, 640, 1280, 960, 1120, 1200, 1240]
        );
        let mut search = Search::new(20, 1, 5000);
        for &n in &tried {
            search.record(n, n <= 1234);
        }
        // 1240 - 1200 is within 5 % of 1200: one more run would not say much more.
        assert_eq!((search.held(), search.broke()), (Some(1200), Some(1240)));
    }

    #[test]
    fn small_limits_are_found_to_the_member() {
        assert_eq!(search_against(4, 1, 5000, 10), [4, 8, 16, 12, 10, 11]);
        assert_eq!(search_against(4, 1, 5000, 3), [4, 2, 3]);
    }

    #[test]
    fn the_search_stops_at_the_ceiling_and_at_the_floor() {
        let tried = search_against(20, 1, 100, 1000);
        assert_eq!(tried, [20, 40, 80, 100]);
        let mut search = Search::new(20, 1, 100);
        for n in tried {
            search.record(n, true);
        }
        assert!(search.reached_ceiling());
        assert_eq!(search_against(8, 4, 100, 0), [8, 4]);
    }

    fn report_that_held() -> Report {
        Report {
            members: 40,
            rooms: 1,
            window_s: 10.0,
            calls: Calls {
                attempted: 40,
                set_up: 40,
                ..Calls::default()
            },
            rtp: Rtp {
                member_ticks_delivered_percent: 100.0,
                arrival_lateness_ms_p99: 0.4,
                ..Rtp::default()
            },
            listeners: Listeners {
                count: 37,
                ..Listeners::default()
            },
            generator: Generator {
                cpu_percent_of_core: 12.0,
                ..Generator::default()
            },
            ..Report::default()
        }
    }

    #[test]
    fn a_run_that_did_not_hold_leaves_the_bridge_twice_the_pause_to_clean_up() {
        assert_eq!(pause_after(Outcome::Held, 35.0), Duration::from_secs(35));
        assert_eq!(pause_after(Outcome::Broke, 35.0), Duration::from_secs(70));
        assert_eq!(
            pause_after(Outcome::GeneratorLimited, 1.0),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn a_clean_run_holds() {
        assert_eq!(judge(&report_that_held()), (Outcome::Held, vec![]));
    }

    #[test]
    fn failed_calls_and_hang_ups_lost_frames_strays_skipped_ticks_lateness_and_silence_each_break_a_run(
    ) {
        let mut failed = report_that_held();
        failed.calls.failed = 6;
        failed.calls.failures.insert("486 Busy Here".into(), 6);
        let (outcome, why) = judge(&failed);
        assert_eq!(outcome, Outcome::Broke);
        assert_eq!(why, ["6 of 40 calls failed (486 Busy Here x6)"]);

        let mut lost = report_that_held();
        lost.rtp.lost_total = 3;
        assert_eq!(judge(&lost).1, ["3 frames lost"]);

        let mut stray = report_that_held();
        stray.rtp.stray_packets = 250;
        assert_eq!(
            judge(&stray).1,
            ["250 packets came from streams that were not the phones' calls"]
        );

        let mut stuck = report_that_held();
        stuck.calls.hangups_failed = 4;
        assert_eq!(
            judge(&stuck).1,
            ["4 hang-ups (BYE) were not answered with 2xx"]
        );

        let mut skipped = report_that_held();
        skipped.rtp.member_ticks_delivered_percent = 99.0;
        assert_eq!(judge(&skipped).0, Outcome::Broke);

        let mut late = report_that_held();
        late.rtp.arrival_lateness_ms_p99 = 12.5;
        assert_eq!(judge(&late).1, ["its packets came 12.5 ms late (p99)"]);

        let mut silent = report_that_held();
        silent.listeners.silent = 2;
        assert_eq!(judge(&silent).1, ["2 listeners heard nothing"]);
    }

    #[test]
    fn members_alone_in_their_rooms_are_not_judged_by_packets_delivered() {
        let mut idle = report_that_held();
        idle.rooms = 40;
        idle.rtp.member_ticks_delivered_percent = 2.0;
        assert_eq!(judge(&idle).0, Outcome::Held);
    }

    #[test]
    fn a_generator_that_could_not_keep_up_proves_nothing() {
        let mut busy = report_that_held();
        busy.generator.cpu_percent_of_core = 95.0;
        busy.rtp.lost_total = 10;
        assert_eq!(judge(&busy).0, Outcome::GeneratorLimited);

        // 10 s x 50 ticks x 20 phases: more than 1 % late is 101 of them.
        let mut late = report_that_held();
        late.generator.late_ticks_in_window = 100;
        assert_eq!(judge(&late).0, Outcome::Held);
        late.generator.late_ticks_in_window = 101;
        assert_eq!(judge(&late).0, Outcome::GeneratorLimited);
    }
}
