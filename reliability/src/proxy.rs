//! A loopback TCP forwarder whose target can change. A restarted `redis-server` comes back
//! on a new port; the worker keeps talking to the proxy's, as it would to a fixed address
//! that a restarted or promoted server takes over.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards every connection to the current target; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    target: Arc<AtomicU16>,
    accept: JoinHandle<()>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding proxy");
        let addr = listener.local_addr().expect("proxy address");
        let target = Arc::new(AtomicU16::new(target));
        let current = Arc::clone(&target);
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::clone(&links);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let port = current.load(Ordering::SeqCst);
                let link = tokio::spawn(async move {
                    // While the server is down the connection is refused and the client's
                    // socket is closed at once, as a dead server's would be.
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut open = open.lock().expect("proxy links");
                open.retain(|link| !link.is_finished());
                open.push(link);
            }
        });
        Proxy {
            addr,
            target,
            accept,
            links,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// New connections go to `port`; existing ones end when their server goes.
    pub fn retarget(&self, port: u16) {
        self.target.store(port, Ordering::SeqCst);
    }
}

impl Proxy {
    /// Cuts every open connection at once, dropping whatever it had not forwarded yet, and
    /// refuses new ones: a network partition between the two sides.
    pub fn sever(&self) {
        self.retarget(0);
        for link in self.links.lock().expect("proxy links").drain(..) {
            link.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.sever();
        self.accept.abort();
    }
}
