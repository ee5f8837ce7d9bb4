//! The binary end to end: first start prints an admin key once, the API answers over TCP, SIGTERM
//! stops it cleanly, and a restart on the same data directory keeps the key and prints nothing.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server process; killed if a failing assertion leaves it running.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start(dir: &std::path::Path, port: u16) -> Running {
    Running(Some(
        Command::new(env!("CARGO_BIN_EXE_bursora-server"))
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env_remove("BURSORA_ADMIN_KEY")
            .env_remove("BURSORA_DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ))
}

/// One HTTP/1.1 request on a fresh connection, retried until the server listens.
fn http(port: u16, method: &str, path: &str, key: &str, body: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("server never listened: {e}"),
        }
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// SIGTERM, then the exit must be clean; returns what was left on stdout.
fn terminate(mut running: Running) -> String {
    let mut child = running.0.take().unwrap();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let mut rest = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
    rest
}

#[test]
fn serve_prints_the_admin_key_once_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = start(dir.path(), port);
    let mut line = String::new();
    BufReader::new(child.0.as_mut().unwrap().stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let admin = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(admin.starts_with("bsa_") && admin.len() == 68, "{line}");

    let (status, body) = http(port, "POST", "/v1/projects", &admin, r#"{"name":"p"}"#);
    assert_eq!(status, 201, "{body}");
    let (status, body) = http(port, "GET", "/v1/projects", "bsa_wrong", "");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unauthorized"), "{body}");
    assert_eq!(terminate(child), "", "the key is printed once");

    // Restart: the stored key still works and no new key is printed.
    let port = free_port();
    let child = start(dir.path(), port);
    let (status, body) = http(port, "GET", "/v1/projects", &admin, "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""name":"p""#), "{body}");
    assert_eq!(terminate(child), "");
}
