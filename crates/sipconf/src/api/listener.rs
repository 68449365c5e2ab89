//! The API's listener: accepted connections pass `api.max_connections` and
//! `api.max_connections_per_ip` or are closed at once, and each is closed
//! once idle for `api.idle_timeout_s` (docs/security.md, "Connections").

use crate::net::connections::{ConnectionGate, IdleStream};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

pub(super) struct GatedListener {
    pub listener: TcpListener,
    pub gate: Arc<ConnectionGate>,
}

impl axum::serve::Listener for GatedListener {
    type Io = IdleStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "API accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            match self.gate.admit(peer.ip().to_canonical()) {
                Ok(admission) => return (IdleStream::new(stream, admission), peer),
                Err(refusal) => {
                    tracing::debug!(%peer, ?refusal, "API connection refused: too many open");
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}
