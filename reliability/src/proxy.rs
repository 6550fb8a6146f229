//! A loopback TCP forwarder whose target can change. A restarted `redis-server` comes back
//! on a new port; the worker keeps talking to the proxy's, as it would to a fixed address
//! that a restarted or promoted server takes over. The same forwarder in front of the paper
//! exchange plays an exchange that is unreachable: it can stop listening, so that connections
//! are refused, and listen again on the same port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

type Links = Arc<Mutex<Vec<JoinHandle<()>>>>;

/// Forwards every connection to the current target; stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    target: Arc<AtomicU16>,
    /// The accepting task, which owns the listener; `None` while connections are refused.
    accept: Mutex<Option<JoinHandle<()>>>,
    links: Links,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding proxy");
        let addr = listener.local_addr().expect("proxy address");
        let target = Arc::new(AtomicU16::new(target));
        let links: Links = Arc::new(Mutex::new(Vec::new()));
        let accept = accept(listener, Arc::clone(&target), Arc::clone(&links));
        Proxy {
            addr,
            target,
            accept: Mutex::new(Some(accept)),
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

    /// Cuts every open connection at once, dropping whatever it had not forwarded yet, and
    /// refuses new ones: a network partition between the two sides.
    pub fn sever(&self) {
        self.retarget(0);
        self.cut_links();
    }

    /// Stops listening and cuts every open connection: a connection attempt is refused by
    /// the kernel, as when the far side is down, until [`Proxy::listen_again`].
    pub async fn refuse(&self) {
        let accept = self.accept.lock().expect("proxy accept").take();
        if let Some(accept) = accept {
            accept.abort();
            // The listener closes when the aborted task is dropped; wait for that.
            let _ = accept.await;
        }
        self.cut_links();
    }

    /// Listens again on the same port after [`Proxy::refuse`].
    pub async fn listen_again(&self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("listening again on the proxy's port");
        let accept = accept(listener, Arc::clone(&self.target), Arc::clone(&self.links));
        let previous = self.accept.lock().expect("proxy accept").replace(accept);
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    fn cut_links(&self) {
        for link in self.links.lock().expect("proxy links").drain(..) {
            link.abort();
        }
    }
}

/// Accepts connections on `listener` and forwards each to the current target.
fn accept(listener: TcpListener, target: Arc<AtomicU16>, links: Links) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let port = target.load(Ordering::SeqCst);
            let link = tokio::spawn(async move {
                // While the server is down the connection is refused and the client's
                // socket is closed at once, as a dead server's would be.
                if let Ok(mut server) = TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
            let mut open = links.lock().expect("proxy links");
            open.retain(|link| !link.is_finished());
            open.push(link);
        }
    })
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.sever();
        if let Some(accept) = self.accept.lock().expect("proxy accept").take() {
            accept.abort();
        }
    }
}
