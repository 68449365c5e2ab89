//! Wires the planes together: starts the media thread, the SIP transport, the
//! call driver, the callback sender and the API; tells systemd when it is
//! ready, pings its watchdog from the media clock, and on SIGTERM/SIGINT hangs
//! up every call before exiting. It holds no rule of its own: what a call,
//! a record or a packet becomes is decided in the parts it starts.

use crate::api::{self, ApiState};
use crate::calls::driver::Driver;
use crate::calls::{self, Shared};
use crate::conference::{Registry, StoreFailure};
use crate::config::{Config, RegistrationEntry};
use crate::events::Events;
use crate::media::{self, MediaConfig};
use crate::net::connections::{ConnectionGate, ConnectionStats};
use crate::sip::registration::{self, RegistrationConfig, RegistrationState, RegistrationStats};
use crate::sip::source_guard::LimitStats;
use crate::sip::transport::{SipCommand, SipHandle};
use crate::sip::{self, EndpointConfig};
use crate::store::Store;
use sd_notify::NotifyState;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the media thread: {0}")]
    Media(std::io::Error),
    #[error("cannot listen for SIP on {0}: {1}")]
    Sip(SocketAddr, std::io::Error),
    #[error("cannot open the store {0}: {1}")]
    Store(String, StoreFailure),
    #[error("cannot listen for the API on {0}: {1}")]
    Api(SocketAddr, std::io::Error),
    #[error("{0}")]
    Tls(#[from] sip::tls::TlsSetupError),
}

/// The address put in Via and Contact: the configured one, the listen address
/// when it is specific, or the address of the interface that holds the default
/// route (found by a route lookup; no packet is sent).
fn advertised_sip_address(config: &Config) -> IpAddr {
    if let Some(address) = config.sip.advertised_address {
        return address;
    }
    let listen = config.sip.listen.ip();
    if !listen.is_unspecified() {
        return listen;
    }
    let routed = calls::local_address_towards(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    if routed.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        routed
    }
}

/// The media thread's settings from the file's.
fn media_config(config: &Config) -> MediaConfig {
    MediaConfig {
        max_members: config.media.max_members,
        rtp_timeout: config.media.rtp_timeout,
        jitter_frames: config.media.jitter_frames,
        gate_threshold_dbfs: config.media.gate_threshold_dbfs,
        gate_hangover_frames: media::hangover_frames(config.media.gate_hangover),
        // Room for a talking change and a timeout of every member at once.
        event_queue_len: (2 * config.media.max_members).max(MediaConfig::default().event_queue_len),
        // The first even port of media.rtp_ports carries RTP, the next RTCP.
        shared_port: config.media.shared_port.then(|| {
            SocketAddr::new(
                config.media.bind_address,
                config.media.rtp_ports.start.next_multiple_of(2),
            )
        }),
        ..MediaConfig::default()
    }
}

/// A flood of INVITEs that are never ACKed holds one RTP port pair each for
/// 64 x T1; `sip.max_pending_invites` caps them, which protects the ports
/// only while it is below the number of pairs.
fn warn_if_pending_invites_can_hold_every_port(config: &Config) {
    let ports = &config.media.rtp_ports;
    let pairs = usize::from(ports.end - ports.start.next_multiple_of(2)) / 2;
    if !config.media.shared_port && config.sip.limits.pending_invites >= pairs {
        tracing::warn!(
            max_pending_invites = config.sip.limits.pending_invites,
            rtp_port_pairs = pairs,
            "sip.max_pending_invites is not below the RTP port pairs of media.rtp_ports: \
             INVITEs that are never ACKed can hold every port"
        );
    }
}

/// Runs the bridge until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), StartError> {
    let config = Arc::new(config);
    let media_config = media_config(&config);
    let (media, media_thread) = media::spawn(media_config).map_err(StartError::Media)?;
    let stats = media.stats();

    let advertised = advertised_sip_address(&config);
    let sip_limits = Arc::new(LimitStats::default());
    let sip_connections = Arc::new(ConnectionStats::default());
    let api_connections = Arc::new(ConnectionStats::default());
    warn_if_pending_invites_can_hold_every_port(&config);
    let endpoint_config = EndpointConfig {
        local_addr: SocketAddr::new(advertised, config.sip.listen.port()),
        user_agent: config.sip.user_agent.clone(),
        max_transactions: config.sip.max_transactions,
        // Every member is a dialog; calls still ringing or being refused need room too.
        max_dialogs: config.media.max_members + 64,
        t1: config.sip.t1,
        t2: config.sip.t2,
        session_timer: config.sip.session_timer,
        limits: config.sip.limits.clone(),
        limit_stats: Arc::clone(&sip_limits),
        tls_port: None,
    };
    let endpoint_local = endpoint_config.local_addr;
    let tcp_gate = ConnectionGate::new(config.sip.tcp, Arc::clone(&sip_connections));
    let tls = config.sip.tls.as_ref().map(sip::tls::load).transpose()?;
    let (sip_handle, sip_events, bound) =
        sip::transport::start_with_tls(config.sip.listen, endpoint_config, tcp_gate, tls)
            .await
            .map_err(|e| StartError::Sip(config.sip.listen, e))?;

    let store_path = config.store.path.display().to_string();
    let store = Arc::new(
        Store::open(&config.store.path)
            .map_err(|e| StartError::Store(store_path.clone(), e.into()))?,
    );
    let (registry, recovered) = Registry::open(
        store.clone(),
        SystemTime::now(),
        config.store.completed_in_memory,
    )
    .map_err(|e| StartError::Store(store_path.clone(), e))?;
    let events = Events::new(
        store.clone(),
        format!(
            "{}/v1/users/{}",
            config.api.public_base_url, config.api.user_id
        ),
    );
    let mut shared = Shared {
        sip_limits,
        sip_connections,
        api_connections,
        ..Shared::new(registry, events)
    };
    shared.registrations = config
        .registrations
        .iter()
        .map(|entry| (entry.aor.clone(), Arc::new(RegistrationStats::default())))
        .collect();
    let shared = Arc::new(shared);
    let registering: Vec<_> = config
        .registrations
        .iter()
        .zip(&shared.registrations)
        .map(|(entry, (_, stats))| {
            tokio::spawn(register(
                sip_handle.clone(),
                endpoint_local,
                entry.clone(),
                stats.clone(),
            ))
        })
        .collect();
    let sip_for_shutdown = sip_handle.clone();
    queue_recovery_callbacks(&shared, &recovered);
    hang_up_callers_left_over(&sip_handle, &recovered).await;
    let sender_task = shared.events.spawn_sender(config.events.max_attempts);
    let store_task = tokio::spawn(keep_writing_the_store(shared.clone(), store.clone()));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (driver, switchboard) = Driver::new(config.clone(), sip_handle, media, shared.clone());
    let driver_task = tokio::spawn(driver.run(sip_events, shutdown_rx.clone()));
    let api_task = if config.api.enabled() {
        let state = ApiState::new(
            config.clone(),
            shared.clone(),
            switchboard,
            stats.clone(),
            store.clone(),
        );
        let mut stop = shutdown_rx.clone();
        let (bound, task) = api::serve(state, async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        })
        .await
        .map_err(|e| StartError::Api(config.api.listen, e))?;
        tracing::info!(api = %bound, store = %store_path, "API listening");
        Some(task)
    } else {
        tracing::info!(store = %store_path, "API off: set api.token, api.secret and api.user_id to serve it");
        None
    };

    tracing::info!(
        sip = %bound,
        rooms = config.rooms.len(),
        max_members = config.media.max_members,
        "sipconf ready"
    );
    let _ = sd_notify::notify(&[NotifyState::Ready]);
    let watchdog = tokio::spawn(watchdog(stats.clone()));

    wait_for_stop_signal().await;
    tracing::info!("stopping: hanging up calls");
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    for task in registering {
        task.abort();
    }
    if !config.registrations.is_empty() {
        // Registrars forget us now rather than route calls here until expiry.
        let removed =
            tokio::time::timeout(UNREGISTER_GRACE, sip_for_shutdown.unregister_all()).await;
        if removed.is_err() {
            tracing::info!("a registrar did not answer the removal of our binding in time");
        }
    }
    drop(sip_for_shutdown);
    let _ = shutdown_tx.send(true);
    let _ = driver_task.await;
    if let Some(api_task) = api_task {
        let _ = api_task.await;
    }
    sender_task.abort();
    store_task.abort();
    watchdog.abort();
    // The driver sent Shutdown to the media thread; it stops within one tick.
    let _ = tokio::task::spawn_blocking(move || media_thread.join()).await;
    tracing::info!("stopped");
    Ok(())
}

/// How long shutdown waits for registrars to answer the removal of our bindings.
const UNREGISTER_GRACE: Duration = Duration::from_secs(2);

/// Looks up the registrar of `entry` (again after a failure, waiting as a
/// refused REGISTER would) and hands the registration to the SIP task; then,
/// while it backs off, looks the name up again before each retry, so a
/// registrar that moved is found without a restart.
async fn register(
    sip: SipHandle,
    local_addr: SocketAddr,
    entry: RegistrationEntry,
    stats: Arc<RegistrationStats>,
) {
    let host = entry.host.trim_matches(['[', ']']).to_owned();
    let port = entry.port;
    let look_up = || async {
        tokio::net::lookup_host((host.as_str(), port))
            .await
            .ok()
            .and_then(|mut addresses| {
                // The registrar's address family must be the one we send from.
                addresses.find(|a| a.is_ipv4() == local_addr.is_ipv4())
            })
    };
    let mut failures = 0;
    let mut destination = loop {
        if let Some(destination) = look_up().await {
            break destination;
        }
        let wait = registration::retry_wait(failures, None);
        if failures == 0 {
            tracing::warn!(aor = %entry.aor, host = %entry.host, retry_in_s = wait.as_secs(), "cannot look up the registrar");
        }
        failures += 1;
        stats.failures_total.fetch_add(1, Ordering::Relaxed);
        stats.set_state(RegistrationState::BackingOff);
        tokio::time::sleep(wait).await;
    };
    let config = RegistrationConfig {
        registrar_uri: entry.registrar_uri,
        aor: entry.aor,
        destination,
        transport: entry.transport,
        auth_user: entry.auth_user,
        password: entry.password,
        realm: entry.realm,
        expires_s: entry.expiry_s,
        contact_user: entry.contact_user,
    };
    let Some(key) = sip.register(config, stats.clone()).await else {
        return;
    };
    loop {
        tokio::time::sleep(registration::RETRY_FIRST).await;
        if stats.state() != RegistrationState::BackingOff {
            continue;
        }
        match look_up().await {
            Some(found) if found != destination => {
                if !sip.move_registrar(key, found).await {
                    return;
                }
                destination = found;
            }
            _ => {}
        }
    }
}

/// Queues the callbacks for what a previous run left active and start-up
/// completed: member events, then conference events, then call hang-ups.
fn queue_recovery_callbacks(shared: &Shared, recovered: &crate::conference::Recovered) {
    let registry = shared.registry();
    for member in &recovered.members {
        shared.member_event(&registry, member);
    }
    for conference in &recovered.conferences {
        shared.conference_event(&registry, conference);
    }
    for call in &recovered.calls {
        shared.call_event(&registry, call, "hangup");
    }
    let total = recovered.members.len() + recovered.conferences.len() + recovered.calls.len();
    if total > 0 {
        tracing::info!(
            members = recovered.members.len(),
            conferences = recovered.conferences.len(),
            calls = recovered.calls.len(),
            "completed what the previous run left active"
        );
    }
}

/// How often records that wait for the store are written again, or, with
/// none waiting, whether a store that could not write can again.
const STORE_RETRY: Duration = Duration::from_secs(5);
/// Records written again per `STORE_RETRY`, so the registry's lock is short.
const STORE_RETRY_RECORDS: usize = 256;

/// While the store cannot write (a full disk), retries what waits, so the
/// bridge recovers without a restart once it can (docs/security.md).
async fn keep_writing_the_store(shared: Arc<Shared>, store: Arc<Store>) {
    let mut interval = tokio::time::interval(STORE_RETRY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let waiting = shared.registry().unsaved();
        if waiting > 0 {
            let left = shared.registry().retry_unsaved(STORE_RETRY_RECORDS);
            if left < waiting {
                tracing::info!(
                    written = waiting - left,
                    left,
                    "records written to the store"
                );
            }
        } else if !store.health().is_writable() {
            // Nothing waits, so only a write can tell whether it works again.
            let _ = store.probe();
        }
    }
}

/// Sends a BYE to every caller whose call the previous run left up and
/// whose dialog it kept: after a crash their phones may still be on the
/// line, streaming to ports a new call may get (docs/security.md).
async fn hang_up_callers_left_over(sip: &SipHandle, recovered: &crate::conference::Recovered) {
    let mut sent = 0;
    for text in &recovered.dialogs {
        let Some(dialog) = calls::dialogs::restored(text) else {
            tracing::warn!("a stored dialog is unreadable; its caller gets no BYE");
            continue;
        };
        if sip.send(SipCommand::ByeOrphan(Box::new(dialog))).await {
            sent += 1;
        }
    }
    if sent > 0 {
        tracing::info!(
            callers = sent,
            "sent BYE to callers the previous run left up"
        );
    }
}

/// Pings the systemd watchdog only while the media clock advances, so a stuck
/// media thread gets the service restarted.
async fn watchdog(stats: Arc<media::MediaStats>) {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (timeout / 2).max(Duration::from_millis(100));
    let mut last_ticks = stats.ticks.load(Ordering::Relaxed);
    let mut interval = tokio::time::interval(period);
    // The first tick is immediate; the clock cannot have advanced yet.
    interval.tick().await;
    loop {
        interval.tick().await;
        let ticks = stats.ticks.load(Ordering::Relaxed);
        if ticks != last_ticks {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        } else {
            tracing::error!(
                "the media clock has not ticked for {period:?}: not pinging the watchdog"
            );
        }
        last_ticks = ticks;
    }
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can only be killed; wait forever.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_queue_holds_two_events_per_member_and_the_shared_port_is_the_first_even_one() {
        let mut config = Config::default_config();
        config.media.max_members = 100;
        config.media.rtp_ports = 10001..20000;
        let small = media_config(&config);
        assert_eq!(small.event_queue_len, 1024, "at least the default");
        assert_eq!(small.shared_port, None);

        config.media.max_members = 3000;
        config.media.shared_port = true;
        let big = media_config(&config);
        assert_eq!(big.max_members, 3000);
        // A talking change and an RTP timeout of every member in one tick.
        assert_eq!(big.event_queue_len, 6000);
        assert_eq!(
            big.shared_port,
            Some(SocketAddr::new(config.media.bind_address, 10002))
        );
    }
}
