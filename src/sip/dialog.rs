//! The INVITE dialog as the UAS sees it (RFC 3261 section 12): identity, the parties and
//! route set for requests we send inside it (BYE), and the CSeq spaces of both sides.

use super::message::Request;
use super::Transport;
use std::net::SocketAddr;

/// Dialog identity: Call-ID plus both tags (RFC 3261 12 and 12.2.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog a request inside a dialog belongs to, seen from our side.
    /// `None` when the request carries no To tag (so it is not in a dialog).
    pub fn of_request(request: &Request) -> Option<DialogId> {
        Some(DialogId {
            call_id: request.call_id.clone(),
            local_tag: request.to_tag.clone()?,
            remote_tag: request.from_tag.clone().unwrap_or_default(),
        })
    }
}

/// Why a request in a dialog is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CSeqError {
    /// RFC 3261 12.2.2: a lower CSeq than the last one is out of order (answer 500).
    #[error("CSeq out of order")]
    OutOfOrder,
}

#[derive(Clone, Debug)]
pub struct Dialog {
    pub id: DialogId,
    /// Our side written as a From value: the INVITE's To plus our tag.
    pub local_party: String,
    /// Their side written as a To value: the INVITE's From, with their tag.
    pub remote_party: String,
    /// Request-URI for our requests: the caller's Contact (RFC 3261 12.1.1).
    pub remote_target: String,
    /// Record-Route of the INVITE in order, sent back as Route (RFC 3261 12.1.1).
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: u32,
    /// Where the caller's INVITE came from; our requests go there on the same transport.
    pub transport: Transport,
    pub peer: SocketAddr,
}

impl Dialog {
    /// Build the UAS side of a dialog from the INVITE that creates it.
    pub fn from_invite(
        invite: &Request,
        local_tag: String,
        transport: Transport,
        peer: SocketAddr,
    ) -> Dialog {
        let to = invite.echo.to.clone().unwrap_or_default();
        Dialog {
            local_party: format!("{to};tag={local_tag}"),
            id: DialogId {
                call_id: invite.call_id.clone(),
                local_tag,
                remote_tag: invite.from_tag.clone().unwrap_or_default(),
            },
            remote_party: invite.echo.from.clone().unwrap_or_default(),
            remote_target: invite
                .contact_uri()
                .unwrap_or_else(|| invite.from_uri.clone()),
            route_set: invite.record_routes(),
            local_cseq: 0,
            remote_cseq: invite.cseq,
            transport,
            peer,
        }
    }

    /// Check and record the CSeq of a new request from the far end.
    pub fn check_remote_cseq(&mut self, cseq: u32) -> Result<(), CSeqError> {
        if cseq < self.remote_cseq {
            return Err(CSeqError::OutOfOrder);
        }
        self.remote_cseq = cseq;
        Ok(())
    }

    /// CSeq for the next request we send in this dialog.
    pub fn next_local_cseq(&mut self) -> u32 {
        self.local_cseq = self.local_cseq.wrapping_add(1);
        self.local_cseq
    }
}
