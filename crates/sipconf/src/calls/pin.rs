//! Room PINs (DESIGN.md "Call routing", step 1): a caller to a room with a
//! `pin` is answered into a lobby of its own (a media slot in a private mix,
//! keys reported but not acted on), hears the spoken prompt, and enters the
//! PIN followed by `#`, by RFC 4733 or in-band tones. Three wrong tries and it
//! is told so and hung up; the right PIN joins it to the room's conference.
//! `announce_count` then tells it how many people are already there.

use super::audio::After;
use super::Manager;
use crate::config::Room;
use crate::media::{AddMember, Command, MemberFlags, MemberKey};
use crate::sip::CallKey;
use std::net::SocketAddr;

/// Wrong PINs before the caller is hung up.
pub const PIN_TRIES: u32 = 3;
/// Digits kept of one attempt; a longer entry is wrong anyway.
const MAX_PIN_DIGITS: usize = 32;
pub const WRONG_PIN: &str = "That PIN is not valid. Please try again.";
pub const PIN_FAILED: &str = "That PIN is not valid. Goodbye.";

/// A call waiting in its lobby for its PIN.
#[derive(Debug)]
pub(super) struct Lobby {
    pub(super) media: MemberKey,
    mix_name: String,
    room: Room,
    digits: String,
    wrong: u32,
}

impl Manager {
    /// Puts an answered call to a PIN room into its lobby and prompts for the PIN.
    pub(super) fn enter_lobby(&mut self, key: CallKey, room: Room) -> Result<(), &'static str> {
        let Some(call) = self.calls.get(&key) else {
            return Err("the call is gone");
        };
        let Ok(sockets) = call.ports.member_sockets(call.media_address) else {
            return Err("cannot share the RTP socket");
        };
        let call_id = call.id.clone();
        let remote_rtp = call.negotiated.remote_rtp_addr;
        let add = |media: MemberKey, mix: u32| AddMember {
            key: media,
            mix,
            sockets,
            remote_rtp,
            remote_rtcp: SocketAddr::new(remote_rtp.ip(), remote_rtp.port().wrapping_add(1)),
            codec: super::media_codec(call.negotiated.codec),
            telephone_event_pt: call.negotiated.telephone_event_pt,
            flags: MemberFlags {
                held: call.held,
                ..MemberFlags::default()
            },
            // Keys are the PIN here, never keypad commands.
            keypad: false,
        };
        let Some(media) = self.media().allocate() else {
            return Err("every media slot is taken");
        };
        let mix_name = format!("lobby:{call_id}");
        let Some(mix) = self.mixes.get_or_assign(&mix_name) else {
            self.media().release(media);
            return Err("every conference mix is taken");
        };
        let command = Command::AddMember(Box::new(add(media, mix)));
        if self.media().send(command).is_err() {
            self.media().release(media);
            self.mixes.release(&mix_name);
            return Err("the media plane is busy");
        }
        self.by_media.insert(media, key);
        let prompt = room.pin_prompt.clone();
        if let Some(call) = self.calls.get_mut(&key) {
            call.lobby = Some(Lobby {
                media,
                mix_name,
                room,
                digits: String::new(),
                wrong: 0,
            });
        }
        tracing::info!(call = %call_id, "waiting for the room PIN");
        self.speak_to_call(&call_id, &prompt, After::Nothing);
        Ok(())
    }

    /// Whether a media key is a call in its lobby.
    pub(super) fn in_lobby(&self, media: MemberKey) -> bool {
        self.by_media
            .get(&media)
            .and_then(|key| self.calls.get(key))
            .and_then(|call| call.lobby.as_ref())
            .is_some_and(|lobby| lobby.media == media)
    }

    /// A key pressed in the lobby: collect digits, check the PIN at `#`.
    pub(super) async fn on_pin_digit(&mut self, media: MemberKey, digit: char) {
        let Some(&key) = self.by_media.get(&media) else {
            return;
        };
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let call_id = call.id.clone();
        let Some(lobby) = call.lobby.as_mut() else {
            return;
        };
        if lobby.wrong >= PIN_TRIES {
            return;
        }
        match digit {
            '#' => {}
            '*' => {
                lobby.digits.clear();
                return;
            }
            digit if lobby.digits.len() < MAX_PIN_DIGITS => {
                lobby.digits.push(digit);
                return;
            }
            _ => return,
        }
        let entered = std::mem::take(&mut lobby.digits);
        if lobby.room.pin.as_deref() == Some(entered.as_str()) {
            let room = lobby.room.clone();
            tracing::info!(call = %call_id, "right PIN");
            self.leave_lobby(key);
            self.join_room(key, &room).await;
            return;
        }
        lobby.wrong += 1;
        let wrong = lobby.wrong;
        tracing::info!(call = %call_id, tries = wrong, "wrong PIN");
        if wrong >= PIN_TRIES {
            self.speak_to_call(&call_id, PIN_FAILED, After::HangUp(key));
        } else {
            self.speak_to_call(&call_id, WRONG_PIN, After::Nothing);
        }
    }

    /// Takes a call out of its lobby (it joins, or it ended).
    pub(super) fn leave_lobby(&mut self, key: CallKey) {
        let Some(lobby) = self.calls.get_mut(&key).and_then(|c| c.lobby.take()) else {
            return;
        };
        self.by_media.remove(&lobby.media);
        if self
            .media()
            .send(Command::RemoveMember { key: lobby.media })
            .is_err()
        {
            tracing::error!("media command queue full: lobby slot not freed");
        } else {
            self.media().release(lobby.media);
        }
        self.mixes.release(&lobby.mix_name);
    }

    /// After joining a room with `announce_count`: how many were there before.
    pub(super) fn announce_count(&mut self, call_id: &str, others: u64) {
        let sentence = match others {
            0 => "You are the first person in the conference.".to_string(),
            1 => "There is one other person in the conference.".to_string(),
            n => format!("There are {n} other people in the conference."),
        };
        self.speak_to_call(call_id, &sentence, After::Nothing);
    }
}
