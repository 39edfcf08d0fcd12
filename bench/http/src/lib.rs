//! The benches' load generator side of HTTP: one keep-alive HTTP/1.1 connection per simulated
//! client, hand-rolled so that the generator costs little CPU beside the server on two cores.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One keep-alive HTTP/1.1 connection: write a request, read one response (Content-Length).
/// Hand-rolled so the load generator costs little CPU beside the server on two cores.
pub struct Conn {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
    pub host: String,
}

impl Conn {
    pub async fn open(addr: &str) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            host: addr.to_string(),
        })
    }

    pub async fn call(&mut self, req: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        self.stream.write_all(req).await?;
        self.buf.clear();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p;
            }
            let n = self.stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = std::str::from_utf8(&self.buf[..head_end])?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("bad status line"))?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .ok_or_else(|| anyhow::anyhow!("no content-length"))?;
        let total = head_end + 4 + len;
        while self.buf.len() < total {
            let n = self.stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "connection closed mid-body");
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok((status, self.buf[head_end + 4..total].to_vec()))
    }

    /// POST /graphql; the parsed body, or an error for a non-200 answer or top-level `errors`.
    pub async fn gql(
        &mut self,
        token: Option<&str>,
        query: &str,
        vars: Value,
    ) -> anyhow::Result<Value> {
        let body = json!({"query": query, "variables": vars}).to_string();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "POST /graphql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        let (status, bytes) = self.call(req.as_bytes()).await?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!("HTTP {status}: {e}: {}", String::from_utf8_lossy(&bytes))
        })?;
        anyhow::ensure!(
            status == 200 && v.get("errors").is_none_or(Value::is_null),
            "HTTP {status}: {v}"
        );
        Ok(v)
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
