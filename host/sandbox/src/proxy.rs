//! The egress proxy of confined host programs: their only way off their own loopback.
//!
//! One port speaks HTTP `CONNECT`, plain HTTP with an absolute URI, and SOCKS5 (told apart by
//! the first byte). Each destination is checked against the step's `network:` grant, by host
//! name and port, the rule wasm steps follow; a refusal is logged with the grant that would
//! allow it and answered with a refusal the client understands (403, SOCKS reply 2).

use ferry_engine::{Level, StepLog};
use ferry_model::NetworkGrant;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest HTTP request head the proxy reads.
const MAX_HEAD: usize = 16 << 10;

/// Connections one program may hold open through the proxy at once: each costs ferry two
/// descriptors, and a program must not run ferry out of them.
const MAX_CONNECTIONS: usize = 256;

/// What the proxy checks and where it reports.
pub struct Proxy {
    pub grants: Vec<NetworkGrant>,
    pub log: StepLog,
    /// Denial text for a host, with the YAML that would grant it.
    pub denial: Box<dyn Fn(&str) -> String + Send + Sync>,
    /// An untrusted run's step: only public addresses, whatever the grant names.
    pub public_only: bool,
}

impl Proxy {
    fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.grants
            .iter()
            .any(|g| g.host.eq_ignore_ascii_case(host) && g.port.is_none_or(|p| p == port))
    }

    fn refuse(&self, host: &str, port: u16) -> String {
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let text = (self.denial)(&target);
        self.log.line(Level::Error, &format!("[ferry] {text}"));
        text
    }
}

/// Serves connections until the task is dropped.
pub async fn serve(listener: std::net::TcpListener, proxy: Arc<Proxy>) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    let mut connections = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of descriptors, say: wait rather than spin.
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Past the cap a connection is closed at once.
                let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
                let proxy = proxy.clone();
                connections.spawn(async move {
                    let _ = handle(stream, &proxy).await;
                    drop(slot);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(client: TcpStream, proxy: &Proxy) -> std::io::Result<()> {
    let mut first = [0u8; 1];
    if client.peek(&mut first).await? == 0 {
        return Ok(());
    }
    if first[0] == 5 {
        socks5(client, proxy).await
    } else {
        http(client, proxy).await
    }
}

/// Connects to a granted host, to the address the check saw: names are resolved here once,
/// and an untrusted run's step never reaches a private or loopback address.
async fn connect(proxy: &Proxy, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut refused = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        if proxy.public_only && !crate::grant::public_address(addr.ip()) {
            refused = Some(addr);
            continue;
        }
        if let Ok(stream) = TcpStream::connect(addr).await {
            return Ok(stream);
        }
    }
    Err(match refused {
        Some(addr) => {
            let text = format!(
                "[ferry] `{host}` resolves to {}, a private or loopback address, which a pull request from a fork may not reach",
                addr.ip()
            );
            proxy.log.line(Level::Error, &text);
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, text)
        }
        None => std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("cannot connect to `{host}:{port}`"),
        ),
    })
}

async fn http(mut client: TcpStream, proxy: &Proxy) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > MAX_HEAD {
            return reply(&mut client, "431 Request Header Fields Too Large", "").await;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("HTTP/1.1"),
    );
    if method.eq_ignore_ascii_case("CONNECT") {
        let Some((host, port)) = split_host_port(target, None) else {
            return reply(&mut client, "400 Bad Request", "CONNECT needs host:port\n").await;
        };
        let Some(mut upstream) = open(&mut client, proxy, &host, port).await? else {
            return Ok(());
        };
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        // Bytes the client sent after the head belong to the tunnel.
        upstream.write_all(&head[end..]).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    let Some(rest) = target.strip_prefix("http://") else {
        return reply(
            &mut client,
            "400 Bad Request",
            "this is ferry's egress proxy: send an absolute http:// URI or use CONNECT\n",
        )
        .await;
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let Some((host, port)) = split_host_port(authority, Some(80)) else {
        return reply(&mut client, "400 Bad Request", "bad host in the URI\n").await;
    };
    let Some(mut upstream) = open(&mut client, proxy, &host, port).await? else {
        return Ok(());
    };
    // One request per connection: the head goes on in origin form, without proxy headers.
    let mut forwarded = format!("{method} {path} {version}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if name.starts_with("proxy-") || name == "connection" || name == "keep-alive" {
            continue;
        }
        forwarded.push_str(line);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    upstream.write_all(forwarded.as_bytes()).await?;
    upstream.write_all(&head[end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// The upstream connection of an HTTP client, or the refusal (403) or failure (502) it was
/// answered instead.
async fn open(
    client: &mut TcpStream,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> std::io::Result<Option<TcpStream>> {
    if !proxy.allows(host, port) {
        let text = proxy.refuse(host, port);
        reply(client, "403 Forbidden", &format!("{text}\n")).await?;
        return Ok(None);
    }
    match connect(proxy, host, port).await {
        Ok(upstream) => Ok(Some(upstream)),
        Err(e) => {
            reply(client, "502 Bad Gateway", &format!("{e}\n")).await?;
            Ok(None)
        }
    }
}

async fn reply(client: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

/// `host:port`, `[v6]:port`, or a bare host with `default` as its port.
fn split_host_port(text: &str, default: Option<u16>) -> Option<(String, u16)> {
    let grant = NetworkGrant::parse(text)?;
    Some((grant.host, grant.port.or(default)?))
}

async fn socks5(mut client: TcpStream, proxy: &Proxy) -> std::io::Result<()> {
    let mut greeting = [0u8; 2];
    client.read_exact(&mut greeting).await?;
    let mut methods = vec![0u8; greeting[1] as usize];
    client.read_exact(&mut methods).await?;
    if !methods.contains(&0) {
        client.write_all(&[5, 0xff]).await?;
        return Ok(());
    }
    client.write_all(&[5, 0]).await?;
    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    let host = match request[3] {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip).await?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut name = vec![0u8; len[0] as usize];
            client.read_exact(&mut name).await?;
            // A host name, nothing a log line could be bent by.
            let name = String::from_utf8_lossy(&name).to_ascii_lowercase();
            if NetworkGrant::parse(&name).is_none_or(|g| g.port.is_some()) {
                client.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
                return Ok(());
            }
            name
        }
        4 => {
            let mut ip = [0u8; 16];
            client.read_exact(&mut ip).await?;
            std::net::Ipv6Addr::from(ip).to_string()
        }
        _ => {
            client.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            return Ok(());
        }
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    let port = u16::from_be_bytes(port);
    if request[1] != 1 {
        // Only CONNECT: no BIND or UDP ASSOCIATE.
        client.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        return Ok(());
    }
    if !proxy.allows(&host, port) {
        proxy.refuse(&host, port);
        client.write_all(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        return Ok(());
    }
    let mut upstream = match connect(proxy, &host, port).await {
        Ok(s) => s,
        Err(_) => {
            client.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            return Ok(());
        }
    };
    client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
