//! Caps on accepted TCP connections, per source IP and in all, and their
//! idle timeout (docs/security.md, "Connections"), shared by SIP over TCP and
//! the HTTP API. A [`ConnectionGate`] admits a connection or refuses it; the
//! [`Admission`] it hands out gives the place back when the connection ends.
//! An [`IdleStream`] ends a connection that has carried nothing for the
//! timeout.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The caps of one listener (`sip.tcp_*`, `api.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// A connection that carries nothing for this long is closed.
    pub idle_timeout: Duration,
}

/// Counters for `/metrics`, one set per listener.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Refused: their source had `max_connections_per_ip` open.
    pub refused_per_ip: AtomicU64,
    /// Refused: `max_connections` were open.
    pub refused_total: AtomicU64,
    /// Closed because they carried nothing for the idle timeout.
    pub closed_idle: AtomicU64,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    PerIp,
    Total,
}

#[derive(Debug)]
pub struct ConnectionGate {
    limits: ConnectionLimits,
    /// Open connections per source IP; an address leaves the map with its
    /// last connection, so the map is no bigger than `max_connections`.
    open: Mutex<HashMap<IpAddr, usize>>,
    stats: Arc<ConnectionStats>,
}

/// One admitted connection's place; dropping it gives the place back.
#[derive(Debug)]
pub struct Admission {
    gate: Arc<ConnectionGate>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.gate.lock();
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
        self.gate.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConnectionGate {
    pub fn new(limits: ConnectionLimits, stats: Arc<ConnectionStats>) -> Arc<ConnectionGate> {
        Arc::new(ConnectionGate {
            limits,
            open: Mutex::new(HashMap::new()),
            stats,
        })
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    pub fn stats(&self) -> &ConnectionStats {
        &self.stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a connection from `ip`, or says which cap it is over.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Refusal> {
        let mut open = self.lock();
        let total: usize = open.values().sum();
        let from_ip = open.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.limits.max_connections_per_ip {
            self.stats.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::PerIp);
        }
        if total >= self.limits.max_connections {
            self.stats.refused_total.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Total);
        }
        *open.entry(ip).or_insert(0) += 1;
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Ok(Admission {
            gate: Arc::clone(self),
            ip,
        })
    }
}

/// A stream that fails its next read with `TimedOut` once nothing was read
/// or written for the idle timeout, so the server above closes it; it holds
/// the connection's [`Admission`] for as long as it lives.
pub struct IdleStream<S> {
    inner: S,
    idle_timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    gate: Arc<ConnectionGate>,
    _admission: Admission,
}

impl<S> IdleStream<S> {
    pub fn new(inner: S, admission: Admission) -> IdleStream<S> {
        let gate = Arc::clone(&admission.gate);
        let idle_timeout = gate.limits.idle_timeout;
        IdleStream {
            inner,
            idle_timeout,
            deadline: Box::pin(tokio::time::sleep(idle_timeout)),
            gate,
            _admission: admission,
        }
    }

    fn active(&mut self) {
        let at = tokio::time::Instant::now() + self.idle_timeout;
        self.deadline.as_mut().reset(at);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.gate.stats.closed_idle.fetch_add(1, Ordering::Relaxed);
                    Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.active();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_connections: usize, max_connections_per_ip: usize) -> Arc<ConnectionGate> {
        ConnectionGate::new(
            ConnectionLimits {
                max_connections,
                max_connections_per_ip,
                idle_timeout: Duration::from_secs(60),
            },
            Arc::default(),
        )
    }

    #[test]
    fn one_address_gets_its_share_and_another_still_gets_in() {
        let gate = gate(4, 2);
        let (a, b) = ("192.0.2.66".parse().unwrap(), "192.0.2.7".parse().unwrap());
        let first = gate.admit(a).expect("first");
        let _second = gate.admit(a).expect("second");
        assert_eq!(gate.admit(a).unwrap_err(), Refusal::PerIp);
        let _other = gate.admit(b).expect("another address");
        drop(first);
        let _again = gate.admit(a).expect("a place was given back");
        assert_eq!(gate.stats().open.load(Ordering::Relaxed), 3);
        assert_eq!(gate.stats().refused_per_ip.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_total_cap_holds_across_addresses_and_places_come_back() {
        let gate = gate(2, 2);
        let ips: Vec<IpAddr> = (1..=3u8).map(|n| IpAddr::from([192, 0, 2, n])).collect();
        let first = gate.admit(ips[0]).expect("first");
        let _second = gate.admit(ips[1]).expect("second");
        assert_eq!(gate.admit(ips[2]).unwrap_err(), Refusal::Total);
        drop(first);
        let _third = gate.admit(ips[2]).expect("after one closed");
        assert_eq!(gate.lock().len(), 2, "the closed address left the map");
    }

    /// Bytes every 0.5 s keep a stream with a 2 s timeout open past 2 s;
    /// then, quiet, it fails its read within the timeout and a margin.
    #[tokio::test]
    async fn an_idle_stream_times_out_and_activity_keeps_it_open() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let gate = ConnectionGate::new(
            ConnectionLimits {
                max_connections: 1,
                max_connections_per_ip: 1,
                idle_timeout: Duration::from_secs(2),
            },
            Arc::default(),
        );
        let (near, mut far) = tokio::io::duplex(64);
        let admission = gate.admit(IpAddr::from([192, 0, 2, 1])).expect("admit");
        let mut stream = IdleStream::new(near, admission);
        let mut byte = [0u8; 1];
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            far.write_all(b"x").await.expect("write");
            stream
                .read_exact(&mut byte)
                .await
                .expect("a byte, not a timeout");
        }
        let error = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("the idle timeout fires")
            .expect_err("idle for 2 s");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(gate.stats().closed_idle.load(Ordering::Relaxed), 1);
        drop(stream);
        assert_eq!(gate.stats().open.load(Ordering::Relaxed), 0);
    }
}
