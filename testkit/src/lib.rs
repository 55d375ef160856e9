//! Helpers shared by the workspace's tests (a dev-dependency only; nothing here ships):
//! polling with a deadline, reading a Prometheus metrics text, a plain HTTP/1.1 GET, a free
//! loopback port, percent-encoding a query, and whether a tool is installed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Poll until `cond` holds (panics naming `what` after `timeout`).
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sum of the sample lines `name{…} value` (or `name value`) in a metrics text, only those
/// carrying `label` when one is given.
pub fn metric(text: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .filter(|l| label.is_none_or(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// The names of the series a metrics text exposes.
pub fn exposed_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// A plain HTTP/1.1 GET over loopback: (status, body). Handles chunked bodies.
pub fn http_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut sock = TcpStream::connect(addr).expect("connect to admin port");
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        sock,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    (status, body)
}

/// A loopback port nothing listens on (now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `s` percent-encoded for a URL query.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `tool --version` runs and succeeds.
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True (after saying so) when `tool` is missing and the environment variable `skip_var`
/// allows the test to be skipped; without that variable a missing tool fails the test.
pub fn skip_without(tool: &str, skip_var: &str, install: &str) -> bool {
    if have(tool) {
        return false;
    }
    assert!(
        std::env::var_os(skip_var).is_some(),
        "this test needs {tool} ({install}), or set {skip_var}=1 to skip it"
    );
    eprintln!("SKIPPED: {tool} is not installed");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_the_matching_series_only() {
        let text = "# HELP x\nx_total{stage=\"a\"} 2\nx_total{stage=\"b\"} 3\nx_totals 100\n";
        assert_eq!(metric(text, "x_total", None), 5.0);
        assert_eq!(metric(text, "x_total", Some(("stage", "b"))), 3.0);
        assert_eq!(metric(text, "y", None), 0.0);
        assert!(exposed_names(text).contains("x_totals"));
    }

    #[test]
    fn urlencode_keeps_only_unreserved_bytes() {
        assert_eq!(urlencode("a{b=\"c\"}"), "a%7Bb%3D%22c%22%7D");
    }
}
