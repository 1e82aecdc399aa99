//! A TCP proxy in front of a broker that can cut the network: every
//! connection through it closed at once and new ones refused (its port
//! closed) for a while, then taken again. Servers and clients reach the
//! broker through proxies of their own, so either side can be cut alone.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::brokers::Failure;

/// A proxy from a port of its own to the broker's.
pub(crate) struct Proxy {
    port: u16,
    /// Counts the cuts: each connection ends when it moves.
    cuts: Arc<watch::Sender<u64>>,
    listening: Option<JoinHandle<()>>,
    target: u16,
}

impl Proxy {
    /// A proxy on a free loopback port, forwarding to `target`.
    pub(crate) async fn start(target: u16) -> Result<Self, Failure> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("a proxy's port: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let (cuts, _) = watch::channel(0);
        let mut proxy = Proxy {
            port,
            cuts: Arc::new(cuts),
            listening: None,
            target,
        };
        proxy.listening = Some(proxy.accept(listener));
        Ok(proxy)
    }

    /// The port the broker's users are given.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    fn accept(&self, listener: TcpListener) -> JoinHandle<()> {
        let (cuts, target) = (self.cuts.clone(), self.target);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut cut = cuts.subscribe();
                cut.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let (mut inbound, mut outbound) = (inbound, outbound);
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        })
    }

    /// Cuts the network: every connection through the proxy closed, and
    /// its port closed (connections refused) until [`Proxy::reopen`].
    pub(crate) async fn cut(&mut self) {
        if let Some(listening) = self.listening.take() {
            listening.abort();
            // The listener is dropped with its task: the port refuses
            // before the connections close.
            let _ = listening.await;
        }
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Listens on the proxy's port again. The port was its own a moment
    /// ago, but something else may bind it meanwhile: tried for a few
    /// seconds.
    pub(crate) async fn reopen(&mut self) -> Result<(), Failure> {
        if self.listening.is_some() {
            return Ok(());
        }
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(e) if tries >= 100 => {
                    return Err(format!(
                        "the proxy could not take port {} again: {e}",
                        self.port
                    ))
                }
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.listening = Some(self.accept(listener));
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(listening) = self.listening.take() {
            listening.abort();
        }
        self.cuts.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server's port.
    async fn echo() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        port
    }

    async fn round_trip(port: u16) -> std::io::Result<[u8; 4]> {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
        socket.write_all(b"ping").await?;
        let mut got = [0; 4];
        socket.read_exact(&mut got).await?;
        Ok(got)
    }

    #[tokio::test]
    async fn a_cut_closes_connections_refuses_new_ones_and_ends() {
        let mut proxy = Proxy::start(echo().await).await.unwrap();
        let port = proxy.port();
        assert_eq!(&round_trip(port).await.unwrap(), b"ping");
        let mut open = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        open.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        open.read_exact(&mut got).await.unwrap();

        proxy.cut().await;
        // The open connection is closed: a read sees its end.
        let read = tokio::time::timeout(Duration::from_secs(5), open.read(&mut got)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        // A new one is refused while the cut lasts.
        let refused = TcpStream::connect(("127.0.0.1", port)).await;
        assert!(refused.is_err(), "connected during the cut");
        proxy.reopen().await.unwrap();
        assert_eq!(&round_trip(port).await.unwrap(), b"ping");
    }
}
