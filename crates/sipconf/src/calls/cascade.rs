//! Cascading (docs/scaling.md "One room across two bridges"): the links a
//! bridge keeps up to the same room on other bridges (`[[room]] cascade`),
//! and the rules for a link call either way. A link is a member that hears
//! the mix minus itself like everyone, but is not a person: it is not
//! counted against a room's size, has no keypad and no gate (the media
//! plane's `AddMember::link`), and a link this bridge dials is dialled again,
//! 1 s doubling to 30 s, whenever it drops or is refused, until the bridge
//! stops. The `X-Sipconf-Link` header marks a link and lists the bridges
//! its room already spans, so a bridge that finds itself there refuses the
//! INVITE with 482 and bridges joined as a tree never close a circle.

use super::outbound::OutboundTarget;
use super::switchboard::Switchboard;
use super::table::Link;
use super::{OutgoingRequest, DEFAULT_CALL_TIMEOUT, NORMAL_CLEARING};
use crate::conference::Registry;
use crate::config::Config;
use crate::sip::CallKey;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Cascade links counted for `/metrics`.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Links in a conference now, either way.
    pub up: AtomicU64,
    /// Links that ended (dropped, cut or hung up), either way.
    pub ended: AtomicU64,
    /// Link INVITEs refused with 482: they named this bridge.
    pub loops_refused: AtomicU64,
}

/// The first pause before a dropped or refused link is dialled again.
pub const FIRST_REDIAL: Duration = Duration::from_secs(1);
/// The longest pause between two attempts.
pub const LONGEST_REDIAL: Duration = Duration::from_secs(30);

/// One `[[room]] cascade` entry: a link this bridge keeps up.
#[derive(Debug)]
pub struct Cascade {
    pub room: String,
    pub uri: String,
    /// The pause before the next attempt.
    pub backoff: Duration,
    /// The `c-` id of its call while one is placed or up.
    pub call: Option<String>,
}

/// Every `[[room]] cascade` entry of the configuration, in order.
pub fn cascades(config: &Config) -> Vec<Cascade> {
    config
        .rooms
        .iter()
        .flat_map(|room| {
            room.cascade.iter().map(|uri| Cascade {
                room: room.number.clone(),
                uri: uri.clone(),
                backoff: FIRST_REDIAL,
                call: None,
            })
        })
        .collect()
}

/// The bridge ids of an `X-Sipconf-Link` value, in order, without blanks.
pub fn bridge_ids(header: &str) -> Vec<String> {
    header
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect()
}

impl Switchboard {
    /// `X-Sipconf-Link` for a link of `room`: this bridge first, then every
    /// bridge its links in this room reach.
    pub(super) fn link_header(&self, room: &str) -> String {
        let mut ids = vec![self.bridge_id.clone()];
        let far = self
            .calls
            .answered
            .values()
            .filter_map(|c| c.link.as_ref())
            .filter(|l| l.room == room)
            .flat_map(|l| l.far.iter());
        for id in far {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        ids.join(",")
    }

    /// Links in a conference now (not people).
    pub(super) fn links_in(&self, conference_id: &str) -> usize {
        self.calls
            .answered
            .values()
            .filter(|c| c.link.is_some())
            .filter(|c| {
                c.joined
                    .as_ref()
                    .is_some_and(|j| j.conference_id == conference_id)
            })
            .count()
    }

    /// People in a room's live conference: its active members but the links.
    pub(super) fn people_in_room(&self, records: &Registry, room: &str) -> usize {
        records
            .room_conference(room)
            .map_or(0, |c| c.active_members.saturating_sub(self.links_in(&c.id)))
    }

    /// A cascade entry's time to dial came: the driver resolves its URI
    /// (`Input::LinkTarget`).
    pub(super) fn redial(&mut self, index: usize) {
        if self.stopping {
            return;
        }
        let Some(cascade) = self.cascades.get(index) else {
            return;
        };
        if cascade.call.is_some() {
            return;
        }
        let uri = cascade.uri.clone();
        self.act(super::Action::ResolveLink { index, uri });
    }

    /// A cascade entry's URI resolved (or not): the link is dialled.
    pub(super) fn on_link_target(
        &mut self,
        records: &mut Registry,
        index: usize,
        target: Result<OutboundTarget, String>,
    ) {
        if self.stopping {
            return;
        }
        let Some(cascade) = self.cascades.get(index) else {
            return;
        };
        let (room, uri) = (cascade.room.clone(), cascade.uri.clone());
        let target = match target {
            Ok(target) => target,
            Err(e) => {
                tracing::warn!(%room, %uri, "cascade link: {e}");
                self.schedule_redial(index);
                return;
            }
        };
        let call = OutgoingRequest {
            from: room.clone(),
            to: uri.clone(),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            ..OutgoingRequest::default()
        };
        let link = Link {
            room: room.clone(),
            dialled: Some(index),
            far: Vec::new(),
        };
        match self.invite(records, None, call, target, Some(link)) {
            Ok(id) => {
                tracing::info!(call = %id, %room, %uri, "dialling a cascade link");
                if let Some(cascade) = self.cascades.get_mut(index) {
                    cascade.call = Some(id);
                }
            }
            Err(e) => {
                tracing::warn!(%room, %uri, "cannot dial a cascade link: {e}");
                self.schedule_redial(index);
            }
        }
    }

    /// The call of a link ended (or never started): a link this bridge
    /// dials is dialled again after its pause, unless the bridge stops.
    pub(super) fn link_down(&mut self, link: Option<&Link>, call_id: &str) {
        if link.is_some() {
            self.link_stats.ended.fetch_add(1, Ordering::Relaxed);
        }
        let Some(index) = link.and_then(|l| l.dialled) else {
            if let Some(link) = link {
                tracing::info!(call = %call_id, room = %link.room, "cascade link from another bridge ended");
            }
            return;
        };
        let ours = self
            .cascades
            .get(index)
            .is_some_and(|c| c.call.as_deref() == Some(call_id));
        if !ours {
            return;
        }
        if let Some(cascade) = self.cascades.get_mut(index) {
            cascade.call = None;
        }
        if !self.stopping {
            self.schedule_redial(index);
        }
    }

    fn schedule_redial(&mut self, index: usize) {
        let Some(cascade) = self.cascades.get_mut(index) else {
            return;
        };
        let pause = cascade.backoff;
        cascade.backoff = (pause * 2).min(LONGEST_REDIAL);
        let (room, uri) = (cascade.room.clone(), cascade.uri.clone());
        tracing::info!(%room, %uri, pause_s = pause.as_secs(), "cascade link down: dialling again");
        self.set_redial_timer(pause, index);
    }

    /// A link this bridge dials is up: its next drop is dialled again after
    /// the first pause.
    pub(super) fn link_up(&mut self, link: &Link) {
        if let Some(cascade) = link.dialled.and_then(|i| self.cascades.get_mut(i)) {
            cascade.backoff = FIRST_REDIAL;
        }
    }

    /// Two bridges that dialled each other at once hold two links between
    /// them in one room, which would send each one's callers back to them.
    /// Both see it once both links are up; the one the bridge with the
    /// greater id dialled is hung up by it, and its next attempt names the
    /// other bridge, which refuses it with 482.
    pub(super) fn drop_crossed_link(&mut self, records: &mut Registry, room: &str) {
        let links: Vec<(CallKey, Link)> = self
            .calls
            .answered
            .iter()
            .filter_map(|(key, c)| c.link.clone().map(|l| (*key, l)))
            .filter(|(_, l)| l.room == room)
            .collect();
        let crossed = links.iter().find(|(_, ours)| {
            let Some(far) = ours.far.first() else {
                return false;
            };
            ours.dialled.is_some()
                && *far < self.bridge_id
                && links
                    .iter()
                    .any(|(_, theirs)| theirs.dialled.is_none() && theirs.far.first() == Some(far))
        });
        if let Some((key, link)) = crossed {
            let far = link.far.first().cloned().unwrap_or_default();
            tracing::info!(%room, bridge = %far, "two cascade links to one bridge: hanging up ours");
            self.hang_up(records, *key, NORMAL_CLEARING, "crossed cascade link");
        }
    }
}
