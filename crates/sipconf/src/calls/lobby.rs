//! The PIN lobby of a room (docs/architecture.md "Call routing", step 1): the digits a
//! caller enters, checked at `#`, with three tries. A state machine of its
//! own: keys in, a verdict out. After a wrong PIN it may be told to wait
//! (`pause`): keys pressed until `resume` are dropped. It owns one caller's
//! entry and nothing else; it never speaks, joins or hangs up (the
//! switchboard does what the verdict says, and keeps the per-address count
//! in `pin_guard.rs`) and never sees the media plane beyond the key of the
//! caller's slot.

use crate::config::Room;
use crate::media::MemberKey;

/// Wrong PINs before the caller is hung up.
pub const PIN_TRIES: u32 = 3;
/// Digits kept of one attempt; a longer entry is wrong anyway.
const MAX_PIN_DIGITS: usize = 32;
/// Spoken after a wrong PIN while tries are left.
pub const WRONG_PIN: &str = "That PIN is not valid. Please try again.";
/// Spoken after the last wrong PIN, before the bridge hangs up.
pub const PIN_FAILED: &str = "That PIN is not valid. Goodbye.";
/// Spoken before hanging up on a caller whose address is locked out
/// (`pin_guard.rs`).
pub const PIN_LOCKED_OUT: &str = "Too many wrong PINs. Please try again later. Goodbye.";

/// What a key did to the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// Still entering (a digit, `*` to start over, or a key after the last try).
    Entering,
    /// `#` after the room's PIN: the caller may join.
    Right,
    /// `#` after a wrong PIN; tries are left.
    Wrong { tries: u32 },
    /// `#` after the last wrong PIN: say goodbye and hang up.
    Refused,
}

/// A caller waiting in its lobby: a media slot in a private mix (keys are
/// reported, never acted on) while it enters the PIN.
#[derive(Debug)]
pub struct Lobby {
    /// The caller's slot while it waits (the prompt plays to it).
    pub media: MemberKey,
    /// The private mix's name in the switchboard's mix pool.
    pub mix_name: String,
    pub room: Room,
    digits: String,
    wrong: u32,
    /// Keys are dropped until `resume` (after a wrong PIN, while the
    /// caller's address waits).
    paused: bool,
}

impl Lobby {
    pub fn new(media: MemberKey, mix_name: String, room: Room) -> Lobby {
        Lobby {
            media,
            mix_name,
            room,
            digits: String::new(),
            wrong: 0,
            paused: false,
        }
    }

    /// Drops every key until `resume`.
    pub fn pause(&mut self) {
        self.paused = true;
        self.digits.clear();
    }

    pub fn resume(&mut self) {
        self.paused = false;
    }

    /// One key pressed in the lobby.
    pub fn press(&mut self, digit: char) -> Pin {
        if self.wrong >= PIN_TRIES || self.paused {
            return Pin::Entering;
        }
        match digit {
            '#' => {}
            '*' => {
                self.digits.clear();
                return Pin::Entering;
            }
            digit if self.digits.len() < MAX_PIN_DIGITS => {
                self.digits.push(digit);
                return Pin::Entering;
            }
            _ => return Pin::Entering,
        }
        let entered = std::mem::take(&mut self.digits);
        if self.room.pin.as_deref() == Some(entered.as_str()) {
            return Pin::Right;
        }
        self.wrong += 1;
        if self.wrong >= PIN_TRIES {
            Pin::Refused
        } else {
            Pin::Wrong { tries: self.wrong }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lobby(pin: &str) -> Lobby {
        let room = Room {
            number: "1000".into(),
            name: "Room".into(),
            max_members: 10,
            answer_delay: std::time::Duration::ZERO,
            pin: Some(pin.into()),
            pin_prompt: String::new(),
            announce_count: false,
            cascade: Vec::new(),
        };
        let key = MemberKey {
            slot: 0,
            generation: 1,
        };
        Lobby::new(key, "lobby:c-1".into(), room)
    }

    fn enter(lobby: &mut Lobby, keys: &str) -> Pin {
        keys.chars()
            .map(|key| lobby.press(key))
            .last()
            .unwrap_or(Pin::Entering)
    }

    #[test]
    fn the_right_pin_followed_by_pound_admits() {
        let mut lobby = lobby("4321");
        assert_eq!(enter(&mut lobby, "4321"), Pin::Entering);
        assert_eq!(lobby.press('#'), Pin::Right);
    }

    #[test]
    fn star_starts_the_entry_over() {
        let mut lobby = lobby("4321");
        assert_eq!(enter(&mut lobby, "99*4321#"), Pin::Right);
    }

    #[test]
    fn three_wrong_pins_refuse_and_later_keys_do_nothing() {
        let mut lobby = lobby("4321");
        assert_eq!(enter(&mut lobby, "1#"), Pin::Wrong { tries: 1 });
        assert_eq!(enter(&mut lobby, "#"), Pin::Wrong { tries: 2 });
        assert_eq!(enter(&mut lobby, "12345#"), Pin::Refused);
        assert_eq!(enter(&mut lobby, "4321#"), Pin::Entering);
    }

    #[test]
    fn a_wrong_try_forgets_its_digits() {
        let mut lobby = lobby("4321");
        assert_eq!(enter(&mut lobby, "43#"), Pin::Wrong { tries: 1 });
        assert_eq!(enter(&mut lobby, "21#"), Pin::Wrong { tries: 2 });
        assert_eq!(enter(&mut lobby, "4321#"), Pin::Right);
    }

    #[test]
    fn keys_pressed_while_paused_are_dropped() {
        let mut lobby = lobby("4321");
        assert_eq!(enter(&mut lobby, "1#"), Pin::Wrong { tries: 1 });
        lobby.pause();
        assert_eq!(enter(&mut lobby, "4321#"), Pin::Entering);
        lobby.resume();
        assert_eq!(enter(&mut lobby, "4321#"), Pin::Right);
    }

    #[test]
    fn an_endless_entry_is_capped_and_wrong() {
        let mut lobby = lobby("4321");
        let long: String = std::iter::repeat_n('4', 100).collect();
        assert_eq!(enter(&mut lobby, &long), Pin::Entering);
        assert_eq!(lobby.press('#'), Pin::Wrong { tries: 1 });
    }
}
