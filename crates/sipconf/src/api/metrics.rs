//! `/metrics`: the bridge's counters in the Prometheus text exposition
//! format (version 0.0.4): calls, members and conferences from the records,
//! the media plane's packets, drops and tick timings, callbacks, wrong PINs,
//! and the store's health. It reads counters and records; it changes nothing.

use super::ApiState;
use crate::sip::registration::{RegistrationState, RegistrationStats};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One Prometheus histogram from the media plane's nanosecond buckets.
fn write_histogram(
    text: &mut String,
    name: &str,
    help: &str,
    buckets: &[std::sync::atomic::AtomicU64],
    total_ns: &std::sync::atomic::AtomicU64,
) {
    use std::fmt::Write;
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} histogram");
    let mut cumulative = 0u64;
    for (i, bucket) in buckets.iter().enumerate() {
        cumulative += bucket.load(Ordering::Relaxed);
        let le = crate::media::TICK_BUCKETS_NS
            .get(i)
            .map_or("+Inf".to_string(), |ns| format!("{}", *ns as f64 / 1e9));
        let _ = writeln!(text, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(
        text,
        "{name}_sum {}",
        total_ns.load(Ordering::Relaxed) as f64 / 1e9
    );
    let _ = writeln!(text, "{name}_count {cumulative}");
}

/// `[soundcard]`'s device and its rings (`media/local.rs`).
fn soundcard_metrics(
    metric: &mut impl FnMut(&str, &str, &str, &[(&str, f64)]),
    stats: &crate::media::local::LocalStats,
) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    metric(
        "sipconf_soundcard_up",
        "gauge",
        "1 while the sound card is open and running; 0 while it is missing or lost (tried again every 5 s).",
        &[("", if stats.device_up.load(Ordering::Relaxed) { 1.0 } else { 0.0 })],
    );
    metric(
        "sipconf_soundcard_device_errors_total",
        "counter",
        "Times the sound card could not be opened, failed or went quiet.",
        &[("", load(&stats.device_errors))],
    );
    metric(
        "sipconf_soundcard_underruns_total",
        "counter",
        "Capture: ticks the media thread found less than a frame from the microphone. Playback: device periods the loudspeaker ran short.",
        &[
            ("{direction=\"capture\"}", load(&stats.capture_underruns)),
            ("{direction=\"playback\"}", load(&stats.playback_underruns)),
        ],
    );
    metric(
        "sipconf_soundcard_overruns_total",
        "counter",
        "Capture: microphone samples dropped for a full ring. Playback: frames dropped for a full ring.",
        &[
            ("{direction=\"capture\"}", load(&stats.capture_overruns)),
            ("{direction=\"playback\"}", load(&stats.playback_overruns)),
        ],
    );
    metric(
        "sipconf_soundcard_drift_correction_ppm",
        "gauge",
        "The resampling ratio's correction against the sound card's clock drift, in parts per million.",
        &[
            ("{direction=\"capture\"}", stats.capture_correction_ppm.load(Ordering::Relaxed) as f64),
            ("{direction=\"playback\"}", stats.playback_correction_ppm.load(Ordering::Relaxed) as f64),
        ],
    );
}

/// Each `[[registration]]`, labelled by its address of record: one gauge per
/// state (1 for the state it is in), and its counters.
fn write_registrations(text: &mut String, registrations: &[(String, Arc<RegistrationStats>)]) {
    use std::fmt::Write;
    if registrations.is_empty() {
        return;
    }
    let label = |aor: &str| aor.replace('\\', "\\\\").replace('"', "\\\"");
    let _ = writeln!(
        text,
        "# HELP sipconf_registration_state Where each registration stands: 1 for its state \
         (registering, registered, backing_off after a failure, unregistered at shutdown), \
         0 for the others."
    );
    let _ = writeln!(text, "# TYPE sipconf_registration_state gauge");
    for (aor, stats) in registrations {
        let now = stats.state();
        for state in RegistrationState::ALL {
            let _ = writeln!(
                text,
                "sipconf_registration_state{{aor=\"{}\",state=\"{}\"}} {}",
                label(aor),
                state.label(),
                u8::from(state == now)
            );
        }
    }
    type Read = fn(&RegistrationStats) -> u64;
    let counters: [(&str, &str, &str, Read); 4] = [
        (
            "sipconf_registration_requests_total",
            "counter",
            "REGISTER requests sent (challenge answers and refreshes included, retransmissions not).",
            |s| s.requests_total.load(Ordering::Relaxed),
        ),
        (
            "sipconf_registration_failures_total",
            "counter",
            "Registration tries that failed: refused, wrong credentials, no answer, registrar not found.",
            |s| s.failures_total.load(Ordering::Relaxed),
        ),
        (
            "sipconf_registration_last_failure_code",
            "gauge",
            "SIP status of the last failed try (408: no answer); 0 before any.",
            |s| s.last_failure_code.load(Ordering::Relaxed),
        ),
        (
            "sipconf_registration_expires_seconds",
            "gauge",
            "Expiry the registrar granted last; 0 while not registered.",
            |s| s.expires_s.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, value) in counters {
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} {kind}");
        for (aor, stats) in registrations {
            let _ = writeln!(text, "{name}{{aor=\"{}\"}} {}", label(aor), value(stats));
        }
    }
}

/// Prometheus text exposition (version 0.0.4).
pub(super) async fn metrics(State(state): State<ApiState>) -> Response {
    use std::fmt::Write;
    let (calls, members, conferences, unsaved) = {
        let registry = state.shared.registry();
        let (calls, members, conferences) = registry.counts();
        (calls, members, conferences, registry.unsaved())
    };
    let media = &state.media_stats;
    let events = &state.shared.events.stats;
    let outbox = state.store.outbox_len().unwrap_or(0);
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(text, "{name}{labels} {value}");
        }
    };
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    metric(
        "sipconf_calls",
        "gauge",
        "Calls by state.",
        &[
            ("{state=\"started\"}", calls[0] as f64),
            ("{state=\"active\"}", calls[1] as f64),
        ],
    );
    metric(
        "sipconf_members_active",
        "gauge",
        "Active conference members.",
        &[("", members as f64)],
    );
    metric(
        "sipconf_conferences",
        "gauge",
        "Conferences by state.",
        &[
            ("{state=\"created\"}", conferences[0] as f64),
            ("{state=\"active\"}", conferences[1] as f64),
            ("{state=\"completed\"}", conferences[2] as f64),
        ],
    );
    metric(
        "sipconf_media_ticks_total",
        "counter",
        "Media clock ticks.",
        &[("", load(&media.ticks))],
    );
    metric(
        "sipconf_media_late_ticks_total",
        "counter",
        "Ticks that started more than one tick late.",
        &[("", load(&media.late_ticks))],
    );
    metric(
        "sipconf_media_tick_seconds",
        "gauge",
        "Duration of media ticks: the last one and the longest so far.",
        &[
            ("{tick=\"last\"}", load(&media.last_tick_ns) / 1e9),
            ("{tick=\"max\"}", load(&media.max_tick_ns) / 1e9),
        ],
    );
    metric(
        "sipconf_rtp_packets_in_total",
        "counter",
        "RTP packets received.",
        &[("", load(&media.packets_in))],
    );
    metric(
        "sipconf_rtp_packets_out_total",
        "counter",
        "RTP packets sent.",
        &[("", load(&media.packets_out))],
    );
    metric(
        "sipconf_rtp_packets_lost_total",
        "counter",
        "Frames missing at playout and concealed.",
        &[("", load(&media.packets_lost))],
    );
    metric(
        "sipconf_rtp_datagrams_dropped_total",
        "counter",
        "RTP and RTCP datagrams dropped: not valid, or a payload type not negotiated (malformed); from neither a member's SDP address nor its signalling or SDP IP (foreign); from a member's IP, not (yet) proven its stream by a run in sequence (learning); a second stream from a member's IP while its own is alive (contested); shared port, from an IP where several members could be learning (ambiguous); SRTP or SRTCP that failed authentication (srtp_auth) or was replayed or too old for the replay window (srtp_replay).",
        &[
            ("{reason=\"malformed\"}", load(&media.malformed)),
            ("{reason=\"foreign\"}", load(&media.foreign)),
            ("{reason=\"learning\"}", load(&media.learning)),
            ("{reason=\"contested\"}", load(&media.contested)),
            ("{reason=\"ambiguous\"}", load(&media.ambiguous)),
            ("{reason=\"srtp_auth\"}", load(&media.srtp_auth_failed)),
            ("{reason=\"srtp_replay\"}", load(&media.srtp_replayed)),
        ],
    );
    metric(
        "sipconf_rtp_send_errors_total",
        "counter",
        "RTP and RTCP sends that failed (socket buffer full, unreachable).",
        &[("", load(&media.send_errors))],
    );
    metric(
        "sipconf_callbacks_delivered_total",
        "counter",
        "Callback events the application accepted.",
        &[("", load(&events.delivered))],
    );
    metric(
        "sipconf_callback_failures_total",
        "counter",
        "Callback tries that failed (fallback tries included).",
        &[("", load(&events.failed_tries))],
    );
    metric(
        "sipconf_callbacks_given_up_total",
        "counter",
        "Callback events dropped after events.max_attempts tries.",
        &[("", load(&events.given_up))],
    );
    let pins = &state.shared.pins;
    metric(
        "sipconf_pin_failures_total",
        "counter",
        "Wrong room PINs entered.",
        &[("", load(&pins.failures))],
    );
    metric(
        "sipconf_pin_lockouts_total",
        "counter",
        "Times a source address was locked out of PIN rooms for wrong PINs.",
        &[("", load(&pins.lockouts))],
    );
    metric(
        "sipconf_pin_refused_total",
        "counter",
        "Calls and PINs refused because their source address was locked out.",
        &[("", load(&pins.refused))],
    );
    metric(
        "sipconf_pin_sources_locked",
        "gauge",
        "Source addresses locked out of PIN rooms now.",
        &[("", load(&pins.locked_now))],
    );
    let limits = &state.shared.sip_limits;
    metric(
        "sipconf_sip_requests_refused_total",
        "counter",
        "SIP requests not served by the per-source limits: from a source outside sip.allow or in sip.deny (denied, dropped); over the source's sip.requests_per_s (rate, dropped); over its sip.max_transactions_per_ip (transactions, 503; OPTIONS dropped); INVITEs over sip.max_pending_invites_per_ip or sip.max_pending_invites (pending_invites, 503).",
        &[
            ("{reason=\"denied\"}", load(&limits.denied)),
            ("{reason=\"rate\"}", load(&limits.over_rate)),
            ("{reason=\"transactions\"}", load(&limits.over_transactions)),
            ("{reason=\"pending_invites\"}", load(&limits.over_pending_invites)),
        ],
    );
    metric(
        "sipconf_sip_sources_tracked",
        "gauge",
        "Source addresses whose SIP request rate is remembered now (at most 4096).",
        &[("", load(&limits.sources_tracked))],
    );
    let (sip, api) = (&state.shared.sip_connections, &state.shared.api_connections);
    metric(
        "sipconf_connections_open",
        "gauge",
        "Accepted TCP connections open now, SIP and API.",
        &[
            ("{listener=\"sip\"}", load(&sip.open)),
            ("{listener=\"api\"}", load(&api.open)),
        ],
    );
    metric(
        "sipconf_connections_refused_total",
        "counter",
        "TCP connections closed at once: their source had its share open (per_ip), or the listener its total.",
        &[
            ("{listener=\"sip\",reason=\"per_ip\"}", load(&sip.refused_per_ip)),
            ("{listener=\"sip\",reason=\"total\"}", load(&sip.refused_total)),
            ("{listener=\"api\",reason=\"per_ip\"}", load(&api.refused_per_ip)),
            ("{listener=\"api\",reason=\"total\"}", load(&api.refused_total)),
        ],
    );
    metric(
        "sipconf_connections_closed_idle_total",
        "counter",
        "TCP connections closed after carrying nothing for their idle timeout.",
        &[
            ("{listener=\"sip\"}", load(&sip.closed_idle)),
            ("{listener=\"api\"}", load(&api.closed_idle)),
        ],
    );
    let links = &state.shared.links;
    metric(
        "sipconf_cascade_links",
        "gauge",
        "Cascade links to other bridges in a conference now (not people).",
        &[("", load(&links.up))],
    );
    metric(
        "sipconf_cascade_links_ended_total",
        "counter",
        "Cascade links that ended (dropped, cut or hung up); the ones this bridge keeps are dialled again.",
        &[("", load(&links.ended))],
    );
    metric(
        "sipconf_cascade_loops_refused_total",
        "counter",
        "Cascade link INVITEs refused with 482 because they named this bridge.",
        &[("", load(&links.loops_refused))],
    );
    if let Some(card) = &state.shared.soundcard {
        soundcard_metrics(&mut metric, &card.stats);
    }
    let store = state.store.health();
    metric(
        "sipconf_store_writable",
        "gauge",
        "1 while the store can write; 0 while it cannot (the API refuses new records with 503).",
        &[("", if store.is_writable() { 1.0 } else { 0.0 })],
    );
    metric(
        "sipconf_store_failed_writes_total",
        "counter",
        "Writes the store could not make (a full disk, a read-only file, an I/O error).",
        &[("", store.failed_writes() as f64)],
    );
    metric(
        "sipconf_records_unsaved",
        "gauge",
        "Records changed by calls while the store could not write, kept in memory until it can.",
        &[("", unsaved as f64)],
    );
    metric(
        "sipconf_callbacks_not_queued_total",
        "counter",
        "Callback events lost because the store could not write them.",
        &[("", load(&events.not_queued))],
    );
    metric(
        "sipconf_callbacks_queued",
        "gauge",
        "Callback events waiting in the outbox.",
        &[("", outbox as f64)],
    );
    write_registrations(&mut text, &state.shared.registrations);
    // Prometheus histograms: cumulative buckets, sum and count.
    write_histogram(
        &mut text,
        "sipconf_media_tick_duration_seconds",
        "Time each media tick took.",
        &media.tick_histogram,
        &media.tick_ns_total,
    );
    write_histogram(
        &mut text,
        "sipconf_media_tick_lateness_seconds",
        "How late each media tick started against its 20 ms schedule.",
        &media.lateness_histogram,
        &media.lateness_ns_total,
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_registration_has_one_state_set_and_its_counters_labelled_by_aor() {
        let stats = Arc::new(RegistrationStats::default());
        stats.set_state(RegistrationState::BackingOff);
        stats.failures_total.store(3, Ordering::Relaxed);
        stats.last_failure_code.store(401, Ordering::Relaxed);
        let mut text = String::new();
        write_registrations(&mut text, &[("sip:2000@pbx".to_owned(), stats)]);
        for line in [
            "sipconf_registration_state{aor=\"sip:2000@pbx\",state=\"registering\"} 0\n",
            "sipconf_registration_state{aor=\"sip:2000@pbx\",state=\"registered\"} 0\n",
            "sipconf_registration_state{aor=\"sip:2000@pbx\",state=\"backing_off\"} 1\n",
            "sipconf_registration_state{aor=\"sip:2000@pbx\",state=\"unregistered\"} 0\n",
            "sipconf_registration_failures_total{aor=\"sip:2000@pbx\"} 3\n",
            "sipconf_registration_last_failure_code{aor=\"sip:2000@pbx\"} 401\n",
            "sipconf_registration_expires_seconds{aor=\"sip:2000@pbx\"} 0\n",
            "# TYPE sipconf_registration_requests_total counter\n",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        let mut none = String::new();
        write_registrations(&mut none, &[]);
        assert!(none.is_empty(), "no registrations, no metric families");
    }
}
