//! The tokio shell around [`Endpoint`]: UDP and TCP sockets on one port, TLS on
//! another (`[sip.tls]`, set up by `tls.rs`), the clock, and the channels to the
//! call layer. TCP and TLS connections are framed alike (`next_frame`). All protocol decisions are in the sans-IO core; this
//! file decides nothing about SIP and nothing about calls.
//!
//! One task owns the endpoint and waits on UDP, on messages framed by the TCP connection
//! tasks (accepted, or opened for requests we originate), on commands and on the
//! endpoint's next timeout.

use super::dialog::Dialog;
use super::registration::{RegistrationConfig, RegistrationStats};
use super::tls::TlsSetup;
use super::{
    CallKey, Endpoint, EndpointConfig, OutgoingCall, RegistrationKey, SipEvent, Transmit, Transport,
};
use crate::net::connections::{Admission, ConnectionGate};
use crate::net::udp::{receive_buffer_bytes, set_buffer_bytes};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Largest SIP message we accept on TCP; a longer one closes the connection.
pub const MAX_TCP_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest UDP datagram.
const MAX_DATAGRAM_BYTES: usize = 65_535;
/// Receive and send buffer asked for the SIP UDP socket: room for a burst of
/// about 2000 requests of a desk phone's size (each takes 1-2 KiB of buffer
/// with the kernel's overhead).
const UDP_BUFFER_BYTES: usize = 4 << 20;
const COMMAND_QUEUE_LEN: usize = 256;
const EVENT_QUEUE_LEN: usize = 256;
const TCP_QUEUE_LEN: usize = 256;
/// Messages waiting for one TCP connection's writer.
const TCP_WRITE_QUEUE_LEN: usize = 64;
/// How long opening a connection for an outgoing request may take (with its TLS
/// handshake); the transaction's own timer B/F still bounds the request.
const TCP_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a phone may take over its TLS handshake once connected.
const TLS_ACCEPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the call layer asks the SIP endpoint to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SipCommand {
    Ring(CallKey),
    Accept(CallKey, String),
    /// Accept a cascade link: the 2xx carries `X-Sipconf-Link` with this value.
    AcceptLink(CallKey, String, String),
    Reject(CallKey, u16, String),
    AcceptReoffer(CallKey, String),
    RejectReoffer(CallKey, u16, String),
    Hangup(CallKey),
    /// BYE for a dialog of a previous run (see `Endpoint::bye_orphan`).
    ByeOrphan(Box<Dialog>),
}

/// What the SIP task receives from handles: a command, or an outgoing call that needs
/// its key back.
#[derive(Debug)]
enum HandleInput {
    Command(SipCommand),
    Invite(Box<OutgoingCall>, oneshot::Sender<Option<CallKey>>),
    Register(
        Box<RegistrationConfig>,
        Arc<RegistrationStats>,
        oneshot::Sender<RegistrationKey>,
    ),
    /// The registrar's name now resolves to another address.
    MoveRegistrar(RegistrationKey, SocketAddr),
    /// Remove every binding; the sender is told once every removal is answered.
    Unregister(oneshot::Sender<()>),
}

/// Sends commands to the SIP task. The task stops when every handle is dropped.
#[derive(Clone, Debug)]
pub struct SipHandle {
    commands: mpsc::Sender<HandleInput>,
}

impl SipHandle {
    /// Queue a command; `false` if the SIP task has stopped.
    pub async fn send(&self, cmd: SipCommand) -> bool {
        self.commands.send(HandleInput::Command(cmd)).await.is_ok()
    }

    /// Place a call: the INVITE is on its way when this returns the call's key. `None`
    /// when the call or transaction table is full or the SIP task has stopped. Progress, answer and failure arrive as [`SipEvent`]s.
    pub async fn invite(&self, call: OutgoingCall) -> Option<CallKey> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.commands
            .send(HandleInput::Invite(Box::new(call), reply_tx))
            .await
            .ok()?;
        reply_rx.await.ok().flatten()
    }

    /// Start registering with a registrar (the first REGISTER goes at once);
    /// `None` if the SIP task has stopped.
    pub async fn register(
        &self,
        config: RegistrationConfig,
        stats: Arc<RegistrationStats>,
    ) -> Option<RegistrationKey> {
        let (key_tx, key_rx) = oneshot::channel();
        self.commands
            .send(HandleInput::Register(Box::new(config), stats, key_tx))
            .await
            .ok()?;
        key_rx.await.ok()
    }

    /// Send a registration's later REGISTERs to `address`; `false` if the
    /// SIP task has stopped.
    pub async fn move_registrar(&self, key: RegistrationKey, address: SocketAddr) -> bool {
        self.commands
            .send(HandleInput::MoveRegistrar(key, address))
            .await
            .is_ok()
    }

    /// Remove every registration's binding (REGISTER with expiry 0) and wait
    /// until the registrars answered or gave up; the caller bounds the wait.
    pub async fn unregister_all(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self
            .commands
            .send(HandleInput::Unregister(done_tx))
            .await
            .is_ok()
        {
            let _ = done_rx.await;
        }
    }
}

/// A TCP or TLS connection: its transport and its peer.
type StreamKey = (Transport, SocketAddr);

/// What TCP and TLS connection tasks tell the endpoint task.
enum TcpInput {
    Connected(StreamKey, mpsc::Sender<Bytes>),
    Message(StreamKey, Bytes),
    /// Nothing came on the connection for the idle timeout: closed unless a
    /// call runs over it.
    Idle(StreamKey),
    Closed(StreamKey),
}

/// Binds UDP and TCP on `listen` (same port; port 0 = pick one for UDP and use the same
/// for TCP) and starts the SIP task. Returns the command handle, the event stream and the
/// bound address.
///
/// When bound to a specific address it becomes `config.local_addr` (Via, Contact); when
/// bound to a wildcard address the caller's advertised address is kept, with the bound
/// port if it gave port 0. `tcp` caps accepted connections and times idle ones out.
pub async fn start(
    listen: SocketAddr,
    config: EndpointConfig,
    tcp: Arc<ConnectionGate>,
) -> io::Result<(SipHandle, mpsc::Receiver<SipEvent>, SocketAddr)> {
    start_with_tls(listen, config, tcp, None).await
}

/// As [`start`], with SIP over TLS on `tls.listen` too (its port becomes
/// `config.tls_port`, written in Via and Contact on TLS). TLS connections
/// are capped and timed out by `tcp` as TCP ones are.
pub async fn start_with_tls(
    listen: SocketAddr,
    mut config: EndpointConfig,
    tcp: Arc<ConnectionGate>,
    tls: Option<TlsSetup>,
) -> io::Result<(SipHandle, mpsc::Receiver<SipEvent>, SocketAddr)> {
    let udp = UdpSocket::bind(listen).await?;
    // A burst (every phone of a conference hanging up at once, a PBX
    // relaying a roomful of INVITEs) must wait in the socket, not be dropped
    // and retransmitted seconds later: the default buffer holds about 150
    // requests. The kernel caps the request at net.core.rmem_max.
    let _ = set_buffer_bytes(udp.as_raw_fd(), UDP_BUFFER_BYTES);
    let granted = receive_buffer_bytes(udp.as_raw_fd()).unwrap_or(0);
    // SO_RCVBUF reads back twice what was granted.
    if granted < 2 * UDP_BUFFER_BYTES {
        tracing::warn!(
            granted_bytes = granted,
            wanted_bytes = UDP_BUFFER_BYTES,
            "the SIP socket's receive buffer is small: a burst of requests (a whole \
             conference hanging up at once) may be dropped and retransmitted seconds \
             later; raise net.core.rmem_max"
        );
    }
    let bound = udp.local_addr()?;
    let tcp_listener = TcpListener::bind(bound).await?;
    if !bound.ip().is_unspecified() {
        config.local_addr = bound;
    } else if config.local_addr.port() == 0 {
        config.local_addr.set_port(bound.port());
    }

    let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE_LEN);
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE_LEN);
    let (tcp_tx, tcp_rx) = mpsc::channel(TCP_QUEUE_LEN);
    let connector = match tls {
        Some(tls) => {
            let listener = TcpListener::bind(tls.listen).await.map_err(|e| {
                io::Error::new(e.kind(), format!("sip.tls.listen {}: {e}", tls.listen))
            })?;
            tracing::info!(listen = %listener.local_addr()?, "SIP over TLS");
            config.tls_port = Some(listener.local_addr()?.port());
            tokio::spawn(accept_loop(
                listener,
                tcp_tx.clone(),
                Arc::clone(&tcp),
                Some(tls.acceptor.clone()),
            ));
            Some(tls.connector)
        }
        None => None,
    };
    tokio::spawn(accept_loop(
        tcp_listener,
        tcp_tx.clone(),
        Arc::clone(&tcp),
        None,
    ));
    tokio::spawn(run(
        Endpoint::new(config),
        udp,
        (tcp_tx, tcp_rx, tcp),
        connector,
        command_rx,
        event_tx,
    ));
    Ok((
        SipHandle {
            commands: command_tx,
        },
        event_rx,
        bound,
    ))
}

async fn run(
    mut endpoint: Endpoint,
    udp: UdpSocket,
    (tcp_tx, mut tcp_rx, tcp_gate): (
        mpsc::Sender<TcpInput>,
        mpsc::Receiver<TcpInput>,
        Arc<ConnectionGate>,
    ),
    connector: Option<TlsConnector>,
    mut command_rx: mpsc::Receiver<HandleInput>,
    event_tx: mpsc::Sender<SipEvent>,
) {
    let mut datagram = vec![0u8; MAX_DATAGRAM_BYTES];
    let mut tcp_writers: HashMap<StreamKey, mpsc::Sender<Bytes>> = HashMap::new();
    let mut unregistered: Option<oneshot::Sender<()>> = None;
    loop {
        let wake_at = endpoint.poll_timeout().map(Instant::from_std);
        tokio::select! {
            received = udp.recv_from(&mut datagram) => match received {
                Ok((len, source)) => {
                    let source = canonical(source);
                    let now = Instant::now().into_std();
                    endpoint.handle_datagram(now, Transport::Udp, source, &datagram[..len]);
                }
                // ICMP errors from earlier sends surface here on some systems; keep going.
                Err(error) => tracing::debug!(%error, "UDP receive failed"),
            },
            Some(input) = tcp_rx.recv() => match input {
                TcpInput::Connected(key, writer) => {
                    tcp_writers.insert(key, writer);
                }
                TcpInput::Message((transport, peer), message) => {
                    let now = Instant::now().into_std();
                    endpoint.handle_datagram(now, transport, peer, &message);
                }
                // Dropping the writer ends the connection's task.
                TcpInput::Idle((transport, peer)) => {
                    if !endpoint.has_call_over(transport, peer)
                        && tcp_writers.remove(&(transport, peer)).is_some()
                    {
                        tcp_gate.stats().closed_idle.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, ?transport, "idle connection closed");
                    }
                }
                TcpInput::Closed(key) => {
                    tcp_writers.remove(&key);
                }
            },
            command = command_rx.recv() => {
                let Some(command) = command else {
                    tracing::debug!("every SipHandle dropped, SIP task stops");
                    return;
                };
                let now = Instant::now().into_std();
                match command {
                    HandleInput::Command(command) => apply(&mut endpoint, now, command),
                    HandleInput::Invite(call, reply) => {
                        let placed = endpoint.invite(now, *call);
                        if let Err(error) = &placed {
                            tracing::warn!(%error, "outgoing call not placed");
                        }
                        // The caller may have given up waiting; the call then runs
                        // without it, as an unanswered call would.
                        let _ = reply.send(placed.ok());
                    }
                    HandleInput::Register(config, stats, key) => {
                        let _ = key.send(endpoint.register(now, *config, stats));
                    }
                    HandleInput::MoveRegistrar(key, address) => {
                        endpoint.move_registrar(key, address);
                    }
                    HandleInput::Unregister(done) => {
                        endpoint.unregister_all(now);
                        unregistered = Some(done);
                    }
                }
            },
            () = sleep_until_or_forever(wake_at) => {
                endpoint.handle_timeout(Instant::now().into_std());
            },
        }
        while let Some(transmit) = endpoint.poll_transmit() {
            let idle_timeout = tcp_gate.limits().idle_timeout;
            send(
                &udp,
                &mut tcp_writers,
                (&tcp_tx, idle_timeout),
                connector.as_ref(),
                transmit,
            )
            .await;
        }
        if endpoint.registrations_settled() {
            if let Some(done) = unregistered.take() {
                let _ = done.send(());
            }
        }
        while let Some(event) = endpoint.poll_event() {
            let established = match &event {
                SipEvent::Confirmed { call } | SipEvent::Answered { call, .. } => {
                    endpoint.dialog(*call).map(|dialog| SipEvent::Established {
                        call: *call,
                        dialog: Box::new(dialog.clone()),
                    })
                }
                _ => None,
            };
            for event in std::iter::once(event).chain(established) {
                if event_tx.send(event).await.is_err() {
                    tracing::debug!("SIP event receiver dropped, SIP task stops");
                    return;
                }
            }
        }
    }
}

async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn apply(endpoint: &mut Endpoint, now: std::time::Instant, command: SipCommand) {
    match command {
        SipCommand::Ring(call) => endpoint.ring(now, call),
        SipCommand::Accept(call, sdp) => endpoint.accept(now, call, sdp),
        SipCommand::AcceptLink(call, sdp, link) => endpoint.accept_link(now, call, sdp, Some(link)),
        SipCommand::Reject(call, code, reason) => endpoint.reject(now, call, code, &reason),
        SipCommand::AcceptReoffer(call, sdp) => endpoint.accept_reoffer(now, call, sdp),
        SipCommand::RejectReoffer(call, code, reason) => {
            endpoint.reject_reoffer(now, call, code, &reason)
        }
        SipCommand::Hangup(call) => endpoint.hangup(now, call),
        SipCommand::ByeOrphan(dialog) => endpoint.bye_orphan(now, *dialog),
    }
}

async fn send(
    udp: &UdpSocket,
    tcp_writers: &mut HashMap<StreamKey, mpsc::Sender<Bytes>>,
    (tcp_tx, idle_timeout): (&mpsc::Sender<TcpInput>, Duration),
    connector: Option<&TlsConnector>,
    transmit: Transmit,
) {
    let key = (transmit.transport, transmit.destination);
    match transmit.transport {
        Transport::Udp => {
            if let Err(error) = udp.send_to(&transmit.bytes, transmit.destination).await {
                tracing::debug!(%error, destination = %transmit.destination, "UDP send failed");
            }
        }
        // Messages go on the open connection to the peer. Without one, a request we
        // originate opens it (RFC 3261 18.1.1); a response is dropped, as the caller's
        // connection is gone.
        Transport::Tcp | Transport::Tls => match tcp_writers.get(&key) {
            None if !transmit.bytes.starts_with(b"SIP/2.0 ") => {
                let tls = match (transmit.transport, connector) {
                    (Transport::Tls, Some(connector)) => Some((
                        connector.clone(),
                        super::tls::server_name(&transmit.bytes, transmit.destination),
                    )),
                    (Transport::Tls, None) => {
                        tracing::info!(peer = %transmit.destination, "no [sip.tls]: a request over TLS is dropped");
                        return;
                    }
                    _ => None,
                };
                let writer = connect(key, tcp_tx.clone(), idle_timeout, tls);
                if writer.try_send(transmit.bytes).is_err() {
                    tracing::debug!(peer = %transmit.destination, "TCP writer full, message dropped");
                }
                tcp_writers.insert(key, writer);
            }
            Some(writer) => {
                if writer.try_send(transmit.bytes).is_err() {
                    tracing::debug!(peer = %transmit.destination, "TCP writer full or gone, message dropped");
                }
            }
            None => {
                tracing::debug!(peer = %transmit.destination, "no TCP connection, message dropped")
            }
        },
    }
}

/// Open a connection to `key`'s peer in the background, with TLS checked for
/// the name given when `tls` is set. Messages wait in the returned writer's
/// queue until it is up; if it cannot be opened, `Closed` drops the writer again.
fn connect(
    key: StreamKey,
    tcp_tx: mpsc::Sender<TcpInput>,
    idle_timeout: Duration,
    tls: Option<(TlsConnector, ServerName<'static>)>,
) -> mpsc::Sender<Bytes> {
    let (writer_tx, writer_rx) = mpsc::channel(TCP_WRITE_QUEUE_LEN);
    let peer = key.1;
    tokio::spawn(async move {
        let opened = tokio::time::timeout(TCP_CONNECT_TIMEOUT, async {
            let stream = TcpStream::connect(peer).await?;
            without_nagle(&stream, peer);
            match tls {
                None => Ok(Stream::Tcp(stream)),
                Some((connector, name)) => connector
                    .connect(name, stream)
                    .await
                    .map(|stream| Stream::Tls(Box::new(stream))),
            }
        })
        .await;
        let link = Link {
            key,
            idle_timeout,
            admission: None,
        };
        match opened {
            Ok(Ok(Stream::Tcp(stream))) => connection(stream, link, tcp_tx, writer_rx).await,
            Ok(Ok(Stream::Tls(stream))) => connection(*stream, link, tcp_tx, writer_rx).await,
            Ok(Err(error)) => {
                tracing::info!(%peer, transport = ?key.0, %error, "connect failed");
                let _ = tcp_tx.send(TcpInput::Closed(key)).await;
            }
            Err(_) => {
                tracing::info!(%peer, transport = ?key.0, "connect timed out");
                let _ = tcp_tx.send(TcpInput::Closed(key)).await;
            }
        }
    });
    writer_tx
}

/// A connection we opened.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// An IPv4 peer of a dual-stack socket (bound to `::`) is reported as
/// ::ffff:a.b.c.d; everything above the transport sees the IPv4 address it
/// is, so the SDP answer names an IPv4 address and replies go back over IPv4.
fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

/// SIP messages are small and each is complete when written: Nagle's
/// algorithm would hold one back until the peer acknowledges the last (a 200
/// after a 100 Trying waits out the peer's delayed ACK, some 40 ms).
fn without_nagle(stream: &TcpStream, peer: SocketAddr) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "TCP_NODELAY not set");
    }
}

/// Accepts connections on `listener`, up to `gate`'s caps: TCP, or TLS with
/// `acceptor`, whose handshake runs in the connection's own task so a slow
/// phone holds up no other.
async fn accept_loop(
    listener: TcpListener,
    tcp_tx: mpsc::Sender<TcpInput>,
    gate: Arc<ConnectionGate>,
    acceptor: Option<TlsAcceptor>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok((stream, peer)) => (stream, canonical(peer)),
            Err(error) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // Over a cap the connection is closed at once, before it costs a task.
        let admission = match gate.admit(peer.ip()) {
            Ok(admission) => admission,
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "connection refused: too many open");
                continue;
            }
        };
        without_nagle(&stream, peer);
        let idle_timeout = gate.limits().idle_timeout;
        let Some(acceptor) = acceptor.clone() else {
            let key = (Transport::Tcp, peer);
            let (writer_tx, writer_rx) = mpsc::channel(TCP_WRITE_QUEUE_LEN);
            if tcp_tx
                .send(TcpInput::Connected(key, writer_tx))
                .await
                .is_err()
            {
                return;
            }
            let link = Link {
                key,
                idle_timeout,
                admission: Some(admission),
            };
            tokio::spawn(connection(stream, link, tcp_tx.clone(), writer_rx));
            continue;
        };
        let tcp_tx = tcp_tx.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(TLS_ACCEPT_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::info!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let key = (Transport::Tls, peer);
            let (writer_tx, writer_rx) = mpsc::channel(TCP_WRITE_QUEUE_LEN);
            if tcp_tx
                .send(TcpInput::Connected(key, writer_tx))
                .await
                .is_ok()
            {
                let link = Link {
                    key,
                    idle_timeout,
                    admission: Some(admission),
                };
                connection(stream, link, tcp_tx, writer_rx).await;
            }
        });
    }
}

/// One TCP or TLS connection's transport and peer, its idle timeout, and,
/// for accepted ones, its place under the caps (given back when the task ends).
struct Link {
    key: StreamKey,
    idle_timeout: Duration,
    admission: Option<Admission>,
}

async fn connection<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    link: Link,
    tcp_tx: mpsc::Sender<TcpInput>,
    mut writer_rx: mpsc::Receiver<Bytes>,
) {
    let Link {
        key,
        idle_timeout,
        admission: _admission,
    } = link;
    let peer = key.1;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write = async move {
        while let Some(bytes) = writer_rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    let read_tx = tcp_tx.clone();
    let read = async move {
        let mut buffer = BytesMut::with_capacity(4096);
        loop {
            loop {
                match next_frame(&mut buffer) {
                    Ok(Some(message)) => {
                        if read_tx.send(TcpInput::Message(key, message)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::debug!(%peer, %error, "bad SIP framing on TCP, closing");
                        return;
                    }
                }
            }
            match tokio::time::timeout(idle_timeout, reader.read_buf(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => {
                    if read_tx.send(TcpInput::Idle(key)).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    // Either side ending ends the connection.
    tokio::select! {
        () = write => {}
        () = read => {}
    }
    let _ = tcp_tx.send(TcpInput::Closed(key)).await;
}

/// Why a TCP byte stream cannot be cut into SIP messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("message longer than {MAX_TCP_MESSAGE_BYTES} bytes")]
    TooLong,
    #[error("malformed Content-Length")]
    MalformedContentLength,
}

/// Cut one message off the front of `buffer` using Content-Length (RFC 3261 18.3).
/// `Ok(None)` means more bytes are needed. Leading CRLFs (keep-alives, RFC 5626) are
/// skipped; a missing Content-Length means an empty body.
pub fn next_frame(buffer: &mut BytesMut) -> Result<Option<Bytes>, FramingError> {
    let blank = buffer
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    buffer.advance(blank);
    let Some(head_len) = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
    else {
        return if buffer.len() > MAX_TCP_MESSAGE_BYTES {
            Err(FramingError::TooLong)
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buffer[..head_len])
        .map_err(|_| FramingError::MalformedContentLength)?;
    let mut body_len = 0usize;
    for line in head.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            body_len = value
                .trim()
                .parse()
                .map_err(|_| FramingError::MalformedContentLength)?;
        }
    }
    let total = head_len
        .checked_add(body_len)
        .filter(|&total| total <= MAX_TCP_MESSAGE_BYTES)
        .ok_or(FramingError::TooLong)?;
    if buffer.len() < total {
        return Ok(None);
    }
    Ok(Some(buffer.split_to(total).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::connections::ConnectionLimits;
    use tokio::io::AsyncReadExt;

    fn tcp_gate() -> Arc<ConnectionGate> {
        let limits = ConnectionLimits {
            max_connections: 64,
            max_connections_per_ip: 8,
            idle_timeout: Duration::from_secs(300),
        };
        ConnectionGate::new(limits, Arc::default())
    }

    fn options(transport: &str, local: SocketAddr, branch: &str) -> String {
        format!(
            "OPTIONS sip:bridge@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {local};branch=z9hG4bK{branch};rport\r\n\
             From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:bridge@127.0.0.1>\r\n\
             Call-ID: {branch}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    }

    #[test]
    fn framing_splits_on_content_length_and_skips_keepalives() {
        let mut buffer = BytesMut::from(
            &b"\r\n\r\nOPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nabcBYE sip:a SIP/2.0\r\n"[..],
        );
        let first = next_frame(&mut buffer).expect("ok").expect("frame");
        assert_eq!(&first[..], b"OPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nabc");
        assert_eq!(next_frame(&mut buffer), Ok(None));
        assert_eq!(&buffer[..], b"BYE sip:a SIP/2.0\r\n");

        let mut bad = BytesMut::from(&b"X sip:a SIP/2.0\r\nContent-Length: x\r\n\r\n"[..]);
        assert_eq!(
            next_frame(&mut bad),
            Err(FramingError::MalformedContentLength)
        );
        let mut huge = BytesMut::from(&b"X sip:a SIP/2.0\r\nContent-Length: 999999\r\n\r\n"[..]);
        assert_eq!(next_frame(&mut huge), Err(FramingError::TooLong));
        let mut endless = BytesMut::from(&vec![b'a'; MAX_TCP_MESSAGE_BYTES + 1][..]);
        assert_eq!(next_frame(&mut endless), Err(FramingError::TooLong));
    }

    /// With a 1 s idle timeout, a TCP connection that carries a call is
    /// kept past it (an OPTIONS on it is answered 3 s later), while one
    /// that carries none is closed within the timeout and a margin.
    #[tokio::test]
    async fn an_idle_tcp_connection_is_closed_unless_a_call_runs_over_it() {
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let limits = ConnectionLimits {
            max_connections: 8,
            max_connections_per_ip: 8,
            idle_timeout: Duration::from_secs(1),
        };
        let gate = ConnectionGate::new(limits, Arc::default());
        let (handle, mut events, bound) =
            start(listen, EndpointConfig::new(listen), Arc::clone(&gate))
                .await
                .expect("start");
        let mut phone = TcpStream::connect(bound).await.expect("connect");
        let local = phone.local_addr().expect("addr");
        let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                     m=audio 4000 RTP/AVP 0\r\n";
        let invite = format!(
            "INVITE sip:1000@{bound};transport=tcp SIP/2.0\r\n\
             Via: SIP/2.0/TCP {local};branch=z9hG4bKidle1\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@{local}>;tag=a\r\nTo: <sip:1000@{bound}>\r\n\
             Call-ID: idle1@127.0.0.1\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:alice@{local};transport=tcp>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
            offer.len()
        );
        phone.write_all(invite.as_bytes()).await.expect("write");
        let call = match next_event(&mut events).await {
            SipEvent::IncomingCall { call, .. } => call,
            other => panic!("expected IncomingCall, got {other:?}"),
        };
        assert!(
            handle
                .send(SipCommand::Accept(call, offer.to_owned()))
                .await
        );
        let mut received = BytesMut::new();
        let ok = loop {
            let message = read_message(&mut phone, &mut received).await;
            if message.starts_with("SIP/2.0 200 ") {
                break message;
            }
        };
        let to = header_value(&ok, "To");
        let ack = format!(
            "ACK sip:1000@{bound};transport=tcp SIP/2.0\r\n\
             Via: SIP/2.0/TCP {local};branch=z9hG4bKidle2\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@{local}>;tag=a\r\nTo: {to}\r\nCall-ID: idle1@127.0.0.1\r\n\
             CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        phone.write_all(ack.as_bytes()).await.expect("write");
        assert!(matches!(
            next_event(&mut events).await,
            SipEvent::Confirmed { call: confirmed } if confirmed == call
        ));

        let mut idle = TcpStream::connect(bound).await.expect("connect");
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut byte)).await;
        assert!(
            matches!(closed, Ok(Ok(0) | Err(_))),
            "a connection without a call was kept"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        phone
            .write_all(options("TCP", local, "idle3").as_bytes())
            .await
            .expect("write");
        let answer = read_message(&mut phone, &mut received).await;
        assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
        assert_eq!(gate.stats().closed_idle.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn options_over_udp_and_tcp_get_200() {
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let (_handle, _events, bound) = start(listen, EndpointConfig::new(listen), tcp_gate())
            .await
            .expect("start");
        assert_ne!(bound.port(), 0);

        let phone = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let local = phone.local_addr().expect("addr");
        phone
            .send_to(options("UDP", local, "udp1").as_bytes(), bound)
            .await
            .expect("send");
        let mut buffer = vec![0u8; 4096];
        let (len, from) =
            tokio::time::timeout(Duration::from_secs(5), phone.recv_from(&mut buffer))
                .await
                .expect("answer in time")
                .expect("recv");
        assert_eq!(from, bound);
        let answer = std::str::from_utf8(&buffer[..len]).expect("utf8");
        assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
        assert!(answer.contains(&format!("rport={}", local.port())));

        let mut stream = TcpStream::connect(bound).await.expect("connect");
        let local = stream.local_addr().expect("addr");
        stream
            .write_all(options("TCP", local, "tcp1").as_bytes())
            .await
            .expect("write");
        let mut received = BytesMut::new();
        let frame = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(frame) = next_frame(&mut received).expect("framing") {
                    return frame;
                }
                let n = stream.read_buf(&mut received).await.expect("read");
                assert_ne!(n, 0, "connection closed early");
            }
        })
        .await
        .expect("answer in time");
        let answer = std::str::from_utf8(&frame).expect("utf8");
        assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
        assert!(answer.contains("Allow: INVITE"));
    }

    /// A transport on a dual-stack socket (here the IPv4-mapped loopback,
    /// the same socket kind as `::`) sees an IPv4 phone as the IPv4
    /// address it is, in its Via's `received` too, over UDP or TCP.
    #[tokio::test]
    async fn ipv4_phones_of_a_dual_stack_transport_are_seen_as_ipv4() {
        let listen: SocketAddr = "[::ffff:127.0.0.1]:0".parse().expect("addr");
        let (_handle, _events, bound) = start(listen, EndpointConfig::new(listen), tcp_gate())
            .await
            .expect("start");
        let bound = SocketAddr::from(([127, 0, 0, 1], bound.port()));

        let phone = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let local = phone.local_addr().expect("addr");
        phone
            .send_to(options("UDP", local, "udp6").as_bytes(), bound)
            .await
            .expect("send");
        let answer = receive(&phone).await;
        assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
        let via = header_value(&answer, "Via");
        assert!(via.contains(&format!("rport={}", local.port())), "{via}");
        assert!(via.ends_with(";received=127.0.0.1"), "{via}");

        let mut stream = TcpStream::connect(bound).await.expect("connect");
        let local = stream.local_addr().expect("addr");
        stream
            .write_all(options("TCP", local, "tcp6").as_bytes())
            .await
            .expect("write");
        let answer = read_message(&mut stream, &mut BytesMut::new()).await;
        assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
        assert!(!header_value(&answer, "Via").contains("::ffff"), "{answer}");
    }

    /// Whether this process's TCP socket from `local` to `peer` (the transport's
    /// end of a connection whose other end the test holds) has TCP_NODELAY set;
    /// `None` when no such socket is open.
    fn nodelay_of(local: SocketAddr, peer: SocketAddr) -> Option<bool> {
        use std::os::fd::FromRawFd;
        for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            // SAFETY: the descriptor is open (listed by the kernel a moment ago) and
            // ManuallyDrop keeps it from being closed here; on a descriptor that is
            // not a TCP socket the calls below fail harmlessly.
            let stream =
                std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
            let local_of = stream.local_addr().ok().map(canonical);
            let peer_of = stream.peer_addr().ok().map(canonical);
            if local_of == Some(local) && peer_of == Some(peer) {
                return stream.nodelay().ok();
            }
        }
        None
    }

    /// Nagle's algorithm held the 200 to a re-INVITE back until the phone's
    /// delayed ACK of the 100 Trying (issue 16, item 3): the transport's TCP
    /// sockets, accepted and opened, send at once.
    #[tokio::test]
    async fn tcp_connections_both_ways_are_without_nagle() {
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let (handle, _events, bound) = start(listen, EndpointConfig::new(listen), tcp_gate())
            .await
            .expect("start");
        let mut phone = TcpStream::connect(bound).await.expect("connect");
        let phone_addr = phone.local_addr().expect("addr");
        phone
            .write_all(options("TCP", phone_addr, "nagle1").as_bytes())
            .await
            .expect("write");
        let answer = read_message(&mut phone, &mut BytesMut::new()).await;
        assert!(answer.starts_with("SIP/2.0 200 OK\r\n"), "{answer}");
        assert_eq!(
            nodelay_of(bound, phone_addr),
            Some(true),
            "accepted connection"
        );

        let callee = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let callee_addr = callee.local_addr().expect("addr");
        handle
            .invite(OutgoingCall {
                request_uri: format!("sip:alice@{callee_addr};transport=tcp"),
                from_uri: "sip:1000@bridge".to_owned(),
                from_display: None,
                destination: callee_addr,
                transport: Transport::Tcp,
                offer_sdp: "v=0\r\n".to_owned(),
                credentials: None,
                link: None,
            })
            .await
            .expect("call placed");
        let (mut stream, bridge_end) =
            tokio::time::timeout(Duration::from_secs(5), callee.accept())
                .await
                .expect("connection in time")
                .expect("accept");
        let invite = read_message(&mut stream, &mut BytesMut::new()).await;
        assert!(invite.starts_with("INVITE "), "{invite}");
        assert_eq!(
            nodelay_of(bridge_end, callee_addr),
            Some(true),
            "connection opened for an outgoing request"
        );
    }

    /// The value of header `name` in a message we received.
    fn header_value<'a>(message: &'a str, name: &str) -> &'a str {
        let prefix = format!("{name}: ");
        message
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} in {message}"))
    }

    async fn next_event(events: &mut mpsc::Receiver<SipEvent>) -> SipEvent {
        tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("event in time")
            .expect("event")
    }

    /// The next SIP message on a TCP stream.
    async fn read_message(stream: &mut TcpStream, received: &mut BytesMut) -> String {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(frame) = next_frame(received).expect("framing") {
                    return String::from_utf8(frame.to_vec()).expect("utf8");
                }
                let n = stream.read_buf(received).await.expect("read");
                assert_ne!(n, 0, "connection closed early");
            }
        })
        .await
        .expect("message in time")
    }

    async fn receive(socket: &UdpSocket) -> String {
        let mut buffer = vec![0u8; 4096];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buffer))
            .await
            .expect("message in time")
            .expect("recv");
        String::from_utf8(buffer[..len].to_vec()).expect("utf8")
    }

    #[tokio::test]
    async fn outgoing_call_over_udp_rings_is_answered_and_acked() {
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let (handle, mut events, bound) = start(listen, EndpointConfig::new(listen), tcp_gate())
            .await
            .expect("start");
        let callee = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let callee_addr = callee.local_addr().expect("addr");
        let offer = crate::sip::sdp::build_offer(
            crate::sip::sdp::SdpSession::new(1),
            "127.0.0.1:20000".parse().expect("addr"),
            &crate::sip::sdp::SdpCodec::DEFAULT_ORDER,
            101,
            None,
        );
        let call = handle
            .invite(OutgoingCall {
                request_uri: format!("sip:alice@{callee_addr}"),
                from_uri: "sip:1000@bridge".to_owned(),
                from_display: None,
                destination: callee_addr,
                transport: Transport::Udp,
                offer_sdp: offer,
                credentials: None,
                link: None,
            })
            .await
            .expect("call placed");

        let invite = receive(&callee).await;
        assert!(
            invite.starts_with(&format!("INVITE sip:alice@{callee_addr} SIP/2.0\r\n")),
            "{invite}"
        );
        let echo = format!(
            "Via: {}\r\nFrom: {}\r\nTo: {};tag=callee\r\nCall-ID: {}\r\nCSeq: {}\r\n",
            header_value(&invite, "Via"),
            header_value(&invite, "From"),
            header_value(&invite, "To"),
            header_value(&invite, "Call-ID"),
            header_value(&invite, "CSeq"),
        );
        let ringing = format!("SIP/2.0 180 Ringing\r\n{echo}Content-Length: 0\r\n\r\n");
        callee
            .send_to(ringing.as_bytes(), bound)
            .await
            .expect("send");
        let answer = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                      m=audio 30000 RTP/AVP 0\r\n";
        let ok = format!(
            "SIP/2.0 200 OK\r\n{echo}Contact: <sip:alice@{callee_addr}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        callee.send_to(ok.as_bytes(), bound).await.expect("send");

        assert_eq!(
            next_event(&mut events).await,
            SipEvent::Progress { call, code: 180 }
        );
        match next_event(&mut events).await {
            SipEvent::Answered {
                call: answered,
                answer,
                ..
            } => {
                assert_eq!(answered, call);
                assert_eq!(answer.audio_port, 30000);
            }
            other => panic!("expected Answered, got {other:?}"),
        }
        // INVITE retransmissions may still be in flight before the ACK.
        let ack = loop {
            let message = receive(&callee).await;
            if !message.starts_with("INVITE ") {
                break message;
            }
        };
        assert!(
            ack.starts_with(&format!("ACK sip:alice@{callee_addr} SIP/2.0\r\n")),
            "{ack}"
        );
        assert_eq!(header_value(&ack, "CSeq"), "1 ACK");
        assert!(header_value(&ack, "To").ends_with(";tag=callee"));
    }

    #[tokio::test]
    async fn outgoing_call_over_tcp_opens_the_connection_and_acks_on_it() {
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let (handle, mut events, _bound) = start(listen, EndpointConfig::new(listen), tcp_gate())
            .await
            .expect("start");
        let callee = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let callee_addr = callee.local_addr().expect("addr");
        let call = handle
            .invite(OutgoingCall {
                request_uri: format!("sip:alice@{callee_addr};transport=tcp"),
                from_uri: "sip:1000@bridge".to_owned(),
                from_display: None,
                destination: callee_addr,
                transport: Transport::Tcp,
                offer_sdp: "v=0\r\n".to_owned(),
                credentials: None,
                link: None,
            })
            .await
            .expect("call placed");
        let (mut stream, _) = tokio::time::timeout(Duration::from_secs(5), callee.accept())
            .await
            .expect("connection in time")
            .expect("accept");
        let mut received = BytesMut::new();
        let invite = read_message(&mut stream, &mut received).await;
        assert!(invite.starts_with("INVITE sip:alice@"), "{invite}");
        assert!(header_value(&invite, "Via").starts_with("SIP/2.0/TCP "));
        let answer = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 30000 RTP/AVP 0\r\n";
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=callee\r\nCall-ID: {}\r\n\
             CSeq: {}\r\nContact: <sip:alice@{callee_addr};transport=tcp>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
            header_value(&invite, "Via"),
            header_value(&invite, "From"),
            header_value(&invite, "To"),
            header_value(&invite, "Call-ID"),
            header_value(&invite, "CSeq"),
            answer.len()
        );
        stream.write_all(ok.as_bytes()).await.expect("write");
        let ack = read_message(&mut stream, &mut received).await;
        assert!(ack.starts_with("ACK sip:alice@"), "{ack}");
        assert!(matches!(
            next_event(&mut events).await,
            SipEvent::Answered { call: answered, .. } if answered == call
        ));
    }
}
