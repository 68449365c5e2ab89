//! Publishes each member's reception figures (`media/quality.rs`) to
//! `MediaStats::member_quality` for the API: a fiftieth of the members each
//! tick, so each is published once a second and no tick pays for all.

use super::MediaCore;

/// Each member's figures are published once every this many ticks (1 s).
const PUBLISH_EVERY_TICKS: usize = 50;

impl MediaCore {
    /// Publishes this tick's share of the members.
    pub(super) fn publish_quality(&mut self) {
        let phase = self.quality_phase;
        self.quality_phase = (phase + 1) % PUBLISH_EVERY_TICKS;
        for position in (phase..self.active_slots.len()).step_by(PUBLISH_EVERY_TICKS) {
            let slot = &self.slots[self.active_slots[position] as usize];
            self.stats
                .member_quality
                .publish(slot.key(), slot.quality());
        }
    }
}
