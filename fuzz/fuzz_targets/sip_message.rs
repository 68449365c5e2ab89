//! One SIP datagram. Whatever it holds, what we would send back is well
//! formed (no header line smuggled in through a copied value) and reads back
//! with the fields that match it to its transaction:
//!
//! - a request: our response to it carries its Via branch, Call-ID, CSeq and
//!   tags (RFC 3261 8.2.6.2); a request we write from its From, To, Call-ID
//!   and CSeq parses back to the same dialog identifiers (parse, write,
//!   parse);
//! - a response: written again from the headers it echoes, it parses back to
//!   the same code, branch, Call-ID, CSeq and To tag;
//! - a malformed request we can answer: the 4xx is well formed.
#![no_main]

use ezk_sip_types::Name;
use libfuzzer_sys::fuzz_target;
use sipconf::sip::message::{
    self, write_request, write_response, EchoHeaders, Message, OutgoingRequest,
};
use sipconf_fuzz::{assert_well_formed_sip, source};

const OUR_TAG: &str = "fuzz1";

fn response(message: Message) -> Box<message::Response> {
    match message {
        Message::Response(response) => response,
        Message::Request(request) => panic!("expected a response, got {request:?}"),
    }
}

fuzz_target!(|datagram: &[u8]| {
    match message::parse(datagram, source()) {
        Ok(Message::Request(request)) => {
            let ok = write_response(
                &request.echo,
                200,
                "OK",
                Some(OUR_TAG),
                &[],
                None,
                "sipconf",
            );
            let answer = response(assert_well_formed_sip(&ok));
            assert_eq!(answer.code, 200);
            assert_eq!(answer.branch, request.branch);
            assert_eq!(answer.call_id, request.call_id);
            assert_eq!(answer.cseq, request.cseq);
            assert_eq!(answer.cseq_method, request.cseq_method);
            let expected_tag = request.to_tag.clone().unwrap_or_else(|| OUR_TAG.to_owned());
            assert_eq!(answer.to_tag.as_deref(), Some(expected_tag.as_str()));

            let (Some(from), Some(to)) = (&request.echo.from, &request.echo.to) else {
                panic!("a parsed request has From and To");
            };
            let method = request.method.to_string();
            let written = write_request(&OutgoingRequest {
                method: &method,
                request_uri: "sip:bridge@192.0.2.1",
                via: &request.echo.vias[0],
                routes: &[],
                from,
                to,
                call_id: &request.call_id,
                cseq: request.cseq,
                extra: &[],
                body: None,
                user_agent: "sipconf",
            });
            let Message::Request(again) = assert_well_formed_sip(&written) else {
                panic!("a request we write parses as a request");
            };
            assert_eq!(again.method, request.method);
            assert_eq!(again.branch, request.branch);
            assert_eq!(again.call_id, request.call_id);
            assert_eq!(again.cseq, request.cseq);
            assert_eq!(again.from_tag, request.from_tag);
            assert_eq!(again.to_tag, request.to_tag);
            assert_eq!(again.from_uri, request.from_uri);
            assert_eq!(again.to_uri, request.to_uri);
        }
        Ok(Message::Response(parsed)) => {
            let echo = EchoHeaders {
                vias: parsed.header_values(&Name::VIA),
                from: parsed.header_values(&Name::FROM).into_iter().next(),
                to: Some(parsed.to.clone()),
                call_id: parsed.header_values(&Name::CALL_ID).into_iter().next(),
                cseq: parsed.header_values(&Name::CSEQ).into_iter().next(),
            };
            let written = write_response(&echo, parsed.code, &parsed.reason, None, &[], None, "x");
            let again = response(assert_well_formed_sip(&written));
            assert_eq!(again.code, parsed.code);
            assert_eq!(again.branch, parsed.branch);
            assert_eq!(again.call_id, parsed.call_id);
            assert_eq!(again.cseq, parsed.cseq);
            assert_eq!(again.cseq_method, parsed.cseq_method);
            assert_eq!(again.to_tag, parsed.to_tag);
        }
        Err(malformed) => {
            let Some(echo) = malformed.echo else {
                return;
            };
            let reason = malformed.error.to_string();
            let answer = write_response(
                &echo,
                malformed.error.status_code(),
                &reason,
                Some(OUR_TAG),
                &[],
                None,
                "sipconf",
            );
            // It need not parse (a request without Call-ID gets an answer without one),
            // but it must not carry anything the request smuggled in.
            let text = std::str::from_utf8(&answer).expect("UTF-8");
            let (head, _) = text.split_once("\r\n\r\n").expect("a whole head");
            assert!(head.split("\r\n").all(|line| !line.contains(['\r', '\n'])));
            assert!(text.starts_with(&format!(
                "SIP/2.0 {} {reason}\r\n",
                malformed.error.status_code()
            )));
        }
    }
});
