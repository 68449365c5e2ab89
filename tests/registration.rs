//! The bridge as an extension of a registering PBX (docs/pbx.md, "A PBX that
//! wants an extension to register"): Kamailio (Debian `kamailio`, with
//! `registrar`, `usrloc` and `auth`) on loopback is the PBX. The bridge
//! registers with it (digest, qop=auth), refreshes when the registrar's short
//! grant asks, a phone calls the extension through Kamailio, which finds the
//! bridge in its location table and relays the call, and the call lands in the
//! configured room: the room hears the phone and the phone hears the room. At
//! shutdown the bridge removes its binding. With a wrong password the bridge
//! reports the failure in /metrics and backs off rather than hammer the
//! registrar.

mod common;

use common::api::{api_sections, Api, SECRET, TOKEN};
use common::kamailio::Kamailio;
use common::tone::heard_db;
use common::{free_port, require_tool, tempdir::TempDir, Daemon};
use sipconf::media::Codec;
use sipconf_testkit::testphone::{CallError, Phone, PhoneOptions};
use std::time::{Duration, Instant};

const PASSWORD: &str = "ext-2000-secret";
const TONE_HZ: f64 = 700.0;
const AMPLITUDE: f64 = 8000.0;
/// The expiry the registrar grants whatever the bridge asks: short, so the
/// refresh comes within the test.
const GRANTED_S: u64 = 6;

/// A registrar for extension 2000 (password `PASSWORD`, realm the To
/// domain), that grants `GRANTED_S` seconds, checks digest nonce counts, and
/// relays INVITEs to whoever registered the dialled user. Each REGISTER is
/// logged with its Expires and Authorization.
/// With `tcp`, it listens for SIP over TCP on the same port too.
fn registrar_config(port: u16, tcp: bool) -> String {
    let tcp = if tcp {
        format!("listen=tcp:127.0.0.1:{port}\ntcp_children=1")
    } else {
        "disable_tcp=yes".to_owned()
    };
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
{tcp}
auto_aliases=no
listen=udp:127.0.0.1:{port}
alias="127.0.0.1:{port}"

loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"

modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", {GRANTED_S})
modparam("registrar", "min_expires", 1)
modparam("auth", "nonce_count", 1)
modparam("auth", "secret", "sipconf-test-secret")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (is_method("OPTIONS") && !has_totag()) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    if (is_method("REGISTER")) {{
        xlog("L_NOTICE", "REGISTER cseq=$cs proto=$pr expires=$hdr(Expires) auth=[$hdr(Authorization)]\n");
        if (!pv_www_authenticate("$td", "{PASSWORD}", "0")) {{
            xlog("L_NOTICE", "CHALLENGED cseq=$cs\n");
            www_challenge("$td", "1");
            exit;
        }}
        consume_credentials();
        if (!save("location")) {{
            sl_reply_error();
            exit;
        }}
        xlog("L_NOTICE", "SAVED cseq=$cs expires=$hdr(Expires)\n");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (has_totag()) {{
        t_relay();
        exit;
    }}
    if (!lookup("location")) {{
        xlog("L_NOTICE", "NOT-REGISTERED $ru\n");
        sl_send_reply("404", "Not Registered");
        exit;
    }}
    xlog("L_NOTICE", "RELAYED $rm to $ru\n");
    t_on_reply("RELAYED_REPLY");
    t_relay();
}}

onreply_route[RELAYED_REPLY] {{
    xlog("L_NOTICE", "REPLY $rs over $pr\n");
}}
"#
    )
}

/// The bridge with room 1000, registered as extension 2000 at `registrar`
/// with `password` (and the `extra` keys), and its API (for /metrics).
fn bridge(registrar: &Kamailio, password: &str, extra: &str, store: &TempDir) -> (Daemon, Api) {
    let api_port = free_port();
    let sections = format!(
        "[[room]]\nnumber = \"1000\"\n\n\
         [[registration]]\nregistrar = \"sip:{}\"\nuser = \"2000\"\npassword = \"{password}\"\n\
         contact_user = \"conf2000\"\nroom = \"1000\"\n{extra}\n{}",
        registrar.addr,
        api_sections(api_port, &store.path().join("sipconf.db"), "")
    );
    (Daemon::start("", &sections), Api::new(api_port))
}

async fn metrics(api: &Api) -> String {
    api.send(
        api.client
            .get(format!("{}/metrics", api.base))
            .basic_auth(TOKEN, Some(SECRET)),
    )
    .await
    .text
}

/// The value of the sample `name{labels}` in a Prometheus text.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name_and_labels)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// Waits (bounded) until the registrar's log holds `count` lines containing `needle`.
fn wait_for_registrar_log(
    registrar: &Kamailio,
    needle: &str,
    count: usize,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if registrar.log().matches(needle).count() >= count {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_registers_as_an_extension_and_calls_to_it_reach_the_room() {
    if !require_tool(
        "kamailio",
        "the_bridge_registers_as_an_extension_and_calls_to_it_reach_the_room",
    ) {
        return;
    }
    let dir = TempDir::new("sipconf-registrar");
    let registrar = Kamailio::start_on_loopback(&dir, |port| registrar_config(port, false));
    registrar.wait_until_answering().await;
    let (mut daemon, api) = bridge(&registrar, PASSWORD, "", &dir);
    let aor = format!("sip:2000@{}", registrar.addr);

    assert!(
        daemon.wait_for_log("registered", Duration::from_secs(10)),
        "the bridge did not register; the registrar's log:\n{}",
        registrar.log()
    );
    let log = registrar.log();
    assert!(log.contains("CHALLENGED cseq=1"), "{log}");
    assert!(log.contains("REGISTER cseq=1 proto=udp"), "{log}");
    assert!(
        log.contains("SAVED cseq=2 expires=3600"),
        "asked for the configured hour: {log}"
    );
    let text = metrics(&api).await;
    let state = |s: &str| format!("sipconf_registration_state{{aor=\"{aor}\",state=\"{s}\"}}");
    assert_eq!(sample(&text, &state("registered")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &state("backing_off")), Some(0.0), "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("sipconf_registration_expires_seconds{{aor=\"{aor}\"}}")
        ),
        Some(GRANTED_S as f64),
        "the registrar's grant, not our wish: {text}"
    );

    // The refresh is due at half the 6 s grant, on the nonce already known,
    // counted up: accepted without a new challenge.
    assert!(
        wait_for_registrar_log(
            &registrar,
            "SAVED cseq=3 ",
            1,
            Duration::from_secs(GRANTED_S + 2)
        ),
        "no refresh before the binding expired; the registrar's log:\n{}",
        registrar.log()
    );
    let log = registrar.log();
    assert!(!log.contains("CHALLENGED cseq=3"), "{log}");
    let refresh = log
        .lines()
        .find(|l| l.contains("REGISTER cseq=3 "))
        .expect("refresh logged");
    assert!(refresh.contains("nc=00000002"), "{refresh}");
    assert_eq!(
        daemon
            .log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(" registered"))
            .count(),
        1,
        "a refresh is not logged as a new registration"
    );

    // A phone dials the extension at the PBX; the PBX relays to the bridge.
    let mut listener = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("the listener calls room 1000 directly");
    let mut caller = Phone::call(PhoneOptions::new(registrar.addr, "2000", Codec::Pcmu))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "call to extension 2000: {e}; the registrar's log:\n{}",
                registrar.log()
            )
        });
    assert!(
        registrar
            .log()
            .contains(&format!("RELAYED INVITE to sip:conf2000@{}", daemon.sip)),
        "{}",
        registrar.log()
    );
    let room_hears = heard_db(&mut listener, &mut caller, TONE_HZ, AMPLITUDE).await;
    assert!(
        room_hears.abs() <= 1.0,
        "the room hears the extension's caller at {room_hears:.1} dB"
    );
    let caller_hears = heard_db(&mut caller, &mut listener, TONE_HZ, AMPLITUDE).await;
    assert!(
        caller_hears.abs() <= 1.0,
        "the extension's caller hears the room at {caller_hears:.1} dB"
    );
    assert_eq!(caller.hangup().await.expect("bye"), 200);
    assert_eq!(listener.hangup().await.expect("bye"), 200);

    // Stopping removes the binding: the extension is unreachable at once.
    daemon.stop();
    assert!(
        wait_for_registrar_log(&registrar, "expires=0", 2, Duration::from_secs(3)),
        "no removal at shutdown; the registrar's log:\n{}",
        registrar.log()
    );
    match Phone::call(PhoneOptions::new(registrar.addr, "2000", Codec::Pcmu)).await {
        Err(CallError::Rejected(404, _)) => {}
        other => panic!(
            "after the bridge stopped, a call to 2000 got {:?}",
            other.map(|_| "an answer")
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_reported_failed_and_backed_off() {
    if !require_tool(
        "kamailio",
        "a_wrong_password_is_reported_failed_and_backed_off",
    ) {
        return;
    }
    let dir = TempDir::new("sipconf-registrar");
    let registrar = Kamailio::start_on_loopback(&dir, |port| registrar_config(port, false));
    registrar.wait_until_answering().await;
    let (daemon, api) = bridge(&registrar, "not-the-password", "", &dir);
    let aor = format!("sip:2000@{}", registrar.addr);

    assert!(
        daemon.wait_for_log("registration failed", Duration::from_secs(10)),
        "no failure logged; the registrar's log:\n{}",
        registrar.log()
    );
    let text = metrics(&api).await;
    let state = |s: &str| format!("sipconf_registration_state{{aor=\"{aor}\",state=\"{s}\"}}");
    assert_eq!(sample(&text, &state("backing_off")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &state("registered")), Some(0.0), "{text}");
    let counter = |name: &str| sample(&text, &format!("{name}{{aor=\"{aor}\"}}"));
    assert_eq!(
        counter("sipconf_registration_failures_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        counter("sipconf_registration_last_failure_code"),
        Some(401.0),
        "{text}"
    );
    assert_eq!(
        counter("sipconf_registration_requests_total"),
        Some(2.0),
        "{text}"
    );

    // The next try waits 30 s: in the next 3 s the registrar sees nothing more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = registrar.log();
    assert_eq!(
        log.matches("REGISTER cseq=").count(),
        2,
        "one REGISTER and one answer to the challenge, then quiet: {log}"
    );
    let text = metrics(&api).await;
    assert_eq!(
        sample(
            &text,
            &format!("sipconf_registration_requests_total{{aor=\"{aor}\"}}")
        ),
        Some(2.0),
        "{text}"
    );
    match Phone::call(PhoneOptions::new(registrar.addr, "2000", Codec::Pcmu)).await {
        Err(CallError::Rejected(404, _)) => {}
        other => panic!(
            "a call to the unregistered extension got {:?}",
            other.map(|_| "an answer")
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_the_bridge_registers_and_the_pbx_relays_calls_over_tcp() {
    if !require_tool(
        "kamailio",
        "over_tcp_the_bridge_registers_and_the_pbx_relays_calls_over_tcp",
    ) {
        return;
    }
    let dir = TempDir::new("sipconf-registrar");
    let registrar = Kamailio::start_on_loopback(&dir, |port| registrar_config(port, true));
    registrar.wait_until_answering().await;
    let (daemon, _api) = bridge(&registrar, PASSWORD, "transport = \"tcp\"\n", &dir);
    assert!(
        daemon.wait_for_log("registered", Duration::from_secs(10)),
        "the bridge did not register over TCP; the registrar's log:\n{}",
        registrar.log()
    );
    let log = registrar.log();
    assert!(log.contains("REGISTER cseq=2 proto=tcp"), "{log}");

    let mut listener = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("the listener calls room 1000 directly");
    let mut caller = Phone::call(PhoneOptions::new(registrar.addr, "2000", Codec::Pcmu))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "call to extension 2000: {e}; the registrar's log:\n{}",
                registrar.log()
            )
        });
    let log = registrar.log();
    assert!(
        log.contains(&format!(
            "RELAYED INVITE to sip:conf2000@{};transport=tcp",
            daemon.sip
        )),
        "{log}"
    );
    assert!(log.contains("REPLY 200 over tcp"), "{log}");
    let room_hears = heard_db(&mut listener, &mut caller, TONE_HZ, AMPLITUDE).await;
    assert!(
        room_hears.abs() <= 1.0,
        "the room hears the extension's caller at {room_hears:.1} dB"
    );
    assert_eq!(caller.hangup().await.expect("bye"), 200);
    assert_eq!(listener.hangup().await.expect("bye"), 200);
}
