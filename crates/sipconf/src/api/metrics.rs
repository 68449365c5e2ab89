//! `/metrics`: the bridge's counters in the Prometheus text exposition
//! format (version 0.0.4): calls, members and conferences from the records,
//! the media plane's packets, drops and tick timings, callbacks, wrong PINs,
//! and the store's health. It reads counters and records; it changes nothing.

use super::ApiState;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

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
        "RTP and RTCP datagrams dropped: not valid, or a payload type not negotiated (malformed); from neither a member's SDP address nor its signalling or SDP IP (foreign); from a member's IP, not (yet) proven its stream by a run in sequence (learning); a second stream from a member's IP while its own is alive (contested); shared port, from an IP where several members could be learning (ambiguous).",
        &[
            ("{reason=\"malformed\"}", load(&media.malformed)),
            ("{reason=\"foreign\"}", load(&media.foreign)),
            ("{reason=\"learning\"}", load(&media.learning)),
            ("{reason=\"contested\"}", load(&media.contested)),
            ("{reason=\"ambiguous\"}", load(&media.ambiguous)),
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
