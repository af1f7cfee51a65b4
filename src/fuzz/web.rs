//! The dashboard's HTTP endpoints with hostile requests, written byte by byte on a raw TCP
//! connection (so nothing on the client side can tidy them up): odd and broken methods, every
//! route with hostile path segments (percent-encoded bytes that are not UTF-8, NUL, 5 kB ids,
//! `..`), query strings of every key the endpoints read with hostile values, cookies, bearer
//! tokens and `Last-Event-ID`s that are not UTF-8 or not numbers, huge and many headers, bodies
//! that are not JSON, not UTF-8, of the wrong shape or larger than the server reads, and a
//! `Content-Length` or chunked body that lies about its size.
//!
//! The contract: every request gets an HTTP answer within 10 s whose status is below 500 (a
//! request whose body is shorter than its `Content-Length` may instead be closed unanswered, as
//! the server cannot know the request ended), and `/api/status` still answers 200 afterwards.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Rng;

/// What the requests got.
#[derive(Debug, Default, Clone)]
pub struct WebReport {
    pub requests: u64,
    /// Answered 2xx or 3xx.
    pub ok: u64,
    /// Answered 4xx.
    pub refused: u64,
    /// Closed unanswered after a body shorter than its Content-Length (allowed).
    pub closed_short_body: u64,
    pub violations: Vec<String>,
}

const ROUTES: &[&str] = &[
    "/",
    "/app.js",
    "/app.css",
    "/api/session",
    "/api/status",
    "/api/alerts",
    "/api/alerts/stream",
    "/api/alerts/{id}/ack",
    "/api/conversations",
    "/api/conversations/{id}",
    "/api/heatmap",
    "/api/nothing-here",
];

const QUERY_KEYS: &[&str] = &[
    "tenant",
    "queue",
    "min_severity",
    "after",
    "limit",
    "hours",
    "x",
];

/// A path segment or query value, as it goes on the wire (already percent-encoded or not).
fn hostile(rng: &mut Rng) -> Vec<u8> {
    match rng.below(14) {
        0 => Vec::new(),
        1 => b"%FF%FE".to_vec(),
        2 => b"%00".to_vec(),
        3 => b"%C3".to_vec(), // a UTF-8 sequence cut short
        4 => "c".repeat(5_000 + rng.below(5_000) as usize).into_bytes(),
        5 => b"..%2F..%2F..%2Fetc%2Fpasswd".to_vec(),
        6 => b"%E6%88%91%E8%A6%81%E6%8A%95%E8%AF%89".to_vec(), // 我要投诉, encoded
        7 => "我要投诉".as_bytes().to_vec(),                   // raw bytes beyond ASCII
        8 => b"18446744073709551616".to_vec(),                 // u64::MAX + 1
        9 => b"-1".to_vec(),
        10 => b"warning".to_vec(),
        11 => (0..1 + rng.below(16))
            .map(|_| b"%\x7f \"<>\\^`{|}"[rng.below(12) as usize])
            .collect(),
        _ => format!("fw-{}", rng.below(100)).into_bytes(),
    }
}

/// A header value: raw bytes, which HTTP allows to be almost anything but CR and LF.
fn header_value(rng: &mut Rng) -> Vec<u8> {
    match rng.below(8) {
        0 => vec![0xff, 0xfe, 0x80],
        1 => b"\x01\x02\x7f".to_vec(),
        2 => "令牌".as_bytes().to_vec(),
        3 => "a".repeat(1 + rng.below(20_000) as usize).into_bytes(),
        4 => b"99999999999999999999999".to_vec(),
        5 => rng.below(1_000).to_string().into_bytes(),
        _ => format!("tok-{}", rng.below(10)).into_bytes(),
    }
}

fn json_body(rng: &mut Rng) -> Vec<u8> {
    let value = |rng: &mut Rng| -> Vec<u8> {
        match rng.below(8) {
            0 => b"5".to_vec(),
            1 => b"null".to_vec(),
            2 => b"[1,2,3]".to_vec(),
            3 => b"\"a\\nb\\u0000\"".to_vec(),
            4 => b"\"\xff\xfe\"".to_vec(),
            5 => format!("\"{}\"", "n".repeat(rng.below(5_000) as usize)).into_bytes(),
            6 => "\"我要投诉\"".as_bytes().to_vec(),
            _ => b"\"tok-1\"".to_vec(),
        }
    };
    let mut body = match rng.below(10) {
        0 => b"{token".to_vec(),
        1 => b"[]".to_vec(),
        2 => (0..rng.below(256)).map(|_| rng.below(256) as u8).collect(),
        3 => "{".repeat(1 + rng.below(10_000) as usize).into_bytes(), // deep nesting
        4 => Vec::new(),
        _ => {
            let key: &[u8] = [&b"token"[..], b"note", b"x"][rng.below(3) as usize];
            let mut b = b"{\"".to_vec();
            b.extend_from_slice(key);
            b.extend_from_slice(b"\":");
            b.extend(value(rng));
            b.push(b'}');
            b
        }
    };
    if rng.chance(3) {
        body = vec![b' '; 3_000_000]; // beyond any body the server reads
    }
    body
}

/// One request's bytes, and whether its body is shorter than it says.
fn request(rng: &mut Rng) -> (Vec<u8>, bool) {
    let method: &[u8] = match rng.below(100) {
        0..=54 => b"GET",
        55..=84 => b"POST",
        85..=89 => b"DELETE",
        90..=92 => b"PUT",
        93..=94 => b"get",
        95..=96 => b"G\x00T",
        97 => b"\xff\xfe",
        _ => b"OPTIONS",
    };
    let route = ROUTES[rng.below(ROUTES.len() as u64) as usize];
    let mut target = Vec::new();
    for (i, part) in route.split("{id}").enumerate() {
        if i > 0 {
            target.extend(hostile(rng));
        }
        target.extend_from_slice(part.as_bytes());
    }
    if rng.chance(40) {
        for i in 0..1 + rng.below(4) {
            target.push(if i == 0 { b'?' } else { b'&' });
            target.extend_from_slice(
                QUERY_KEYS[rng.below(QUERY_KEYS.len() as u64) as usize].as_bytes(),
            );
            if !rng.chance(10) {
                target.push(b'=');
                target.extend(hostile(rng));
            }
        }
    }
    if rng.chance(2) {
        target = (0..1 + rng.below(64))
            .map(|_| rng.below(256) as u8)
            .collect();
    }
    let mut head = method.to_vec();
    head.push(b' ');
    head.extend(target);
    head.extend_from_slice(if rng.chance(3) {
        b" HTTP/9.9\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    head.extend_from_slice(b"Host: fuzz\r\nConnection: close\r\n");
    let mut header = |name: &[u8], value: Vec<u8>| {
        head.extend_from_slice(name);
        head.extend_from_slice(b": ");
        head.extend(value);
        head.extend_from_slice(b"\r\n");
    };
    if rng.chance(20) {
        let mut v = b"emotion_token=".to_vec();
        v.extend(header_value(rng));
        header(b"Cookie", v);
    }
    if rng.chance(15) {
        let mut v = b"Bearer ".to_vec();
        v.extend(header_value(rng));
        header(b"Authorization", v);
    }
    if rng.chance(15) {
        header(b"Last-Event-ID", header_value(rng));
    }
    if rng.chance(5) {
        header(
            b"X-Filler",
            "a".repeat(100_000 + rng.below(2_000_000) as usize)
                .into_bytes(),
        );
    }
    if rng.chance(3) {
        for i in 0..200 + rng.below(300) {
            header(format!("X-Many-{i}").as_bytes(), b"1".to_vec());
        }
    }
    if rng.chance(3) {
        header(b"Bad Name\x01", b"1".to_vec());
    }
    let with_body = method == b"POST" || method == b"PUT" || rng.chance(5);
    let mut short = false;
    let mut body = Vec::new();
    if with_body {
        body = json_body(rng);
        if rng.chance(70) {
            header(b"Content-Type", b"application/json".to_vec());
        } else if rng.chance(50) {
            header(b"Content-Type", header_value(rng));
        }
        match rng.below(20) {
            0 => {
                // Chunked, perhaps with a broken chunk size.
                header(b"Transfer-Encoding", b"chunked".to_vec());
                let mut chunked = if rng.chance(50) {
                    format!("{:x}\r\n", body.len()).into_bytes()
                } else {
                    b"zz\r\n".to_vec()
                };
                chunked.extend(body);
                chunked.extend_from_slice(b"\r\n0\r\n\r\n");
                body = chunked;
            }
            1 => {
                header(
                    b"Content-Length",
                    format!("{}", body.len() + 10).into_bytes(),
                );
                short = true;
            }
            2 => header(b"Content-Length", b"-5".to_vec()),
            3 => header(b"Content-Length", b"99999999999999999999999".to_vec()),
            _ => header(b"Content-Length", body.len().to_string().into_bytes()),
        }
    }
    head.extend_from_slice(b"\r\n");
    head.extend(body);
    (head, short)
}

/// Writes `request` and reads the status line of the answer (None: closed unanswered).
/// With `end_input` the write side is closed after the request (the server then sees a body
/// shorter than its Content-Length end, and may close without answering: hyper does not keep
/// half-closed connections).
async fn exchange(port: u16, request: &[u8], end_input: bool) -> std::io::Result<Option<u16>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    // The server may answer (413, 431, 400) before it has read everything: a failed write is
    // not the end, the answer may be waiting.
    if stream.write_all(request).await.is_ok() && end_input {
        let _ = stream.shutdown().await;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                // The status line is all that is needed (an event stream never ends).
                if answer.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
            // A reset after the answer was written still leaves the answer read so far.
            Err(_) => break,
        }
    }
    if answer.is_empty() {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&answer);
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "not an HTTP answer: {:?}",
                &line[..line.len().min(80)]
            ))
        })?;
    Ok(Some(status))
}

/// `requests` hostile requests against the dashboard on 127.0.0.1:`port`.
pub async fn run(port: u16, seed: u64, requests: u64) -> WebReport {
    let mut rng = Rng::new(seed ^ 0x0077_6562);
    let mut report = WebReport::default();
    for n in 0..requests {
        let (bytes, short) = request(&mut rng);
        report.requests += 1;
        let what = || {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned();
            format!("request {n} (seed {seed}) {shown:?}")
        };
        match tokio::time::timeout(Duration::from_secs(10), exchange(port, &bytes, short)).await {
            Err(_) => report
                .violations
                .push(format!("{}: no answer within 10 s", what())),
            Ok(Err(e)) => report.violations.push(format!("{}: {e}", what())),
            Ok(Ok(None)) if short => report.closed_short_body += 1,
            Ok(Ok(None)) => report
                .violations
                .push(format!("{}: closed without an answer", what())),
            Ok(Ok(Some(status))) if status >= 500 => report
                .violations
                .push(format!("{}: answered {status}", what())),
            Ok(Ok(Some(status))) if status >= 400 => report.refused += 1,
            Ok(Ok(Some(_))) => report.ok += 1,
        }
        if report.violations.len() > 20 {
            break;
        }
    }
    let status = b"GET /api/status HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n";
    match tokio::time::timeout(Duration::from_secs(10), exchange(port, status, false)).await {
        Ok(Ok(Some(200))) => {}
        other => report
            .violations
            .push(format!("after the run, /api/status answered {other:?}")),
    }
    report
}
