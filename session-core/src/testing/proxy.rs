//! A loopback TCP proxy for outage tests: clients connect to [`TcpProxy::addr`], the proxy
//! relays to the real server; [`down`](TcpProxy::down) closes the port and cuts every relayed
//! connection (the server is gone, as far as the client can tell), [`up`](TcpProxy::up) listens
//! on the same port again.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// A TCP relay in front of one server. Dropping it stops it.
#[derive(Debug)]
pub struct TcpProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    target: SocketAddr,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl TcpProxy {
    /// Listens on a free loopback port and relays to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        Ok(TcpProxy {
            addr,
            target,
            task: Mutex::new(Some(Self::serve(listener, target))),
        })
    }

    fn serve(listener: TcpListener, target: SocketAddr) -> JoinHandle<()> {
        tokio::spawn(async move {
            // Relayed connections live in this set, so aborting the task cuts them all.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        conns.spawn(async move {
                            if let Ok(mut outbound) = TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        })
    }

    /// Closes the listening port and every relayed connection.
    pub async fn down(&self) {
        if let Some(task) = self.task.lock().await.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens on the same port again (retrying for a few seconds while the OS frees it).
    pub async fn up(&self) -> std::io::Result<()> {
        let mut task = self.task.lock().await;
        if task.is_some() {
            return Ok(());
        }
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        };
        *task = Some(Self::serve(listener, self.target));
        Ok(())
    }

    /// The suite's outage switch for a harness whose last node reaches its store through this
    /// proxy: `true` takes the proxy down, `false` brings it back (a failure to listen again is
    /// reported on stderr; the next check then fails on its own).
    pub fn outage(self: Arc<Self>) -> super::OutageFn {
        Arc::new(move |down| {
            let proxy = self.clone();
            Box::pin(async move {
                if down {
                    proxy.down().await;
                } else if let Err(e) = proxy.up().await {
                    eprintln!("the outage proxy did not come back: {e}");
                }
            })
        })
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Ok(mut t) = self.task.try_lock()
            && let Some(t) = t.take()
        {
            t.abort();
        }
    }
}

/// `url` with its `host:port` replaced (user info, path and query kept): points a client at a
/// proxy instead of the server.
pub fn with_host_port(url: &str, host: &str, port: u16) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    format!(
        "{scheme}://{}{host}:{port}{tail}",
        userinfo.unwrap_or_default()
    )
}

/// The socket address a `scheme://[user@]host[:port]/...` URL points at (`default_port` when it
/// names none), resolved through the system resolver.
pub fn url_addr(url: &str, default_port: u16) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let with_port = if hostport.ends_with(']') || !hostport.contains(':') {
        format!("{hostport}:{default_port}")
    } else {
        hostport.to_owned()
    };
    let with_port = with_port.replacen("localhost", "127.0.0.1", 1);
    with_port.to_socket_addrs().ok()?.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_replaced_and_the_rest_kept() {
        assert_eq!(
            with_host_port("postgres://u:p@db:5432/app?sslmode=require", "127.0.0.1", 9),
            "postgres://u:p@127.0.0.1:9/app?sslmode=require"
        );
        assert_eq!(
            with_host_port("redis://127.0.0.1:6379", "127.0.0.1", 7),
            "redis://127.0.0.1:7"
        );
        assert_eq!(
            url_addr("postgres://postgres@127.0.0.1:5432/postgres", 5432),
            Some(SocketAddr::from(([127, 0, 0, 1], 5432)))
        );
        assert_eq!(
            url_addr("redis://localhost", 6379),
            Some(SocketAddr::from(([127, 0, 0, 1], 6379)))
        );
    }
}
