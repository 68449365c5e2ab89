//! Clips in the mix: a file, a sentence or a tone, already decoded to the
//! conference rate on the signalling plane, played into a whole conference
//! (everyone hears it, talkers too) or into one member's ears. One player per
//! conference mix and per member slot, allocated at start; playing reads the
//! shared `Arc<[i16]>` and copies one frame per tick, nothing more.
//!
//! Clips are made at 8 kHz (`CONFERENCE_RATE_HZ`); into a 16 kHz mix, or to
//! a wideband member, a frame is brought up with the streaming
//! interpolator, whose state each player keeps: same pitch, same level.
//!
//! The signalling side keeps its own reference to every clip until it has
//! seen the clip's `Event::ClipDone`, so the last reference is never dropped
//! here and the tick never frees memory.

use std::sync::Arc;

use crate::media::mixer::{frame_samples, soft_limit, Mix, FRAME_SAMPLES_MAX};
use crate::media::resample::{Interpolator2x, Kernel2x, NARROW_RATE_HZ};
use crate::media::MemberKey;

/// Where a clip plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClipTarget {
    /// Into a conference mix: every member of it hears the clip.
    Mix(u32),
    /// Into one member's output only.
    Member(MemberKey),
}

/// Why a clip stopped playing (`Event::ClipDone`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipEnd {
    /// Played to its end (never, for a looped clip).
    Finished,
    /// `Command::StopClip`.
    Stopped,
    /// Another clip was started on the same target.
    Replaced,
    /// The member left, the conference emptied, or the target never existed.
    Gone,
}

/// One target's clip and how far it has played.
#[derive(Debug, Default)]
pub struct ClipPlayer {
    clip: Option<Arc<[i16]>>,
    position: usize,
    looped: bool,
    id: u64,
}

impl ClipPlayer {
    pub fn is_playing(&self) -> bool {
        self.clip.is_some()
    }

    /// Starts `clip` from its beginning; returns the id of the clip it replaced.
    pub fn start(&mut self, clip: Arc<[i16]>, looped: bool, id: u64) -> Option<u64> {
        let replaced = self.stop();
        self.position = 0;
        self.looped = looped && !clip.is_empty();
        self.id = id;
        self.clip = Some(clip);
        replaced
    }

    /// Stops; returns the id of the clip that was playing.
    pub fn stop(&mut self) -> Option<u64> {
        self.clip.take().map(|_| self.id)
    }

    /// Writes the next `out.len()` samples (silence past the end) and returns
    /// the clip's id when it ended within this frame.
    pub fn next_frame(&mut self, out: &mut [i16]) -> Option<u64> {
        let mut written = 0;
        let mut ended = false;
        if let Some(clip) = self.clip.as_deref() {
            while written < out.len() {
                let left = clip.len().saturating_sub(self.position);
                if left == 0 {
                    if self.looped {
                        self.position = 0;
                        continue;
                    }
                    break;
                }
                let take = left.min(out.len() - written);
                out[written..written + take]
                    .copy_from_slice(&clip[self.position..self.position + take]);
                self.position += take;
                written += take;
            }
            ended = !self.looped && self.position >= clip.len();
        }
        out[written..].fill(0);
        if ended {
            self.stop()
        } else {
            None
        }
    }
}

/// Every player of the media thread, and the clip ends of the current tick.
pub struct Clips {
    mixes: Box<[ClipPlayer]>,
    members: Box<[ClipPlayer]>,
    /// Each player's interpolator, for a frame that goes out at 16 kHz.
    mixes_up: Box<[Interpolator2x]>,
    members_up: Box<[Interpolator2x]>,
    frame: Box<[i16]>,
    /// A frame brought up to 16 kHz.
    wide_frame: Box<[i16]>,
    /// Ends seen this tick, drained into `Event::ClipDone`s at its end;
    /// allocated at start for the most a tick can produce.
    ended: Vec<(u64, ClipEnd)>,
}

/// Commands a tick handles at most, each of which can end two clips.
const ENDS_FROM_COMMANDS: usize = 2 * 64;

impl Clips {
    /// One player per mix and per member slot (`max_members` of each).
    pub fn new(max_members: usize) -> Clips {
        Clips {
            mixes: (0..max_members).map(|_| ClipPlayer::default()).collect(),
            members: (0..max_members).map(|_| ClipPlayer::default()).collect(),
            mixes_up: (0..max_members)
                .map(|_| Interpolator2x::default())
                .collect(),
            members_up: (0..max_members)
                .map(|_| Interpolator2x::default())
                .collect(),
            frame: vec![0; FRAME_SAMPLES_MAX].into_boxed_slice(),
            wide_frame: vec![0; FRAME_SAMPLES_MAX].into_boxed_slice(),
            ended: Vec::with_capacity(2 * max_members + ENDS_FROM_COMMANDS),
        }
    }

    fn player(&mut self, target: ResolvedTarget) -> Option<&mut ClipPlayer> {
        match target {
            ResolvedTarget::Mix(mix) => self.mixes.get_mut(mix),
            ResolvedTarget::Slot(slot) => self.members.get_mut(slot),
        }
    }

    fn record_end(&mut self, id: Option<u64>, end: ClipEnd) {
        // Never grows: a tick cannot end more clips than there are players and commands.
        if let Some(id) = id.filter(|_| self.ended.len() < self.ended.capacity()) {
            self.ended.push((id, end));
        }
    }

    /// `Command::PlayClip` on a target the engine found (`None`: it is gone).
    pub fn play(
        &mut self,
        target: Option<ResolvedTarget>,
        clip: Arc<[i16]>,
        looped: bool,
        id: u64,
    ) {
        match target {
            Some(ResolvedTarget::Mix(mix)) if mix < self.mixes_up.len() => {
                self.mixes_up[mix].reset()
            }
            Some(ResolvedTarget::Slot(slot)) if slot < self.members_up.len() => {
                self.members_up[slot].reset()
            }
            _ => {}
        }
        match target.and_then(|t| self.player(t)) {
            Some(player) => {
                let replaced = player.start(clip, looped, id);
                self.record_end(replaced, ClipEnd::Replaced);
            }
            None => self.record_end(Some(id), ClipEnd::Gone),
        }
    }

    /// `Command::StopClip`.
    pub fn stop(&mut self, target: ResolvedTarget, end: ClipEnd) {
        let stopped = self.player(target).and_then(ClipPlayer::stop);
        self.record_end(stopped, end);
    }

    pub fn member_is_playing(&self, slot: usize) -> bool {
        self.members.get(slot).is_some_and(ClipPlayer::is_playing)
    }

    pub fn mix_is_playing(&self, mix: usize) -> bool {
        self.mixes.get(mix).is_some_and(ClipPlayer::is_playing)
    }

    /// Adds this tick's frame of the conference clip to the mix, so listeners'
    /// shared payload and every talker's own mix carry it.
    pub fn add_to_mix(&mut self, mix_index: usize, mix: &mut Mix, kernel: &Kernel2x) {
        let Some(player) = self.mixes.get_mut(mix_index) else {
            return;
        };
        if !player.is_playing() {
            return;
        }
        let narrow = frame_samples(NARROW_RATE_HZ);
        let frame = &mut self.frame[..narrow];
        let ended = player.next_frame(frame);
        if mix.frame_samples() == narrow {
            mix.add_clip(frame);
        } else {
            let wide = &mut self.wide_frame[..mix.frame_samples()];
            upsample(&mut self.mixes_up[mix_index], kernel, frame, wide);
            mix.add_clip(wide);
        }
        self.record_end(ended, ClipEnd::Finished);
    }

    /// Adds this tick's frame of the member's own clip to what it hears
    /// (8 or 16 kHz, by `heard`'s length).
    pub fn add_to_member(&mut self, slot: usize, heard: &mut [i16], kernel: &Kernel2x) {
        let Some(player) = self.members.get_mut(slot) else {
            return;
        };
        if !player.is_playing() {
            return;
        }
        let narrow = frame_samples(NARROW_RATE_HZ);
        let frame = &mut self.frame[..narrow];
        let ended = player.next_frame(frame);
        let clip: &[i16] = if heard.len() == narrow {
            frame
        } else {
            let wide = &mut self.wide_frame[..heard.len()];
            upsample(&mut self.members_up[slot], kernel, frame, wide);
            wide
        };
        for (sample, &clip) in heard.iter_mut().zip(clip.iter()) {
            *sample = soft_limit(i32::from(*sample) + i32::from(clip));
        }
        self.record_end(ended, ClipEnd::Finished);
    }

    /// The clip ends of this tick, oldest first; `clear_ended` after reading.
    pub fn ended(&self) -> &[(u64, ClipEnd)] {
        &self.ended
    }

    pub fn clear_ended(&mut self) {
        self.ended.clear();
    }
}

/// A clip's frame up to 16 kHz; out of line, off the 8 kHz room's path.
#[cold]
#[inline(never)]
fn upsample(up: &mut Interpolator2x, kernel: &Kernel2x, frame: &[i16], wide: &mut [i16]) {
    up.process(kernel, frame, wide);
}

/// A `ClipTarget` the engine checked: the mix index, or the member's slot index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolvedTarget {
    Mix(usize),
    Slot(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(len: usize) -> Arc<[i16]> {
        (1..=len as i16).collect()
    }

    #[test]
    fn a_clip_plays_frame_by_frame_then_reports_its_end_once() {
        let mut player = ClipPlayer::default();
        assert_eq!(player.start(ramp(250), false, 7), None);
        let mut frame = [0i16; 160];
        assert_eq!(player.next_frame(&mut frame), None);
        assert_eq!(frame[0], 1);
        assert_eq!(frame[159], 160);
        assert_eq!(player.next_frame(&mut frame), Some(7));
        assert_eq!(frame[89], 250);
        assert!(frame[90..].iter().all(|&s| s == 0));
        assert_eq!(player.next_frame(&mut frame), None);
        assert!(!player.is_playing());
    }

    #[test]
    fn a_looped_clip_wraps_without_a_gap_and_never_ends() {
        let mut player = ClipPlayer::default();
        player.start(ramp(100), true, 1);
        let mut frame = [0i16; 160];
        for _ in 0..10 {
            assert_eq!(player.next_frame(&mut frame), None);
        }
        // 1600 samples played: exactly 16 loops, so the next frame starts afresh.
        player.next_frame(&mut frame);
        assert_eq!(&frame[..3], &[1, 2, 3]);
        assert_eq!(frame[99], 100);
        assert_eq!(frame[100], 1);
        assert_eq!(player.stop(), Some(1));
    }

    #[test]
    fn starting_over_a_clip_reports_the_one_replaced() {
        let mut player = ClipPlayer::default();
        player.start(ramp(10), false, 1);
        assert_eq!(player.start(ramp(10), false, 2), Some(1));
        assert_eq!(player.stop(), Some(2));
        assert_eq!(player.stop(), None);
    }

    #[test]
    fn a_conference_clip_reaches_listeners_and_talkers_alike() {
        let mut clips = Clips::new(2);
        let mut mix = Mix::new(8000).expect("rate");
        let clip: Arc<[i16]> = vec![1000i16; 320].into();
        clips.play(Some(ResolvedTarget::Mix(0)), clip, false, 5);
        mix.begin_tick();
        let talker = [300i16; 160];
        mix.add_talker(&talker);
        clips.add_to_mix(0, &mut mix, &Kernel2x::new());
        assert!(clips.ended().is_empty());
        let mut heard = [0i16; FRAME_SAMPLES_MAX];
        mix.render_for_talker(&talker, &mut heard);
        assert!(heard[..160].iter().all(|&s| s == 1000));
        mix.render_for_listener(&mut heard);
        assert!(heard[..160].iter().all(|&s| s == 1300));
        mix.begin_tick();
        clips.add_to_mix(0, &mut mix, &Kernel2x::new());
        assert_eq!(clips.ended(), &[(5, ClipEnd::Finished)]);
        mix.render_for_listener(&mut heard);
        assert!(heard[..160].iter().all(|&s| s == 1000));
    }

    #[test]
    fn a_member_clip_adds_to_what_that_member_hears() {
        let mut clips = Clips::new(2);
        let clip: Arc<[i16]> = vec![500i16; 160].into();
        clips.play(Some(ResolvedTarget::Slot(1)), Arc::clone(&clip), false, 9);
        assert!(clips.member_is_playing(1));
        assert!(!clips.member_is_playing(0));
        let mut heard = [100i16; 160];
        clips.add_to_member(1, &mut heard, &Kernel2x::new());
        assert!(heard.iter().all(|&s| s == 600));
        let mut other = [100i16; 160];
        clips.add_to_member(0, &mut other, &Kernel2x::new());
        assert!(other.iter().all(|&s| s == 100));
        clips.play(Some(ResolvedTarget::Slot(0)), Arc::clone(&clip), true, 10);
        clips.play(Some(ResolvedTarget::Slot(0)), Arc::clone(&clip), true, 11);
        clips.stop(ResolvedTarget::Slot(0), ClipEnd::Stopped);
        clips.stop(ResolvedTarget::Slot(0), ClipEnd::Stopped);
        clips.play(None, clip, false, 12);
        assert_eq!(
            clips.ended(),
            &[
                (9, ClipEnd::Finished),
                (10, ClipEnd::Replaced),
                (11, ClipEnd::Stopped),
                (12, ClipEnd::Gone)
            ]
        );
    }

    /// The engine on explicit ticks: a conference clip reaches both members,
    /// a member clip only its member, and a stop is silent from the next tick.
    #[test]
    fn through_the_engine_clips_reach_their_targets_and_stop_within_a_tick() {
        use crate::media::engine::{Engine, TICK};
        use crate::media::{AddMember, Codec, Command, Event, MediaConfig, MediaStats};
        use std::net::UdpSocket;
        use std::time::{Duration, Instant};

        let (mut commands, commands_out) = rtrb::RingBuffer::new(16);
        let (events_in, mut events) = rtrb::RingBuffer::new(64);
        let config = MediaConfig {
            max_members: 2,
            ..MediaConfig::default()
        };
        let mut engine = Engine::new(
            config,
            commands_out,
            events_in,
            Arc::new(MediaStats::default()),
        )
        .expect("engine");
        let bind = || UdpSocket::bind("127.0.0.1:0").expect("loopback");
        let phones: Vec<UdpSocket> = (0..2).map(|_| bind()).collect();
        let keys: Vec<MemberKey> = (0..2)
            .map(|slot| MemberKey {
                slot,
                generation: 1,
            })
            .collect();
        for (key, phone) in keys.iter().zip(&phones) {
            phone.set_nonblocking(true).expect("nonblocking");
            let add = AddMember {
                key: *key,
                mix: 0,
                sockets: crate::media::MemberSockets::Own {
                    rtp: bind(),
                    rtcp: bind(),
                    sdp_ip: None,
                },
                remote_rtp: phone.local_addr().expect("addr"),
                remote_rtcp: phone.local_addr().expect("addr"),
                signalling_ip: None,
                codec: Codec::Pcmu,
                payload_type: 0,
                telephone_event_pt: None,
                telephone_event_rate_hz: 8000,
                flags: Default::default(),
                keypad: false,
                opus: None,
                srtp: None,
                link: false,
            };
            commands
                .push(Command::AddMember(Box::new(add)))
                .expect("room");
        }
        // Only what the phone received since the last look, decoded.
        let heard = |phone: &UdpSocket| {
            let mut samples = Vec::new();
            let mut datagram = [0u8; 1500];
            while let Ok((len, _)) = phone.recv_from(&mut datagram) {
                let mut pcm = [0i16; 160];
                Codec::Pcmu.decode(&datagram[12..len], &mut pcm);
                samples.extend_from_slice(&pcm);
            }
            samples
        };
        let start = Instant::now();
        let mut tick = 0u32;
        let mut run = |ticks: u32, engine: &mut Engine| {
            for _ in 0..ticks {
                engine.tick(start + TICK * tick, 0);
                tick += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let tone: Arc<[i16]> = (0..800)
            .map(|n| if n % 2 == 0 { 4000 } else { -4000 })
            .collect();
        let keep = Arc::clone(&tone);
        commands
            .push(Command::PlayClip {
                target: ClipTarget::Mix(0),
                clip: Arc::clone(&tone),
                looped: true,
                id: 1,
            })
            .expect("room");
        run(3, &mut engine);
        for phone in &phones {
            let samples = heard(phone);
            assert_eq!(samples.len(), 480);
            assert!(
                samples.iter().all(|s| s.abs() > 3500),
                "everyone hears the conference clip"
            );
        }
        commands
            .push(Command::StopClip {
                target: ClipTarget::Mix(0),
            })
            .expect("room");
        run(1, &mut engine);
        for phone in &phones {
            assert!(
                heard(phone).iter().all(|&s| s == 0),
                "silent from the tick of the stop"
            );
        }
        commands
            .push(Command::PlayClip {
                target: ClipTarget::Member(keys[1]),
                clip: tone,
                looped: false,
                id: 2,
            })
            .expect("room");
        run(6, &mut engine);
        assert!(
            heard(&phones[0]).iter().all(|&s| s == 0),
            "member 0 hears nothing"
        );
        let second = heard(&phones[1]);
        assert_eq!(second.iter().filter(|s| s.abs() > 3500).count(), 800);
        let mut done = Vec::new();
        while let Ok(event) = events.pop() {
            if let Event::ClipDone { id, end } = event {
                done.push((id, end));
            }
        }
        assert_eq!(done, [(1, ClipEnd::Stopped), (2, ClipEnd::Finished)]);
        assert_eq!(Arc::strong_count(&keep), 1, "the engine let go of the clip");
    }
}
