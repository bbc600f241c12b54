// SPDX-License-Identifier: Apache-2.0
//! A small HTTP/1.1 client over WASI sockets, for steps granted network access
//! (`permissions: { network: ["host:port"] }`): webhooks, health checks, registries.
//!
//! Plain `http://` only: TLS is not available inside a step yet, and an `https://` URL is
//! refused with a message saying so rather than sent in the clear. Each request opens its
//! own connection (`Connection: close`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What a request sends after its headers.
pub enum Body<'a> {
    /// No body.
    Empty,
    /// These bytes.
    Bytes(&'a [u8]),
    /// A reader and its exact length (sent with `Content-Length`).
    Reader(&'a mut dyn Read, u64),
}

/// An HTTP response; the body is read on demand.
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// Headers in the order received.
    pub headers: Vec<(String, String)>,
    body: Box<dyn Read>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as a reader.
    pub fn body(&mut self) -> &mut dyn Read {
        &mut self.body
    }

    /// The whole body, up to `limit` bytes (the rest is dropped).
    pub fn bytes(&mut self, limit: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut self.body).take(limit).read_to_end(&mut out)?;
        Ok(out)
    }

    /// The body as text, up to 1 MiB.
    pub fn text(&mut self) -> io::Result<String> {
        Ok(String::from_utf8_lossy(&self.bytes(1 << 20)?).into_owned())
    }
}

/// The parts of an `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `host:port` (port 80 when not given).
    pub authority: String,
    /// The host name or address.
    pub host: String,
    /// The port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses an `http://` URL; `https://` is refused with a message saying why.
    pub fn parse(url: &str) -> Result<Url, String> {
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err(format!(
                "`{url}`: https is not available inside a step yet; use http:// on a trusted network, or reach the service through a granted host program (`curl`) with `exec`"
            ));
        } else {
            return Err(format!("`{url}` is not an http:// URL"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                match p.parse::<u16>() {
                    Ok(port) => (h.to_string(), port),
                    Err(_) if authority.starts_with('[') && authority.ends_with(']') => {
                        (authority.to_string(), 80)
                    }
                    Err(_) => return Err(format!("`{url}` has an invalid port")),
                }
            }
            _ => (authority.to_string(), 80),
        };
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        Ok(Url {
            authority: format!("{host}:{port}"),
            host,
            port,
            path: path.to_string(),
        })
    }

    /// A `Location` header resolved against this URL.
    pub fn join(&self, location: &str) -> Result<Url, String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Url::parse(location)
        } else if location.starts_with('/') {
            Ok(Url {
                path: location.to_string(),
                ..self.clone()
            })
        } else {
            let dir = self.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            Ok(Url {
                path: format!("{dir}/{location}"),
                ..self.clone()
            })
        }
    }
}

/// Sends one request. `headers` are added after `Host`, `Content-Length` and
/// `Connection: close`. Redirects are not followed; see [`Url::join`].
pub fn send(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: Body,
    timeout: Duration,
) -> io::Result<Response> {
    let host = url.host.trim_start_matches('[').trim_end_matches(']');
    let stream = TcpStream::connect((host, url.port)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot connect to {}: {e} (is `{}` granted under `permissions: {{ network: [...] }}`?)",
                url.authority, url.authority
            ),
        )
    })?;
    // Not every WASI host supports socket timeouts; the step's own time limit still holds.
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let mut out = io::BufWriter::with_capacity(1 << 16, &stream);
    let length = match &body {
        Body::Empty => None,
        Body::Bytes(b) => Some(b.len() as u64),
        Body::Reader(_, n) => Some(*n),
    };
    write!(
        out,
        "{method} {} HTTP/1.1\r\nHost: {}\r\n",
        url.path, url.authority
    )?;
    if let Some(n) = length {
        write!(out, "Content-Length: {n}\r\n")?;
    } else if matches!(method, "POST" | "PUT" | "PATCH") {
        write!(out, "Content-Length: 0\r\n")?;
    }
    write!(out, "Connection: close\r\nUser-Agent: ferry\r\n")?;
    for (name, value) in headers {
        if name.contains(['\r', '\n']) || value.contains(['\r', '\n']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("header `{name}` contains a line break"),
            ));
        }
        write!(out, "{name}: {value}\r\n")?;
    }
    out.write_all(b"\r\n")?;
    match body {
        Body::Empty => {}
        Body::Bytes(b) => out.write_all(b)?,
        Body::Reader(r, n) => {
            let copied = io::copy(&mut r.take(n), &mut out)?;
            if copied != n {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the body ended after {copied} of {n} bytes"),
                ));
            }
        }
    }
    out.flush()?;
    drop(out);
    let mut reader = BufReader::with_capacity(1 << 16, stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} did not answer HTTP: `{}`", url.authority, line.trim()),
            )
        })?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body: Box<dyn Read> = if method == "HEAD" || status == 204 || status == 304 {
        Box::new(io::empty())
    } else if find("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        Box::new(Chunked {
            inner: reader,
            left: 0,
            done: false,
        })
    } else if let Some(n) = find("content-length").and_then(|n| n.parse::<u64>().ok()) {
        Box::new(reader.take(n))
    } else {
        Box::new(reader)
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

struct Chunked<R: BufRead> {
    inner: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            if line.trim().is_empty() {
                // The CRLF after the previous chunk.
                line.clear();
                self.inner.read_line(&mut line)?;
            }
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = u64::from_str_radix(size, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size `{}`", line.trim()),
                )
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let max = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the response ended in the middle of a chunk",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Standard base64 (with padding), for `Authorization: Basic`.
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = Url::parse("http://127.0.0.1:5000/v2/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 5000, "/v2/")
        );
        assert_eq!(
            Url::parse("http://example.com").unwrap().authority,
            "example.com:80"
        );
        assert!(
            Url::parse("https://example.com")
                .unwrap_err()
                .contains("https")
        );
        let joined = u.join("/v2/app/blobs/uploads/abc?x=1").unwrap();
        assert_eq!(joined.path, "/v2/app/blobs/uploads/abc?x=1");
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let mut r = Chunked {
            inner: &body[..],
            left: 0,
            done: false,
        };
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello world");
    }

    #[test]
    fn encodes_base64() {
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
