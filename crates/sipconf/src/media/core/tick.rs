//! The work of one tick on every member and mix, at an explicit `now`: play,
//! keys, hold-back, gate and mix in; clips; render, encode and send out;
//! RTCP reports; clip ends and counters.
//!
//! Owns: the order of a tick's work. Never touches: sockets (datagrams leave
//! through the caller's `TransmitSink`), the clock, the command queue.

use std::time::Instant;

use super::{add, MediaCore, RenderBuffers, Stream, Transmit, TransmitSink};
use crate::media::clip::Clips;
use crate::media::dtmf::DigitPress;
use crate::media::mixer::apply_gain;
use crate::media::mixer::Mix;
use crate::media::resample::Kernel2x;
use crate::media::slot::Played;
use crate::media::slot::Slot;
use crate::media::srtp::MemberSrtp;
use crate::media::Event;

impl MediaCore {
    /// Runs one tick at `now` on what `receive` took since the last one;
    /// `ntp_timestamp` is wall time for RTCP sender reports. Every datagram
    /// to send goes to `out`, then `out.flush()`; the tick's events are
    /// queued, and its counts published to `MediaStats`.
    pub fn tick<S: TransmitSink>(&mut self, now: Instant, ntp_timestamp: u64, out: &mut S) {
        for &mix in &self.active_mixes {
            self.mixes[mix as usize].begin_tick();
        }
        for position in 0..self.active_slots.len() {
            self.play_and_mix(self.active_slots[position] as usize, now);
        }
        for &mix in &self.active_mixes {
            let index = mix as usize;
            self.clips
                .add_to_mix(index, &mut self.mixes[index], &self.kernel);
        }
        for position in 0..self.active_slots.len() {
            let index = self.active_slots[position] as usize;
            self.send_rtp(index, out);
            if self.slots[index].rtcp_due(now) {
                self.send_rtcp(index, ntp_timestamp, false, out);
                self.slots[index].schedule_rtcp(now + self.config.rtcp_interval);
            }
        }
        for &mix in &self.active_mixes {
            self.mixes[mix as usize].end_tick(&self.kernel);
        }
        out.flush();
        self.emit_clip_ends();
        self.rtcp_ssrc_scans = 0;
        self.publish_counts();
        self.publish_quality();
    }

    /// Plays the member's frame, carries out its key presses, and adds it to
    /// the mix if it talks; reports talking changes and an RTP timeout.
    fn play_and_mix(&mut self, index: usize, now: Instant) {
        let slot = &mut self.slots[index];
        if slot.play_frame(&self.kernel) == Played::Lost {
            self.counts.packets_lost += 1;
        }
        let suspected_now = slot.listen_for_keys(&self.kernel);
        // Presses act before this tick's contribution, so a key takes effect at once.
        while let Some(press) = self.slots[index].poll_press() {
            self.on_press(index, press, now);
        }
        let slot = &mut self.slots[index];
        let talking = slot.contribute(&mut self.mixes[slot.mix_index()], suspected_now);
        let key = slot.key();
        let talking_changed = slot.report_talking(talking);
        let timed_out = slot.check_rtp_timeout(now, self.rtp_timeout);
        if talking_changed {
            self.emit(Event::Talking { key, talking });
        }
        // A lost timeout would leave the call up, and the slot sending, for
        // good: one that does not fit in the queue is raised again next tick.
        if timed_out && !self.emit(Event::RtpTimeout { key }) {
            self.slots[index].rearm_rtp_timeout();
        }
    }

    /// A press the member's receiver counted: always reported, and on a keypad
    /// conference carried out (the README's keypad table) with a confirmation
    /// tone for the member alone.
    fn on_press(&mut self, index: usize, press: DigitPress, now: Instant) {
        let slot = &mut self.slots[index];
        let key = slot.key();
        let pressed = slot.press(press.digit, &self.gate_steps, now);
        self.emit(Event::Digit {
            key,
            digit: press.digit,
            duration_ms: press.duration_ms(),
            source: press.source,
        });
        let Some(pressed) = pressed else {
            return;
        };
        if let Some(flags) = pressed.flags_changed {
            self.emit(Event::FlagsChanged { key, flags });
        }
        if pressed.leave {
            self.emit(Event::Leave { key });
        }
    }

    /// Sends this tick's packet: the member's own mix if it talked, the shared
    /// mix if it did not, silence if deaf (to keep NAT bindings open), nothing
    /// if held, and a keepalive now and then if it is alone with nothing to hear.
    fn send_rtp<S: TransmitSink>(&mut self, index: usize, out: &mut S) {
        let MediaCore {
            slots,
            mixes,
            stats,
            send_buffer,
            payload_buffer,
            render,
            clips,
            mix_members,
            kernel,
            ..
        } = self;
        let slot = &mut slots[index];
        let mix_index = slot.mix_index();
        let mix = &mut mixes[mix_index];
        let frame = mix.frame_samples();
        let codec = slot.codec();
        let frame_samples = slot.rtp_frame_ticks();
        let flags = slot.flags();
        if flags.held {
            slot.skip_frame(frame_samples);
            return;
        }
        let hears_nothing = mix_members[mix_index] == 1
            && !slot.hears_confirmation()
            && !clips.member_is_playing(index)
            && !clips.mix_is_playing(mix_index);
        if hears_nothing {
            if !slot.lone_keepalive_due() {
                slot.skip_frame(frame_samples);
                return;
            }
        } else {
            slot.hears_something();
        }
        let receive_gain = slot.receive_gain();
        let own_rendering =
            receive_gain.is_some() || slot.hears_confirmation() || clips.member_is_playing(index);
        // The member's own payload in `payload_buffer`, or None: the
        // listeners' shared one. Anyone but G.711 in an 8 kHz mix goes out
        // of line, so the narrowband path stays as short as it was.
        let own_len = if !slot.narrowband() {
            render_wideband(slot, mix, index, clips, render, payload_buffer, kernel)
        } else if own_rendering {
            // A confirmation tone or a receive gain: this member gets a mix of its own.
            let heard = &mut render.mix_rate[..frame];
            render_heard(slot, mix, heard);
            // A deaf member still hears its own keys answered.
            slot.mix_confirmation_into(heard);
            // So does a clip played to this member alone.
            clips.add_to_member(index, heard, kernel);
            Some(codec.encode(heard, payload_buffer))
        } else if flags.deaf {
            payload_buffer[..frame].fill(codec.silence_byte());
            Some(frame)
        } else {
            // A talker hears everyone but itself; a listener, the shared payload.
            slot.contribution(frame)
                .map(|own| mix.encode_for_talker(own, codec, payload_buffer))
        };
        let payload: &[u8] = match own_len {
            Some(len) => &payload_buffer[..len],
            None => mix.encoded_for_listener(codec, kernel),
        };
        let Ok(mut len) = slot.write_rtp(payload, frame_samples, send_buffer) else {
            add(&stats.send_errors, 1);
            return;
        };
        // The listeners' shared payload was copied into this member's
        // packet: SRTP encrypts it there, with this member's key.
        if let Some(srtp) = slot.srtp_mut() {
            let Some(protected) = protect_rtp(srtp, send_buffer, len) else {
                add(&stats.send_errors, 1);
                return;
            };
            len = protected;
        }
        out.transmit(Transmit {
            member: slot.key(),
            port: MediaCore::port_of(slot),
            stream: Stream::Rtp,
            destination: slot.remote_rtp(),
            contents: &send_buffer[..len],
        });
    }

    /// Sends an SR (or RR if we never sent), SDES CNAME, and BYE when `bye`.
    pub(super) fn send_rtcp<S: TransmitSink>(
        &mut self,
        index: usize,
        ntp_timestamp: u64,
        bye: bool,
        out: &mut S,
    ) {
        let slot = &mut self.slots[index];
        let Ok(mut len) = slot.write_rtcp(ntp_timestamp, bye, &mut self.rtcp_buffer) else {
            add(&self.stats.send_errors, 1);
            return;
        };
        if let Some(srtp) = slot.srtp_mut() {
            match srtp.outbound.protect_rtcp(&mut self.rtcp_buffer, len) {
                Ok(protected) => len = protected,
                Err(_) => {
                    add(&self.stats.send_errors, 1);
                    return;
                }
            }
        }
        out.transmit(Transmit {
            member: slot.key(),
            port: MediaCore::port_of(slot),
            stream: Stream::Rtcp,
            destination: slot.remote_rtcp(),
            contents: &self.rtcp_buffer[..len],
        });
    }
}

/// What a member hears at the mix's rate, before its tone and clip: nothing
/// if deaf, else everyone but itself if it talked (everyone if not), at its
/// receive gain.
#[inline(always)]
fn render_heard(slot: &Slot, mix: &Mix, heard: &mut [i16]) {
    if slot.flags().deaf {
        heard.fill(0);
        return;
    }
    match slot.contribution(heard.len()) {
        Some(own) => mix.render_for_talker(own, heard),
        None => mix.render_for_listener(heard),
    }
    if let Some(gain) = slot.receive_gain() {
        apply_gain(heard, gain);
    }
}

/// The payload of a member that is not G.711 in an 8 kHz mix, when it needs
/// a rendering of its own (it talked, is deaf, or has a receive gain, a
/// tone or a clip of its own): rendered at the mix's rate, brought to its
/// codec's rate, encoded by its own encoder into `payload_buffer`; returns
/// its length. None: it hears the listeners' shared payload.
#[cold]
#[inline(never)]
fn render_wideband(
    slot: &mut Slot,
    mix: &Mix,
    index: usize,
    clips: &mut Clips,
    render: &mut RenderBuffers,
    payload_buffer: &mut [u8],
    kernel: &Kernel2x,
) -> Option<usize> {
    let frame = mix.frame_samples();
    let flags = slot.flags();
    let receive_gain = slot.receive_gain();
    let own_rendering = receive_gain.is_some()
        || slot.hears_confirmation()
        || clips.member_is_playing(index)
        || flags.deaf
        || slot.contribution(frame).is_some();
    if !own_rendering {
        slot.heard_shared();
        return None;
    }
    let heard = &mut render.mix_rate[..frame];
    render_heard(slot, mix, heard);
    let len = slot.own_rendering_at_codec_rate(mix, heard, &mut render.codec_rate, kernel);
    let heard = &mut render.codec_rate[..len];
    // A deaf member still hears its own keys answered, and a clip played to it alone.
    slot.mix_confirmation_into(heard);
    clips.add_to_member(index, heard, kernel);
    Some(slot.encode_own(heard, payload_buffer))
}

/// Encrypts a member's packet in place; out of line, so the plain RTP path
/// stays as short as it was.
#[cold]
#[inline(never)]
fn protect_rtp(srtp: &mut MemberSrtp, buffer: &mut [u8], len: usize) -> Option<usize> {
    srtp.outbound.protect_rtp(buffer, len).ok()
}
