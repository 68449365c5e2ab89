//! SIP for many simulated phones sharing one UDP socket: each phone is one
//! dialog (INVITE / 200 / ACK ... BYE), told apart by a Call-ID that carries
//! the phone's index. Messages are read with the test phone's plain-text
//! reader (`sipconf_testkit::testphone::SipText`), independent of the
//! bridge's own parser.
//!
//! Building a message allocates; that happens a few times per call, never per
//! RTP packet.

use sipconf::media::Codec;
use sipconf_testkit::testphone::{tag_param, uri_of, SipText};
use std::net::{IpAddr, SocketAddr};

/// RFC 3261 T1: first retransmission interval, doubling after each one.
pub const T1_MS: u64 = 500;
/// Give up on an INVITE or BYE without a final answer after 64*T1.
pub const TRANSACTION_TIMEOUT_MS: u64 = 64 * T1_MS;

/// One phone's side of its call.
#[derive(Debug)]
pub struct Dialog {
    call_id: String,
    from_tag: String,
    /// The To header we send: the bridge's tag is added once it answers.
    to: String,
    request_uri: String,
    /// The bridge's Contact, where ACK and BYE are addressed.
    remote_target: String,
    local_sip: SocketAddr,
    cseq: u32,
    invite_branch: String,
    pub invite: String,
}

/// The phone a Call-ID belongs to (`lt<index>-<token>@...`).
pub fn phone_index(call_id: &str) -> Option<usize> {
    call_id.strip_prefix("lt")?.split('-').next()?.parse().ok()
}

/// The method and number of a CSeq header value.
pub fn cseq_of(message: &SipText) -> Option<(u32, &str)> {
    let mut fields = message.header("CSeq")?.split_whitespace();
    let number = fields.next()?.parse().ok()?;
    Some((number, fields.next()?))
}

fn token() -> String {
    use rand::Rng;
    format!("{:016x}", rand::rng().random::<u64>())
}

impl Dialog {
    pub fn new(index: usize, number: &str, target: SocketAddr, local_sip: SocketAddr) -> Dialog {
        let request_uri = format!("sip:{number}@{target}");
        Dialog {
            call_id: format!("lt{index}-{}@sipconf-loadtest", token()),
            from_tag: token(),
            to: format!("<{request_uri}>"),
            remote_target: request_uri.clone(),
            request_uri,
            local_sip,
            cseq: 0,
            invite_branch: String::new(),
            invite: String::new(),
        }
    }

    /// Builds the INVITE (kept in `self.invite` for retransmission) offering one
    /// codec at `rtp`: PCMU, PCMA or G.722, all with static payload types and
    /// an 8000 Hz RTP clock (G.722's too, RFC 3551 4.5.2).
    pub fn build_invite(&mut self, rtp: SocketAddr, codec: Codec) {
        let (family, ip) = match rtp.ip() {
            IpAddr::V4(ip) => ("IP4", ip.to_string()),
            IpAddr::V6(ip) => ("IP6", ip.to_string()),
        };
        let pt = codec.static_payload_type().unwrap_or(0);
        let sdp = format!(
            "v=0\r\no=loadtest 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP {pt}\r\na=rtpmap:{pt} {}/{}\r\na=ptime:20\r\na=sendrecv\r\n",
            rtp.port(),
            codec.encoding_name(),
            codec.rtp_clock_hz()
        );
        self.invite_branch = format!("z9hG4bK{}", token());
        let uri = self.request_uri.clone();
        let branch = self.invite_branch.clone();
        self.invite = self.request("INVITE", &uri, &branch, &sdp);
    }

    /// Takes the To tag and Contact of a final answer to the INVITE.
    pub fn on_invite_answer(&mut self, response: &SipText) {
        if let Some(to) = response.header("To") {
            if tag_param(to).is_some() {
                self.to = to.to_string();
            }
        }
        if let Some(contact) = response.header("Contact") {
            let target = uri_of(contact);
            if !target.is_empty() {
                self.remote_target = target;
            }
        }
    }

    /// ACK for a 2xx: a new transaction to the remote target (RFC 3261 13.2.2.4).
    pub fn ack(&mut self) -> String {
        let target = self.remote_target.clone();
        self.request("ACK", &target, &format!("z9hG4bK{}", token()), "")
    }

    /// ACK for a failure: same branch and Request-URI as the INVITE (17.1.1.3).
    pub fn ack_failure(&mut self) -> String {
        let uri = self.request_uri.clone();
        let branch = self.invite_branch.clone();
        self.request("ACK", &uri, &branch, "")
    }

    pub fn bye(&mut self) -> String {
        let target = self.remote_target.clone();
        self.request("BYE", &target, &format!("z9hG4bK{}", token()), "")
    }

    fn request(&mut self, method: &str, uri: &str, branch: &str, body: &str) -> String {
        if method != "ACK" {
            self.cseq += 1;
        }
        let local = self.local_sip;
        let content_type = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:loadtest@{ip}>;tag={from_tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:loadtest@{local}>\r\nUser-Agent: sipconf-loadtest\r\n{content_type}Content-Length: {len}\r\n\r\n{body}",
            ip = sipconf::sip::uri_host(local.ip()),
            from_tag = self.from_tag,
            to = self.to,
            call_id = self.call_id,
            cseq = self.cseq,
            len = body.len()
        )
    }
}

/// Where the bridge wants RTP, from its SDP answer; the answer must choose `codec`.
pub fn answer_rtp_address(sdp: &str, codec: Codec) -> Result<SocketAddr, &'static str> {
    let ip: IpAddr = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 ").or(l.strip_prefix("c=IN IP6 ")))
        .and_then(|a| a.trim().parse().ok())
        .ok_or("no connection address in the SDP answer")?;
    let mut media = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .ok_or("no m=audio line in the SDP answer")?
        .split_whitespace();
    let port: u16 = media
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("no port in the SDP answer")?;
    let first_pt: Option<u8> = media.nth(1).and_then(|p| p.parse().ok());
    if first_pt != codec.static_payload_type() {
        return Err("the SDP answer chose another codec");
    }
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_id_names_the_phone() {
        let local = SocketAddr::from(([127, 0, 0, 1], 5070));
        let mut dialog = Dialog::new(1234, "1000", "127.0.0.1:5060".parse().unwrap(), local);
        dialog.build_invite(SocketAddr::from(([127, 0, 0, 1], 40000)), Codec::Pcma);
        let invite = SipText::parse(dialog.invite.as_bytes()).expect("a SIP message");
        assert_eq!(invite.method.as_deref(), Some("INVITE"));
        assert_eq!(phone_index(invite.header("Call-ID").unwrap()), Some(1234));
        assert_eq!(cseq_of(&invite), Some((1, "INVITE")));
        assert!(invite.body.contains("m=audio 40000 RTP/AVP 8\r\n"));
    }

    #[test]
    fn acks_and_bye_follow_the_answer() {
        let local = SocketAddr::from(([127, 0, 0, 1], 5070));
        let mut dialog = Dialog::new(1, "1000", "127.0.0.1:5060".parse().unwrap(), local);
        dialog.build_invite(SocketAddr::from(([127, 0, 0, 1], 40000)), Codec::Pcmu);
        let ok = SipText::parse(b"SIP/2.0 200 OK\r\nTo: <sip:1000@127.0.0.1:5060>;tag=br1\r\nContact: <sip:1000@127.0.0.1:5060;transport=udp>\r\nCSeq: 1 INVITE\r\n\r\n").unwrap();
        dialog.on_invite_answer(&ok);
        let ack = dialog.ack();
        assert!(ack.starts_with("ACK sip:1000@127.0.0.1:5060;transport=udp SIP/2.0\r\n"));
        assert!(ack.contains("tag=br1") && ack.contains("CSeq: 1 ACK"));
        let bye = dialog.bye();
        assert!(bye.contains("CSeq: 2 BYE"));
    }

    #[test]
    fn an_invite_from_an_ipv6_phone_is_well_formed() {
        let local = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 5070));
        let target = "[::1]:5060".parse().unwrap();
        let mut dialog = Dialog::new(1, "1000", target, local);
        dialog.build_invite(
            SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 40000)),
            Codec::Pcmu,
        );
        let request = match sipconf::sip::message::parse(dialog.invite.as_bytes(), local) {
            Ok(sipconf::sip::message::Message::Request(request)) => request,
            other => panic!("the bridge's parser says {other:?}:\n{}", dialog.invite),
        };
        assert_eq!(request.uri_user, "1000");
        assert!(dialog.invite.contains("From: <sip:loadtest@[::1]>;tag="));
        assert!(dialog.invite.contains("c=IN IP6 ::1\r\n"));
    }

    #[test]
    fn the_answer_gives_the_rtp_address_only_for_our_codec() {
        let sdp = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30002 RTP/AVP 0 101\r\n";
        assert_eq!(
            answer_rtp_address(sdp, Codec::Pcmu),
            Ok("127.0.0.1:30002".parse().unwrap())
        );
        assert!(answer_rtp_address(sdp, Codec::Pcma).is_err());
        assert!(answer_rtp_address(sdp, Codec::G722).is_err());
    }

    #[test]
    fn a_g722_phone_offers_payload_type_9_at_8000_and_wants_it_answered() {
        let local = SocketAddr::from(([127, 0, 0, 1], 5070));
        let mut dialog = Dialog::new(7, "1000", "127.0.0.1:5060".parse().unwrap(), local);
        dialog.build_invite(SocketAddr::from(([127, 0, 0, 1], 40000)), Codec::G722);
        let invite = SipText::parse(dialog.invite.as_bytes()).expect("a SIP message");
        assert!(invite.body.contains("m=audio 40000 RTP/AVP 9\r\n"));
        assert!(invite.body.contains("a=rtpmap:9 G722/8000\r\n"));
        let g722 =
            "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30004 RTP/AVP 9 101\r\na=rtpmap:9 G722/8000\r\n";
        assert_eq!(
            answer_rtp_address(g722, Codec::G722),
            Ok("127.0.0.1:30004".parse().unwrap())
        );
        let pcmu = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30004 RTP/AVP 0\r\n";
        assert_eq!(
            answer_rtp_address(pcmu, Codec::G722),
            Err("the SDP answer chose another codec")
        );
    }
}
