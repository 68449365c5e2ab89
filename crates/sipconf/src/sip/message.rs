//! SIP messages on the wire: parse a datagram (or one framed TCP message) into a
//! [`Request`] or [`Response`] with the headers every transaction needs already checked,
//! and write the few messages we send as text.
//!
//! Header lines, compact names and folding are handled by `ezk-sip-types`; this module
//! decides which headers are mandatory (RFC 3261 section 8.1.1) and names exactly what is
//! wrong so a request can be answered `400 <reason>`. It keeps no state and decides no
//! answer: the endpoint does.

use bytes::Bytes;
use ezk_sip_types::header::typed::{CSeq, CallID, Contact, FromTo, Via};
use ezk_sip_types::header::HeaderParse;
use ezk_sip_types::msg::{Line, MessageLine, PullParser};
use ezk_sip_types::parse::Parse;
use ezk_sip_types::print::AppendCtx;
use ezk_sip_types::uri::{SipUri, SipUriUserPart};
use ezk_sip_types::{Headers, Method, Name};
use std::fmt::Write as _;
use std::net::SocketAddr;

/// RFC 3261 section 8.1.1.7: branches starting with this are unique per transaction.
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

/// What is wrong with a message. The `Display` text is what goes into the reason phrase
/// of a `400` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("Message head is not UTF-8")]
    HeadNotUtf8,
    #[error("Incomplete message head")]
    IncompleteHead,
    #[error("Malformed start line")]
    MalformedStartLine,
    #[error("Malformed Request-URI")]
    MalformedRequestUri,
    #[error("Unsupported URI Scheme")]
    UnsupportedUriScheme,
    #[error("Missing Via header")]
    MissingVia,
    #[error("Malformed Via")]
    MalformedVia,
    #[error("Missing Call-ID header")]
    MissingCallId,
    #[error("Missing From header")]
    MissingFrom,
    #[error("Malformed From")]
    MalformedFrom,
    #[error("Missing To header")]
    MissingTo,
    #[error("Malformed To")]
    MalformedTo,
    #[error("Missing CSeq header")]
    MissingCSeq,
    #[error("Malformed CSeq")]
    MalformedCSeq,
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    #[error("Malformed Content-Length")]
    MalformedContentLength,
    #[error("Content-Length mismatch")]
    ContentLengthMismatch,
    #[error("Malformed Record-Route")]
    MalformedRecordRoute,
}

impl ParseError {
    /// The status code of the answer to a request with this error.
    pub fn status_code(self) -> u16 {
        match self {
            // RFC 3261 8.2.2.1
            ParseError::UnsupportedUriScheme => 416,
            _ => 400,
        }
    }
}

/// The first line: parsed, or a request line whose Request-URI we cannot use but whose
/// request can still be answered once the Via is known.
enum StartLine {
    Parsed(MessageLine),
    UnusableRequest(Method, ParseError),
}

/// `METHOD uri SIP/2.0` where `uri` is not a SIP URI we can parse.
fn unusable_request_line(line: &str) -> Option<StartLine> {
    let mut parts = line.split_ascii_whitespace();
    let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != "SIP/2.0" || method.is_empty() {
        return None;
    }
    if !method
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
    {
        return None;
    }
    let error = match uri.split_once(':') {
        Some((scheme, _))
            if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") =>
        {
            ParseError::UnsupportedUriScheme
        }
        _ => ParseError::MalformedRequestUri,
    };
    Some(StartLine::UnusableRequest(Method::from(method), error))
}

/// Header values a response must copy from its request (RFC 3261 section 8.2.6.2), kept
/// as written so that parameters we do not understand survive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EchoHeaders {
    /// Every Via value in order; the first one carries our `received`/`rport`.
    pub vias: Vec<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub call_id: Option<String>,
    pub cseq: Option<String>,
}

/// A parsed, validated request.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    /// User part of the Request-URI (the number dialled), empty if none.
    pub uri_user: String,
    pub headers: Headers,
    pub body: Bytes,
    pub echo: EchoHeaders,
    pub branch: String,
    /// Top Via sent-by as written, part of the transaction key (RFC 3261 17.2.3).
    pub sent_by: String,
    pub call_id: String,
    pub cseq: u32,
    pub cseq_method: Method,
    pub from_uri: String,
    pub from_tag: Option<String>,
    pub to_uri: String,
    pub to_tag: Option<String>,
}

/// A parsed, validated response.
#[derive(Clone, Debug)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub headers: Headers,
    /// To as written, with the callee's tag: the remote party of a dialog we create.
    pub to: String,
    pub to_tag: Option<String>,
    pub body: Bytes,
    pub branch: String,
    pub call_id: String,
    pub cseq: u32,
    pub cseq_method: Method,
}

#[derive(Clone, Debug)]
pub enum Message {
    Request(Box<Request>),
    Response(Box<Response>),
}

/// A message we could not use. `echo` is set when it was a request with a usable Via, so
/// it can still be answered with `400 <error>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    pub error: ParseError,
    pub echo: Option<Box<EchoHeaders>>,
    /// The request method when the start line parsed (never answer an ACK).
    pub method: Option<Method>,
}

impl Malformed {
    fn unanswerable(error: ParseError) -> Self {
        Malformed {
            error,
            echo: None,
            method: None,
        }
    }
}

/// Replace folded line breaks (CRLF followed by white space) with one space (RFC 3261 7.3.1).
fn unfold(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' || c == '\n' {
            while chars
                .peek()
                .is_some_and(|c| matches!(c, '\r' | '\n' | ' ' | '\t'))
            {
                chars.next();
            }
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

fn raw_value(headers: &Headers, name: &Name) -> Option<String> {
    headers.get_raw(name).next().map(|v| v.trim().to_owned())
}

fn uri_string(from_to: &FromTo) -> String {
    from_to.uri.uri.default_print_ctx().to_string()
}

/// Parse one message. `source` is where it came from: requests get `received`/`rport`
/// stamped on their top Via (RFC 3261 18.2.1, RFC 3581 section 4).
pub fn parse(datagram: &[u8], source: SocketAddr) -> Result<Message, Malformed> {
    let mut lines = PullParser::new(datagram, 0);
    let start_line = match lines.next() {
        Some(Ok(line)) => line,
        _ => return Err(Malformed::unanswerable(ParseError::IncompleteHead)),
    };
    let start_line = std::str::from_utf8(start_line)
        .map_err(|_| Malformed::unanswerable(ParseError::HeadNotUtf8))?;
    let start_bytes = Bytes::copy_from_slice(start_line.trim().as_bytes());
    let start = std::str::from_utf8(&start_bytes)
        .ok()
        .and_then(|s| MessageLine::parse(&start_bytes)(s).ok())
        .filter(|(rest, _)| rest.trim().is_empty())
        .map(|(_, line)| StartLine::Parsed(line))
        .or_else(|| unusable_request_line(start_line.trim()))
        .ok_or(Malformed::unanswerable(ParseError::MalformedStartLine))?;

    let mut headers = Headers::new();
    loop {
        match lines.next() {
            // PullParser yields None exactly at the empty line that ends the head.
            None => break,
            Some(Err(_)) => return Err(Malformed::unanswerable(ParseError::IncompleteHead)),
            Some(Ok(line)) => {
                let Ok(line) = std::str::from_utf8(line) else {
                    return Err(Malformed::unanswerable(ParseError::HeadNotUtf8));
                };
                let line = Bytes::from(unfold(line));
                // Unparseable header lines are skipped: what matters is checked below.
                if let Ok(text) = std::str::from_utf8(&line) {
                    if let Ok((_, parsed)) = Line::parse(&line, text) {
                        headers.insert(parsed.name, parsed.value);
                    }
                }
            }
        }
    }
    let head_end = lines.head_end().min(datagram.len());
    let available = &datagram[head_end..];

    let is_request = match &start {
        StartLine::Parsed(line) => line.is_request(),
        StartLine::UnusableRequest(..) => true,
    };
    let mut echo = EchoHeaders {
        vias: headers
            .get_raw(&Name::VIA)
            .map(|v| v.trim().to_owned())
            .collect(),
        from: raw_value(&headers, &Name::FROM),
        to: raw_value(&headers, &Name::TO),
        call_id: raw_value(&headers, &Name::CALL_ID),
        cseq: raw_value(&headers, &Name::CSEQ),
    };

    // The top Via is the first value of the first Via line as written: it is
    // what a response echoes first, and what the transaction is matched on.
    let top_via = match headers.try_get_named::<Vec<Via>>() {
        None => return Err(Malformed::unanswerable(ParseError::MissingVia)),
        Some(Ok(_)) => echo
            .vias
            .first()
            .and_then(|first| split_top_via(first))
            .map(|(via, _)| via)
            .ok_or(Malformed::unanswerable(ParseError::MalformedVia))?,
        Some(Err(_)) => return Err(Malformed::unanswerable(ParseError::MalformedVia)),
    };
    if is_request {
        if let Some(first) = echo.vias.first_mut() {
            *first = stamp_received(first, source);
        }
    }
    // From here on a request can be answered.
    let start = match start {
        StartLine::Parsed(line) => line,
        StartLine::UnusableRequest(method, error) => {
            return Err(Malformed {
                error,
                echo: Some(Box::new(echo)),
                method: Some(method),
            })
        }
    };
    let request_method = start.request_method().cloned();
    let fail = |error: ParseError| Malformed {
        error,
        method: request_method.clone(),
        echo: is_request.then(|| Box::new(echo.clone())),
    };

    let call_id = match headers.try_get_named::<CallID>() {
        Some(Ok(id)) if !id.0.is_empty() => id.0.to_string(),
        _ => return Err(fail(ParseError::MissingCallId)),
    };
    let cseq = match headers.try_get_named::<CSeq>() {
        None => return Err(fail(ParseError::MissingCSeq)),
        Some(Ok(cseq)) => cseq,
        Some(Err(_)) => return Err(fail(ParseError::MalformedCSeq)),
    };
    // CSeq must be exactly "number method" with nothing after (RFC 3261 20.16).
    if echo
        .cseq
        .as_deref()
        .is_some_and(|raw| raw.split_ascii_whitespace().count() != 2)
    {
        return Err(fail(ParseError::MalformedCSeq));
    }
    // From and To are read from the values we echo, whole: a tag we add to a To
    // with trailing text after its URI would be lost in that text.
    let (from, from_tag) = match echo.from.as_deref() {
        None => return Err(fail(ParseError::MissingFrom)),
        Some(raw) => parse_whole::<FromTo>(raw)
            .zip(tag_param(raw))
            .ok_or_else(|| fail(ParseError::MalformedFrom))?,
    };
    let (to, to_tag) = match echo.to.as_deref() {
        None => return Err(fail(ParseError::MissingTo)),
        Some(raw) => parse_whole::<FromTo>(raw)
            .zip(tag_param(raw))
            .ok_or_else(|| fail(ParseError::MalformedTo))?,
    };

    let body = match headers.get_raw(&Name::CONTENT_LENGTH).next() {
        None => Bytes::copy_from_slice(available),
        Some(value) => {
            let length: usize = value
                .trim()
                .parse()
                .map_err(|_| fail(ParseError::MalformedContentLength))?;
            // RFC 3261 18.3: a shorter body is an error, extra bytes are discarded.
            let body = available
                .get(..length)
                .ok_or_else(|| fail(ParseError::ContentLengthMismatch))?;
            Bytes::copy_from_slice(body)
        }
    };

    if !record_routes_are_usable(&headers) {
        return Err(fail(ParseError::MalformedRecordRoute));
    }

    let branch = top_via
        .params
        .get_val("branch")
        .map(|b| b.to_string())
        .unwrap_or_default();
    match start {
        MessageLine::Request(line) => {
            if cseq.method != line.method {
                return Err(fail(ParseError::CSeqMethodMismatch));
            }
            let uri_user = match &line.uri.user_part {
                SipUriUserPart::User(user) => user.to_string(),
                SipUriUserPart::UserPw(user_pw) => user_pw.user.to_string(),
                SipUriUserPart::Empty => String::new(),
            };
            Ok(Message::Request(Box::new(Request {
                method: line.method,
                uri_user,
                body,
                echo,
                branch,
                sent_by: top_via.sent_by.default_print_ctx().to_string(),
                call_id,
                cseq: cseq.cseq,
                cseq_method: cseq.method,
                from_uri: uri_string(&from),
                from_tag,
                to_uri: uri_string(&to),
                to_tag,
                headers,
            })))
        }
        MessageLine::Response(line) => Ok(Message::Response(Box::new(Response {
            code: line.code.into_u16(),
            reason: line.reason.map(|r| r.to_string()).unwrap_or_default(),
            to: echo.to.clone().unwrap_or_default(),
            to_tag,
            headers,
            body,
            branch,
            call_id,
            cseq: cseq.cseq,
            cseq_method: cseq.method,
        }))),
    }
}

/// A header value parsed up to its end; `None` when the parser stops before it.
fn parse_whole<T: HeaderParse>(value: &str) -> Option<T> {
    let bytes = Bytes::copy_from_slice(value.as_bytes());
    let text = std::str::from_utf8(&bytes).ok()?;
    let (rest, parsed) = T::parse(&bytes, text).ok()?;
    rest.trim().is_empty().then_some(parsed)
}

/// The `tag` parameter of a From or To value: `Some(None)` without one,
/// `None` when it has one without a value or more than one (RFC 3261 25.1,
/// `tag-param = "tag" EQUAL token`; parameter names are case-insensitive,
/// 7.3.1). Read here rather than by the header parser, which sees only a
/// lower-case `tag`: a `Tag=x` we missed would get a second tag from us. The
/// parameters follow the `>` of a name-addr, or the first `;` of a bare URI
/// (RFC 3261 20.10).
fn tag_param(value: &str) -> Option<Option<String>> {
    let params = match value.rfind('>') {
        Some(close) if value.contains('<') => &value[close + 1..],
        _ => value.split_once(';').map_or("", |(_, params)| params),
    };
    let mut tags = params.split(';').filter_map(|param| {
        let (name, tag) = param.split_once('=').unwrap_or((param, ""));
        name.trim().eq_ignore_ascii_case("tag").then(|| tag.trim())
    });
    match (tags.next(), tags.next()) {
        (None, _) => Some(None),
        (Some(tag), None) if !tag.is_empty() => Some(Some(tag.to_owned())),
        _ => None,
    }
}

/// The first Via of `value` (a Via line, which may hold several, comma-separated) and
/// what follows it; `None` unless it parses up to a comma or the end. A header parser
/// that skips values it cannot read must not let a later Via stand in for it.
fn split_top_via(value: &str) -> Option<(Via, String)> {
    let bytes = Bytes::copy_from_slice(value.as_bytes());
    let text = std::str::from_utf8(&bytes).ok()?;
    let (rest, via) = Via::parse(&bytes, text).ok()?;
    let after = rest.trim_start();
    (after.is_empty() || after.starts_with(',')).then(|| (via, rest.to_owned()))
}

/// Add `received` and fill `rport` on the first Via of `value` (which may hold several,
/// comma-separated). Values we cannot parse are returned unchanged.
fn stamp_received(value: &str, source: SocketAddr) -> String {
    let Some((mut via, rest)) = split_top_via(value) else {
        return value.to_owned();
    };
    let has_rport = via.params.get("rport").is_some();
    // RFC 3581: with rport, received is always added.
    if has_rport || via.sent_by.ip() != Some(source.ip()) {
        via.params.push_or_edit("received", source.ip().to_string());
    }
    if has_rport {
        via.params.push_or_edit("rport", source.port().to_string());
    }
    format!("{}{}", via.default_print_ctx(), rest)
}

/// The first Contact URI, if any.
fn contact_uri(headers: &Headers) -> Option<String> {
    match headers.try_get_named::<Vec<Contact>>() {
        Some(Ok(contacts)) => contacts
            .first()
            .map(|c| c.uri.uri.default_print_ctx().to_string()),
        _ => None,
    }
}

/// Record-Route values in the order of the message.
fn record_routes(headers: &Headers) -> Vec<String> {
    headers
        .get_raw(&Name::RECORD_ROUTE)
        .flat_map(|v| split_commas(v.as_str()))
        .collect()
}

/// Every Record-Route entry names a SIP URI we can write back: each becomes a Route
/// of the requests we send in the dialog, and the first may become their Request-URI
/// (a strict router, RFC 3261 12.2.1.1), so one that is not a URI must stop here.
fn record_routes_are_usable(headers: &Headers) -> bool {
    record_routes(headers)
        .iter()
        .all(|entry| SipUri::parse_str(super::dialog::route_uri(entry)).is_ok())
}

/// Whether an Allow header lists `method` (RFC 3261 20.5). Without one we
/// cannot tell, and say no.
/// `X-Sipconf-Link`: marks a call between two bridges as a cascade link and
/// lists the bridges the room already spans (docs/scaling.md "Cascading").
pub const LINK_HEADER: &str = "X-Sipconf-Link";
const LINK_NAME: Name = Name::custom(LINK_HEADER, &["x-sipconf-link"]);

/// Every `X-Sipconf-Link` value, joined with commas; `None` when absent.
pub fn link_value(headers: &Headers) -> Option<String> {
    let values: Vec<&str> = headers.get_raw(&LINK_NAME).map(|v| v.trim()).collect();
    (!values.is_empty()).then(|| values.join(","))
}

pub fn allows(headers: &Headers, method: &str) -> bool {
    headers
        .get_raw(&Name::ALLOW)
        .flat_map(|v| v.split(','))
        .any(|m| m.trim().eq_ignore_ascii_case(method))
}

/// Content-Type without parameters, lower case; `None` when absent.
fn content_type(headers: &Headers) -> Option<String> {
    raw_value(headers, &Name::CONTENT_TYPE).map(|v| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    })
}

impl Request {
    /// The Contact URI (remote target for requests we send in the dialog), if any.
    pub fn contact_uri(&self) -> Option<String> {
        contact_uri(&self.headers)
    }

    /// Record-Route values in order; a UAS keeps them as its route set (RFC 3261 12.1.1).
    pub fn record_routes(&self) -> Vec<String> {
        record_routes(&self.headers)
    }

    /// Content-Type without parameters, lower case; `None` when absent.
    pub fn content_type(&self) -> Option<String> {
        content_type(&self.headers)
    }
}

impl Response {
    /// The callee's Contact URI: the remote target of a dialog we create.
    pub fn contact_uri(&self) -> Option<String> {
        contact_uri(&self.headers)
    }

    /// Record-Route values in order; a UAC keeps them reversed (RFC 3261 12.1.2).
    pub fn record_routes(&self) -> Vec<String> {
        record_routes(&self.headers)
    }

    /// Content-Type without parameters, lower case; `None` when absent.
    pub fn content_type(&self) -> Option<String> {
        content_type(&self.headers)
    }

    /// Every value of header `name` as written, one per header line; not split at
    /// commas, which challenges contain.
    pub fn header_values(&self, name: &Name) -> Vec<String> {
        self.headers
            .get_raw(name)
            .map(|v| v.trim().to_owned())
            .collect()
    }
}

/// Split a header value on commas that are not inside `<...>` or quotes.
pub fn split_commas(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth_angle = false;
    let mut in_quotes = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => depth_angle = true,
            '>' if !in_quotes => depth_angle = false,
            ',' if !in_quotes && !depth_angle => {
                parts.push(value[start..i].trim().to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim().to_owned());
    parts.retain(|p| !p.is_empty());
    parts
}

/// A body with its Content-Type.
#[derive(Clone, Copy, Debug)]
pub struct Body<'a> {
    pub content_type: &'a str,
    pub text: &'a str,
}

/// Write a response to a request (RFC 3261 section 8.2.6). `to_tag` is added to To when
/// the request's To has none. `extra` headers go after the mandatory ones.
pub fn write_response(
    echo: &EchoHeaders,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<Body<'_>>,
    server: &str,
) -> Bytes {
    let mut out = String::with_capacity(512);
    // Reason phrases must not break the status line.
    let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
    let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
    for via in &echo.vias {
        let _ = write!(out, "Via: {via}\r\n");
    }
    if let Some(from) = &echo.from {
        let _ = write!(out, "From: {from}\r\n");
    }
    if let Some(to) = &echo.to {
        let has_tag = to_has_tag(to);
        match to_tag {
            Some(tag) if !has_tag => {
                let _ = write!(out, "To: {to};tag={tag}\r\n");
            }
            _ => {
                let _ = write!(out, "To: {to}\r\n");
            }
        }
    }
    if let Some(call_id) = &echo.call_id {
        let _ = write!(out, "Call-ID: {call_id}\r\n");
    }
    if let Some(cseq) = &echo.cseq {
        let _ = write!(out, "CSeq: {cseq}\r\n");
    }
    finish_message(&mut out, "Server", server, extra, body);
    Bytes::from(out)
}

fn to_has_tag(to: &str) -> bool {
    !matches!(tag_param(to), Some(None))
}

fn finish_message(
    out: &mut String,
    agent_header: &str,
    agent: &str,
    extra: &[(&str, &str)],
    body: Option<Body<'_>>,
) {
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let _ = write!(out, "{agent_header}: {agent}\r\n");
    match body {
        Some(body) => {
            let _ = write!(
                out,
                "Content-Type: {}\r\nContent-Length: {}\r\n\r\n{}",
                body.content_type,
                body.text.len(),
                body.text
            );
        }
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
}

/// What a request we originate inside a dialog needs (RFC 3261 section 12.2.1.1).
#[derive(Clone, Debug)]
pub struct OutgoingRequest<'a> {
    pub method: &'a str,
    pub request_uri: &'a str,
    /// `SIP/2.0/UDP host:port;branch=...;rport`, written by the caller.
    pub via: &'a str,
    pub routes: &'a [String],
    pub from: &'a str,
    pub to: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    pub extra: &'a [(&'a str, &'a str)],
    pub body: Option<Body<'a>>,
    pub user_agent: &'a str,
}

pub fn write_request(request: &OutgoingRequest<'_>) -> Bytes {
    let mut out = String::with_capacity(512);
    let _ = write!(
        out,
        "{} {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n",
        request.method, request.request_uri, request.via
    );
    for route in request.routes {
        let _ = write!(out, "Route: {route}\r\n");
    }
    let _ = write!(
        out,
        "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {}\r\n",
        request.from, request.to, request.call_id, request.cseq, request.method
    );
    finish_message(
        &mut out,
        "User-Agent",
        request.user_agent,
        request.extra,
        request.body,
    );
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> SocketAddr {
        "192.0.2.7:5062".parse().expect("addr")
    }

    const INVITE: &str = "INVITE sip:1000@192.0.2.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP phone.example.com:5060;branch=z9hG4bK776asdhds;rport, SIP/2.0/UDP proxy;branch=z9hG4bKx\r\n\
        Max-Forwards: 70\r\n\
        To: <sip:1000@192.0.2.1>\r\n\
        From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710\r\n\
        CSeq: 314159 INVITE\r\n\
        Contact: <sip:alice@192.0.2.7:5062>\r\n\
        Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\r\nv=0\n";

    fn request(text: &str) -> Request {
        match parse(text.as_bytes(), source()) {
            Ok(Message::Request(request)) => *request,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn invite_fields_are_extracted() {
        let invite = request(INVITE);
        assert_eq!(invite.method, Method::INVITE);
        assert_eq!(invite.uri_user, "1000");
        assert_eq!(invite.branch, "z9hG4bK776asdhds");
        assert_eq!(invite.sent_by, "phone.example.com:5060");
        assert_eq!(invite.call_id, "a84b4c76e66710");
        assert_eq!(invite.cseq, 314159);
        assert_eq!(invite.from_tag.as_deref(), Some("1928301774"));
        assert_eq!(invite.to_tag, None);
        assert_eq!(invite.from_uri, "sip:alice@example.com");
        assert_eq!(&invite.body[..], b"v=0\n");
        assert_eq!(invite.content_type().as_deref(), Some("application/sdp"));
        assert_eq!(
            invite.contact_uri().as_deref(),
            Some("sip:alice@192.0.2.7:5062")
        );
        assert_eq!(invite.record_routes(), vec!["<sip:p1;lr>", "<sip:p2;lr>"]);
        assert_eq!(
            invite.echo.vias,
            vec!["SIP/2.0/UDP phone.example.com:5060;branch=z9hG4bK776asdhds;rport=5062;received=192.0.2.7, SIP/2.0/UDP proxy;branch=z9hG4bKx"]
        );
    }

    #[test]
    fn compact_and_folded_headers_parse() {
        let text = "OPTIONS sip:bridge@192.0.2.1 SIP/2.0\r\n\
            v: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKabc\r\n\
            f: <sip:a@b>;tag=x\r\n\
            t: <sip:bridge@192.0.2.1>\r\n\
            i: compact-1\r\n\
            CSeq:\r\n 7\r\n OPTIONS\r\n\
            l: 0\r\n\r\n";
        let options = request(text);
        assert_eq!(options.call_id, "compact-1");
        assert_eq!(options.cseq, 7);
        assert_eq!(options.echo.cseq.as_deref(), Some("7 OPTIONS"));
    }

    #[test]
    fn missing_call_id_is_answerable_with_its_name() {
        let text = INVITE.replace("Call-ID: a84b4c76e66710\r\n", "");
        let err = parse(text.as_bytes(), source()).expect_err("must fail");
        assert_eq!(err.error, ParseError::MissingCallId);
        assert_eq!(err.error.to_string(), "Missing Call-ID header");
        assert!(err.echo.is_some());
    }

    #[test]
    fn precise_errors() {
        let cases = [
            (
                "CSeq: 314159 INVITE",
                "CSeq: abc INVITE",
                ParseError::MalformedCSeq,
            ),
            (
                "CSeq: 314159 INVITE",
                "CSeq: 1 BYE",
                ParseError::CSeqMethodMismatch,
            ),
            ("CSeq: 314159 INVITE\r\n", "", ParseError::MissingCSeq),
            (
                "Content-Length: 4",
                "Content-Length: 40",
                ParseError::ContentLengthMismatch,
            ),
            (
                "Content-Length: 4",
                "Content-Length: x",
                ParseError::MalformedContentLength,
            ),
            ("To: <sip:1000@192.0.2.1>\r\n", "", ParseError::MissingTo),
        ];
        for (from, to, expected) in cases {
            let text = INVITE.replace(from, to);
            let err = parse(text.as_bytes(), source()).expect_err(to);
            assert_eq!(err.error, expected, "{to}");
        }
    }

    #[test]
    fn missing_via_cannot_be_answered() {
        let text = INVITE.replace(
            "Via: SIP/2.0/UDP phone.example.com:5060;branch=z9hG4bK776asdhds;rport, SIP/2.0/UDP proxy;branch=z9hG4bKx\r\n",
            "",
        );
        let err = parse(text.as_bytes(), source()).expect_err("no via");
        assert_eq!(err, Malformed::unanswerable(ParseError::MissingVia));
    }

    #[test]
    fn a_malformed_top_via_is_refused_even_when_a_later_one_parses() {
        // Found by fuzz/sip_message: the header parser skipped the bad first Via and
        // the second one named the transaction, while the 200 echoed the bad one.
        let text = INVITE.replace(
            "Via: SIP/2.0/UDP phone",
            "Via: SIP/a=inactive2.0.2.7:5062;branch=z9hG4bKabc\r\nVia: SIP/2.0/UDP phone",
        );
        let err = parse(text.as_bytes(), source()).expect_err("bad top Via");
        assert_eq!(err.error, ParseError::MalformedVia);
    }

    #[test]
    fn a_record_route_that_is_no_uri_is_refused() {
        // Found by fuzz/sip_endpoint: a Record-Route without its closing `>` became
        // the Request-URI of our BYE, spaces and all.
        let text = INVITE.replace(
            "Record-Route: <sip:p1;lr>, <sip:p2;lr>",
            "Record-Route: <sip:Allow: INVITE, ACK",
        );
        let err = parse(text.as_bytes(), source()).expect_err("unusable Record-Route");
        assert_eq!(err.error, ParseError::MalformedRecordRoute);
        assert_eq!(err.error.to_string(), "Malformed Record-Route");
        assert!(err.echo.is_some(), "answered 400");
        let display_name = INVITE.replace("<sip:p1;lr>,", "\"edge\" <sip:p1;lr>;x=1,");
        assert!(parse(display_name.as_bytes(), source()).is_ok());
    }

    #[test]
    fn a_to_with_text_after_its_uri_is_refused() {
        // Found by fuzz/sip_message: `To: sip:b@h>` parsed as far as the URI, and the
        // tag our answer added after the `>` was lost on the way back to the caller.
        let text = INVITE.replace("To: <sip:1000@192.0.2.1>", "To: sip:1000@192.0.2.1>");
        let err = parse(text.as_bytes(), source()).expect_err("trailing text");
        assert_eq!(err.error, ParseError::MalformedTo);
        // The same holds for From.
        let text = INVITE.replace("tag=1928301774", "tag=1928301774>");
        let err = parse(text.as_bytes(), source()).expect_err("trailing text");
        assert_eq!(err.error, ParseError::MalformedFrom);
    }

    #[test]
    fn tag_parameter_names_are_case_insensitive() {
        // Found by fuzz/sip_message: `To: <sip:1>;Tag=1` read as no tag, so our
        // answer carried a second one.
        let text = INVITE.replace(
            "To: <sip:1000@192.0.2.1>",
            "To: <sip:1000@192.0.2.1>;Tag=t1",
        );
        let invite = request(&text);
        assert_eq!(invite.to_tag.as_deref(), Some("t1"));
        let ok = write_response(&invite.echo, 200, "OK", Some("ours"), &[], None, "sipconf");
        assert!(std::str::from_utf8(&ok)
            .expect("utf8")
            .contains("To: <sip:1000@192.0.2.1>;Tag=t1\r\n"));
    }

    #[test]
    fn a_tag_without_a_value_or_twice_is_refused() {
        // Found by fuzz/sip_message: `To: <sip:2>;tag` read as no tag, and the
        // caller read our `;tag;tag=ours` the same way.
        for to in [
            "To: <sip:1000@192.0.2.1>;tag",
            "To: <sip:1000@192.0.2.1>;tag=a;TAG=b",
        ] {
            let text = INVITE.replace("To: <sip:1000@192.0.2.1>", to);
            let err = parse(text.as_bytes(), source()).expect_err(to);
            assert_eq!(err.error, ParseError::MalformedTo, "{to}");
        }
        let text = INVITE.replace(";tag=1928301774", ";tag");
        let err = parse(text.as_bytes(), source()).expect_err("valueless From tag");
        assert_eq!(err.error, ParseError::MalformedFrom);
        let bare = INVITE.replace("To: <sip:1000@192.0.2.1>", "To: sip:1000@192.0.2.1;tag=x");
        assert_eq!(request(&bare).to_tag.as_deref(), Some("x"));
    }

    #[test]
    fn garbage_and_truncation_never_panic() {
        let inputs: [&[u8]; 7] = [
            b"",
            b"\r\n\r\n",
            b"\xff\xfe\x00garbage",
            b"INVITE",
            b"SIP/2.0 200",
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP [::1;branch=x\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0\r\nVia:\r\n\r\n",
        ];
        for input in inputs {
            assert!(parse(input, source()).is_err());
        }
        for cut in 0..INVITE.len() {
            let _ = parse(&INVITE.as_bytes()[..cut], source());
        }
    }

    #[test]
    fn response_adds_to_tag_once() {
        let invite = request(INVITE);
        let ok = write_response(&invite.echo, 200, "OK", Some("tt"), &[], None, "sipconf");
        let text = std::str::from_utf8(&ok).expect("utf8");
        assert!(text.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP phone.example.com"));
        assert!(text.contains("To: <sip:1000@192.0.2.1>;tag=tt\r\n"));
        assert!(text.contains("CSeq: 314159 INVITE\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        let Ok(Message::Response(parsed)) = parse(&ok, source()) else {
            panic!("our own response must parse");
        };
        assert_eq!(parsed.code, 200);
        assert_eq!(parsed.branch, "z9hG4bK776asdhds");
    }
}
