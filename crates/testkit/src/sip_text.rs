//! The SIP text the test phone reads and writes: a message split into
//! status or method, headers (compact names made long) and body, and the few
//! header pieces a call needs. Plain text on purpose, independent of the
//! bridge's parser.

/// A SIP message as the phone reads it: enough of RFC 3261 to run a call.
#[derive(Debug, Clone)]
pub struct SipText {
    /// `Some(code)` for responses.
    pub status: Option<u16>,
    pub reason: String,
    /// The request method, for requests.
    pub method: Option<String>,
    headers: Vec<(String, String)>,
    pub body: String,
}

impl SipText {
    /// Reads a message; `None` when it is not one.
    pub fn parse(bytes: &[u8]) -> Option<SipText> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let first = lines.next()?;
        let (status, reason, method) = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            (Some(code.parse().ok()?), reason.to_string(), None)
        } else {
            let method = first.split(' ').next()?.to_string();
            (None, String::new(), Some(method))
        };
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (long_header_name(n.trim()), v.trim().to_string()))
            .collect();
        Some(SipText {
            status,
            reason,
            method,
            headers,
            body: body.to_string(),
        })
    }

    /// The first value of a header (long or compact name, any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = long_header_name(name);
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header, in order.
    pub fn headers(&self, name: &str) -> Vec<&str> {
        let name = long_header_name(name);
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub(crate) fn cseq_method(&self) -> Option<&str> {
        self.header("CSeq")?.split_whitespace().nth(1)
    }
}

fn long_header_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let long = match lower.as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        other => other,
    };
    long.to_string()
}

/// The `tag` parameter of a From or To header value.
pub fn tag_param(header: &str) -> Option<String> {
    header
        .split(';')
        .skip(1)
        .find_map(|p| p.trim().strip_prefix("tag="))
        .map(str::to_string)
}

pub(crate) fn branch_of(request: &str) -> String {
    request
        .lines()
        .find(|l| l.starts_with("Via:"))
        .and_then(|v| v.split(';').find_map(|p| p.strip_prefix("branch=")))
        .unwrap_or_default()
        .to_string()
}

pub(crate) fn request_uri_of(request: &str) -> String {
    request
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_string()
}

/// The name-addrs of a header value that may hold several (`<a>, <b>`),
/// split at the commas outside angle brackets.
pub(crate) fn split_name_addrs(value: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut inside = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            ',' if !inside => {
                parts.push(value[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim().to_string());
    parts.retain(|p| !p.is_empty());
    parts
}

/// The URI inside a name-addr (`"Bob" <sip:b@h>;x` -> `sip:b@h`).
pub fn uri_of(name_addr: &str) -> String {
    match (name_addr.find('<'), name_addr.find('>')) {
        (Some(a), Some(b)) if a < b => name_addr[a + 1..b].to_string(),
        _ => name_addr
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// A response to a request, copying Via, From, To, Call-ID and CSeq.
pub fn response_to(request: &[u8], code: u16, reason: &str) -> String {
    let text = String::from_utf8_lossy(request);
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for line in text.split("\r\n").skip(1) {
        if line.is_empty() {
            break;
        }
        let name = line.split(':').next().unwrap_or_default().trim();
        let long = long_header_name(name);
        if ["via", "from", "to", "call-id", "cseq"].contains(&long.as_str()) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses_with_compact_headers() {
        let m = SipText::parse(b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP x;branch=z9hG4bK1\r\nt: <sip:a@b>;tag=xyz\r\nCSeq: 1 INVITE\r\n\r\nbody").unwrap();
        assert_eq!(m.status, Some(200));
        assert_eq!(tag_param(m.header("To").unwrap()).as_deref(), Some("xyz"));
        assert_eq!(m.cseq_method(), Some("INVITE"));
        assert_eq!(m.body, "body");
    }
}
