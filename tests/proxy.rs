//! Behind a record-routing proxy: Kamailio (Debian `kamailio`) on loopback in
//! front of the bridge, as a PBX or an SBC stands in front of it in a real
//! deployment. A phone calls a room through it; the phone's ACK, its hold
//! re-INVITE and its BYE must pass through the proxy too (the proxy's log says
//! which requests it routed by their Route header), and hold and hang-up must
//! work. A proxy that sees in-dialog requests without its Route refuses them,
//! as an SBC would.

mod common;

use common::kamailio::Kamailio;
use common::tone::heard_db;
use common::{require_tool, tempdir::TempDir, Daemon};
use sipconf::media::Codec;
use sipconf_testkit::testphone::{Phone, PhoneOptions};
use std::net::SocketAddr;
use std::time::Duration;

const TONE_HZ: f64 = 700.0;
const AMPLITUDE: f64 = 8000.0;

/// A record-routing proxy for one bridge: it record-routes every new request
/// and relays it to the bridge, relays in-dialog requests by their Route
/// (logging each), and refuses in-dialog requests that do not name it.
fn kamailio_config(port: u16, bridge: SocketAddr) -> String {
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
alias="127.0.0.1:{port}"

loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"

modparam("rr", "append_fromtag", 1)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            xlog("L_NOTICE", "ROUTED $rm cseq=$cs from=$si:$sp\n");
            t_relay();
            exit;
        }}
        xlog("L_NOTICE", "NO-ROUTE $rm from=$si:$sp\n");
        if (is_method("ACK")) {{
            exit;
        }}
        sl_send_reply("404", "Not Here (no Route)");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    record_route();
    xlog("L_NOTICE", "NEW $rm from=$si:$sp\n");
    $du = "sip:{bridge}";
    t_relay();
}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_behind_a_record_routing_proxy_holds_and_hangs_up_through_it() {
    if !require_tool(
        "kamailio",
        "a_phone_behind_a_record_routing_proxy_holds_and_hangs_up_through_it",
    ) {
        return;
    }
    let daemon = Daemon::with_rooms();
    let dir = TempDir::new("sipconf-kamailio");
    let proxy = Kamailio::start_on_loopback(&dir, |port| kamailio_config(port, daemon.sip));
    // The proxy relays OPTIONS to the bridge: a 200 means both are up.
    proxy.wait_until_answering().await;

    let mut listener = Phone::call(PhoneOptions::new(daemon.sip, "1000", Codec::Pcmu))
        .await
        .expect("the listener calls the room directly");
    let mut phone = Phone::call(PhoneOptions::new(proxy.addr, "1000", Codec::Pcmu))
        .await
        .unwrap_or_else(|e| panic!("call through the proxy: {e}; its log:\n{}", proxy.log()));
    let route = phone.route_set().to_vec();
    assert_eq!(
        route.len(),
        1,
        "the bridge's 200 carries the proxy's Record-Route: {route:?}"
    );
    assert!(
        route[0].contains(&format!("127.0.0.1:{};lr", proxy.addr.port())),
        "{route:?}"
    );

    let before = heard_db(&mut listener, &mut phone, TONE_HZ, AMPLITUDE).await;
    assert!(
        before.abs() <= 1.0,
        "the room hears the proxied phone at {before:.1} dB"
    );

    let answer = phone
        .reinvite("sendonly")
        .await
        .unwrap_or_else(|e| panic!("hold through the proxy: {e}; its log:\n{}", proxy.log()));
    assert!(answer.contains("a=recvonly"), "hold answer: {answer}");
    let held = heard_db(&mut listener, &mut phone, TONE_HZ, AMPLITUDE).await;
    assert!(
        held < -40.0,
        "the held phone is still heard at {held:.1} dB"
    );

    let status = phone
        .hangup()
        .await
        .unwrap_or_else(|e| panic!("BYE through the proxy: {e}; its log:\n{}", proxy.log()));
    assert_eq!(status, 200);
    assert!(
        daemon.wait_for_log("call ended: caller hung up", Duration::from_secs(2)),
        "the bridge ended the call on the phone's BYE"
    );

    let log = proxy.log();
    for (method, cseq) in [("ACK", "1"), ("INVITE", "2"), ("ACK", "2"), ("BYE", "3")] {
        assert!(
            log.contains(&format!("ROUTED {method} cseq={cseq} ")),
            "the proxy did not route the phone's {method} (CSeq {cseq}); its log:\n{log}"
        );
    }
    assert!(
        !log.contains("NO-ROUTE"),
        "a request missed the route set:\n{log}"
    );
    listener.hangup().await.expect("listener bye");
}
