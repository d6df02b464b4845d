//! The server side of a webhook: raw HTTP/1.1 over tokio with keep-alive,
//! for the scripted receivers of the alert tests.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One request as the receiver read it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request line, without its line end.
    pub line: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; `Null` when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// The next request on a keep-alive connection; `None` once the client
/// closed it (or sent something that is not HTTP).
pub async fn read_request(stream: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
        return None;
    }
    let line = line.trim_end().to_owned();
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if stream.read_line(&mut header).await.unwrap_or(0) == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut request = Request {
        line,
        path,
        headers,
        body: Vec::new(),
    };
    let length = match request.header("content-length") {
        Some(length) => length.parse().ok()?,
        None => 0,
    };
    request.body = vec![0; length];
    stream.read_exact(&mut request.body).await.ok()?;
    Some(request)
}

/// Answers `status` with a plain-text `body`; `headers` are extra header
/// lines, each ending in `\r\n`. `false` once the client is gone.
pub async fn respond(
    stream: &mut BufReader<TcpStream>,
    status: u16,
    headers: &str,
    body: &str,
) -> bool {
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    stream
        .get_mut()
        .write_all(response.as_bytes())
        .await
        .is_ok()
}
