//! The HTTP listener, with the limits a server facing the internet needs: a cap on open
//! connections, a time limit on a request's headers and on its body, and small bodies
//! everywhere but webhooks, whose bodies are read a few at a time.

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections open at once; one more is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 512;
/// Connections open at once from one address (an IPv6 /64), so that one client cannot
/// take every connection. Loopback is exempt: a reverse proxy on the same machine brings
/// everyone's requests from there.
pub const MAX_PER_ADDRESS: usize = 64;
/// Time a client has to send a request's headers, on a new or a kept-alive connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A webhook's body: GitHub caps payloads at 25 MB, but a push lists at most 20 commits
/// and real hooks stay far below this.
pub const HOOK_BODY_LIMIT: usize = 5 << 20;
/// Any other request's body (sign-in, a trigger's inputs, an approval).
pub const API_BODY_LIMIT: usize = 64 << 10;
/// Webhook bodies read at once, before their signatures can be checked.
pub const HOOK_BODIES: usize = 16;

/// Serves `router` on `listener` until `stop` resolves, then lets each connection finish
/// what it is answering (for at most a few seconds).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        std::net::IpAddr,
        usize,
    >::new()));
    let (closing, closed) = tokio::sync::watch::channel(false);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors or a connection reset before it was taken: wait a
                // moment rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let address_slot = match client(peer.ip()) {
            Some(address) => match AddressSlot::take(&per_address, address) {
                Some(slot) => Some(slot),
                None => {
                    drop(stream);
                    continue;
                }
            },
            None => None,
        };
        let router = router.clone();
        let mut closed = closed.clone();
        tokio::spawn(async move {
            let _slots = (slot, address_slot);
            let service = hyper::service::service_fn(move |mut request: Request<_>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                tower_service::Service::call(&mut router.clone(), request)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = closed.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                }
            }
        });
    }
    let _ = closing.send(true);
    let _ = tokio::time::timeout(
        Duration::from_secs(6),
        slots.acquire_many(MAX_CONNECTIONS as u32),
    )
    .await;
    Ok(())
}

/// The client a request from `ip` counts as for per-address limits: an IPv6 address by
/// its /64, which one machine usually holds whole. `None` for loopback, which a reverse
/// proxy on the same machine brings everyone from.
pub(crate) fn client(ip: std::net::IpAddr) -> Option<std::net::IpAddr> {
    match ip.to_canonical() {
        ip if ip.is_loopback() => None,
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(std::net::IpAddr::V6(std::net::Ipv6Addr::new(
                s[0], s[1], s[2], s[3], 0, 0, 0, 0,
            )))
        }
        v4 => Some(v4),
    }
}

/// One connection's place among its address's [`MAX_PER_ADDRESS`], given back when
/// dropped.
struct AddressSlot {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    address: std::net::IpAddr,
}

impl AddressSlot {
    /// A place for a connection from `address` (see [`client`]), or `None` when it has
    /// all of them.
    fn take(
        counts: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        address: std::net::IpAddr,
    ) -> Option<AddressSlot> {
        let mut map = crate::lock(counts);
        let count = map.entry(address).or_default();
        if *count >= MAX_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: counts.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = crate::lock(&self.counts);
        if let Some(count) = map.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.address);
            }
        }
    }
}

/// The headers a forge signs a webhook with: a hook without any of them is refused
/// before its body is read.
const HOOK_SIGNATURES: [&str; 4] = [
    "x-hub-signature-256",
    "x-gitea-signature",
    "x-forgejo-signature",
    "x-gitlab-token",
];

/// Reads a request's body within [`BODY_TIMEOUT`] and its route's limit before the route
/// sees it, so that no handler waits on a slow client or buffers more than it allows.
pub async fn bounded_body(request: Request, next: Next) -> Response {
    static HOOKS: Semaphore = Semaphore::const_new(HOOK_BODIES);
    let hook = request.uri().path().starts_with("/hooks/");
    if hook
        && !HOOK_SIGNATURES
            .iter()
            .any(|name| request.headers().contains_key(*name))
    {
        return crate::api::refuse(
            StatusCode::UNAUTHORIZED,
            "the hook carries no signature (`X-Hub-Signature-256`, `X-Gitea-Signature` or `X-Gitlab-Token`): is the webhook secret set at the forge?",
        );
    }
    let limit = if hook {
        HOOK_BODY_LIMIT
    } else {
        API_BODY_LIMIT
    };
    let (parts, body) = request.into_parts();
    let read = async {
        let _turn = match hook {
            true => HOOKS.acquire().await.ok(),
            false => None,
        };
        axum::body::to_bytes(body, limit).await
    };
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => {
            return crate::api::refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is larger than the {} KiB this endpoint takes",
                    limit >> 10
                ),
            );
        }
        Err(_) => {
            return crate::api::refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            );
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_addresses_ipv6_by_its_64_and_loopback_is_none() {
        let ip = |text: &str| text.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(client(ip("10.0.0.1")), Some(ip("10.0.0.1")));
        assert_eq!(
            client(ip("2001:db8:1:2:3:4:5:6")),
            Some(ip("2001:db8:1:2::"))
        );
        for loopback in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(client(ip(loopback)), None, "{loopback}");
        }
    }
}
