//! Noticing that a client went away while its job waits.
//!
//! actix-web does not cancel a handler when the peer closes the connection,
//! so without help a queued job of a client that gave up would still be
//! decoded. [`on_connect`] (pass it to `HttpServer::on_connect`) records each
//! connection's socket; [`closed`] resolves once the peer has closed it
//! (`POLLRDHUP`/`POLLHUP`), checked every 50 ms while the handler waits. The
//! handler then drops its wait on the node, which closes the job's reply
//! port, and the queue skips the job before decode.
//!
//! A host that embeds the routes without `on_connect` loses only this
//! optimisation: jobs of vanished clients are decoded and the answer is
//! discarded. A client that half-closes its sending side while waiting for
//! the answer (rare for HTTP clients) is treated as gone.

use std::any::Any;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::HttpRequest;

/// The raw socket of an HTTP connection, stored in its connection data.
#[derive(Debug, Clone, Copy)]
pub struct PeerSocket(RawFd);

/// Records the connection's socket; give it to `HttpServer::on_connect`.
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions) {
    if let Some(sock) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        ext.insert(PeerSocket(sock.as_raw_fd()));
    } else if let Some(sock) = conn.downcast_ref::<actix_web::rt::net::UnixStream>() {
        ext.insert(PeerSocket(sock.as_raw_fd()));
    }
}

/// Whether the peer has closed the socket (non-blocking check).
fn peer_closed(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && (p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR)) != 0
}

/// Resolves when the request's client has gone; never, if the connection's
/// socket is unknown (no [`on_connect`]).
pub async fn closed(req: &HttpRequest) {
    let Some(PeerSocket(fd)) = req.conn_data::<PeerSocket>().copied() else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        if peer_closed(fd) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_closed_peer_is_noticed_and_an_open_one_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        assert!(
            !peer_closed(server.as_raw_fd()),
            "open connection with unread data is not closed"
        );
        drop(client);
        std::thread::sleep(Duration::from_millis(20));
        assert!(peer_closed(server.as_raw_fd()), "closed peer is noticed");
    }
}
