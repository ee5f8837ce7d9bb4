//! The admin CLI end to end: the real binary against a real server (the same binary, `serve`,
//! on a temp SQLite directory). Budgets and keys round-trip; bad arguments print a usage
//! message and exit 2; API errors print `error: <message>` and exit 1; the admin key is never
//! printed.
#![cfg(unix)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_bursora-server");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running server; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let admin = format!("bsa_{}", "c".repeat(40));
        let child = Command::new(BIN)
            .args(["serve", "--data-dir"])
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-key", &admin])
            .env_remove("BURSORA_DATABASE_URL")
            .env_remove("BURSORA_ADMIN_KEY")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self {
            child,
            port,
            admin,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.http("GET", "/healthz", "", "").0 != 200 {
            assert!(Instant::now() < deadline, "the server never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One raw HTTP/1.1 request: (status, body); status 0 while nothing listens.
    fn http(&self, method: &str, path: &str, key: &str, body: &str) -> (u16, String) {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// Runs the CLI with the endpoint and admin key in the environment.
    fn cli(&self, args: &[&str]) -> Output {
        let out = Command::new(BIN)
            .args(args)
            .env("BURSORA_ENDPOINT", self.endpoint())
            .env("BURSORA_ADMIN_KEY", &self.admin)
            .env_remove("BURSORA_PROJECT")
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !all.contains(&self.admin),
            "the admin key was printed: {all}"
        );
        out
    }

    /// Runs the CLI; it must succeed. Returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Runs the CLI; it must fail with `code`. Returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.cli(args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
        stderr
    }
}

#[test]
fn budgets_round_trip() {
    let s = Server::start();
    let project = s.json(&["projects", "create", "shop"]);
    let p = project["id"].as_str().unwrap();
    assert!(s.ok(&["projects", "list"]).contains(p));
    assert!(
        s.ok(&["budgets", "list", "--project", p])
            .contains("no budgets yet")
    );

    let created = s.json(&[
        "budgets",
        "create",
        "--project",
        p,
        "--name",
        "per-tenant",
        "--limit-usd",
        "12.000000345",
        "--window",
        "day",
        "--match",
        "tenant_id=*",
    ]);
    assert_eq!(created["limit_nanos"], 12_000_000_345_i64);
    assert_eq!(created["match"], json!({"tenant_id": "*"}));
    assert_eq!(created["mode"], "block");
    let id = created["id"].as_str().unwrap().to_owned();

    // The global options also come before the action.
    let list = s.json(&["budgets", "--project", p, "list"]);
    assert_eq!(list["budgets"][0]["id"], id.as_str());
    let table = s.ok(&["budgets", "list", "--project", p]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("LIMIT"),
        "{table}"
    );
    assert!(
        table.contains("per-tenant") && table.contains("$12.00") && table.contains("tenant_id=*"),
        "{table}"
    );

    // Update by name: limit and mode change, the match stays.
    let updated = s.json(&[
        "budgets",
        "update",
        "per-tenant",
        "--project",
        p,
        "--limit-usd",
        "20",
        "--mode",
        "notify",
    ]);
    assert_eq!(
        (
            &updated["id"],
            &updated["limit_nanos"],
            &updated["mode"],
            &updated["match"]
        ),
        (
            &json!(id),
            &json!(20_000_000_000_i64),
            &json!("notify"),
            &json!({"tenant_id": "*"})
        )
    );
    // ... and by id, clearing the match.
    let cleared = s.json(&["budgets", "update", &id, "--project", p, "--match-all"]);
    assert_eq!(cleared["match"], json!({}));

    // Spend shows in `budgets list` once a call settles.
    let (st, k) = s.http(
        "POST",
        &format!("/v1/projects/{p}/keys"),
        &s.admin,
        r#"{"name":"app"}"#,
    );
    assert_eq!(st, 201, "{k}");
    let key = serde_json::from_str::<Value>(&k).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, r) = s.http(
        "POST",
        "/v1/reserve",
        &key,
        r#"{"tags":{"tenant_id":"acme"},"provider":"openai","model":"gpt-4o","amount_nanos":3000000000}"#,
    );
    assert_eq!(st, 200, "{r}");
    let rid = serde_json::from_str::<Value>(&r).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, body) = s.http(
        "POST",
        "/v1/settle",
        &key,
        &format!(r#"{{"items":[{{"id":"{rid}","actual_nanos":2500000000}}]}}"#),
    );
    assert_eq!(st, 200, "{body}");
    let table = s.ok(&["budgets", "list", "--project", p]);
    assert!(table.contains("$2.50"), "{table}");

    let deleted = s.ok(&["budgets", "delete", "per-tenant", "--project", p]);
    assert!(deleted.contains(&id), "{deleted}");
    assert_eq!(
        s.json(&["budgets", "list", "--project", p])["budgets"],
        json!([])
    );
    let err = s.fails(&["budgets", "delete", "per-tenant", "--project", p], 1);
    assert!(err.starts_with("error: no budget"), "{err}");
}

#[test]
fn keys_round_trip() {
    let s = Server::start();
    let p = s.json(&["projects", "create", "shop"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = s.json(&["keys", "create", "--project", &p, "--name", "checkout"]);
    let key = created["key"].as_str().unwrap().to_owned();
    let kid = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("bsk_"), "{created}");
    assert_eq!(s.http("GET", "/v1/budgets", &key, "").0, 200);

    let listed = s.json(&["keys", "list", "--project", &p]);
    let keys = listed["keys"].as_array().unwrap();
    assert!(
        keys.iter()
            .any(|k| k["id"] == kid.as_str() && k["name"] == "checkout"),
        "{listed}"
    );
    assert!(
        !listed.to_string().contains(&key),
        "a listing never shows secrets"
    );
    let table = s.ok(&["keys", "list", "--project", &p]);
    assert!(
        table.contains("checkout") && table.contains(&kid),
        "{table}"
    );

    // The human form prints the new secret once, with what it is.
    let text = s.ok(&["keys", "create", "--project", &p]);
    assert!(
        text.contains("shown once") && text.contains("bsk_"),
        "{text}"
    );

    let revoked = s.ok(&["keys", "revoke", &kid]);
    assert!(revoked.contains(&kid), "{revoked}");
    assert_eq!(s.http("GET", "/v1/budgets", &key, "").0, 401);
    let listed = s.json(&["keys", "list", "--project", &p]);
    assert!(
        !listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == kid.as_str()),
        "{listed}"
    );

    // A project key cannot manage budgets: the API's message, exit 1.
    let out = Command::new(BIN)
        .args([
            "budgets",
            "create",
            "--name",
            "x",
            "--limit-usd",
            "1",
            "--window",
            "day",
        ])
        .args(["--project", &p, "--endpoint", &s.endpoint()])
        .args(["--admin-key", &created_key(&s, &p)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim(), "error: this operation needs an admin key");
}

fn created_key(s: &Server, project: &str) -> String {
    s.json(&["keys", "create", "--project", project])["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn spend_groups_settled_calls() {
    let s = Server::start();
    let p = s.json(&["projects", "create", "shop"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = created_key(&s, &p);
    for (model, tenant, nanos) in [
        ("gpt-4o", "acme", 1_000_000_007_i64),
        ("gpt-4o", "globex", 2_000_000_000),
        ("gpt-4o-mini", "acme", 30_000_000),
    ] {
        let body = json!({"tags": {"tenant_id": tenant}, "provider": "openai", "model": model, "amount_nanos": nanos + 1});
        let (st, r) = s.http("POST", "/v1/reserve", &key, &body.to_string());
        assert_eq!(st, 200, "{r}");
        let id = serde_json::from_str::<Value>(&r).unwrap()["id"].clone();
        let settle = json!({"items": [{"id": id, "actual_nanos": nanos}]});
        assert_eq!(
            s.http("POST", "/v1/settle", &key, &settle.to_string()).0,
            200
        );
    }
    let by_model = s.json(&["spend", "--project", &p, "--group-by", "model"]);
    let groups = by_model["groups"].as_array().unwrap();
    assert_eq!(groups[0]["value"], "gpt-4o");
    assert_eq!(groups[0]["spent_nanos"], 3_000_000_007_i64);
    assert_eq!(groups[1]["spent_nanos"], 30_000_000);
    let table = s.ok(&[
        "spend",
        "--project",
        &p,
        "--group-by",
        "tag:tenant_id",
        "--from",
        "1d",
    ]);
    assert!(
        table.contains("acme") && table.contains("$1.03") && table.contains("TOTAL"),
        "{table}"
    );
    assert!(table.contains("$3.03"), "{table}");
    // A range before any call: nothing.
    let empty = s.ok(&[
        "spend",
        "--project",
        &p,
        "--from",
        "2020-01-01",
        "--to",
        "2020-01-02",
    ]);
    assert!(empty.starts_with("no spend"), "{empty}");
}

#[test]
fn bad_arguments_print_usage_and_exit_2() {
    // No server needed: these never reach one.
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env("BURSORA_ENDPOINT", "http://127.0.0.1:9")
            .env(
                "BURSORA_ADMIN_KEY",
                "bsa_secret_never_printed_0123456789abcdef",
            )
            .env_remove("BURSORA_PROJECT")
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(!stderr.contains("bsa_secret_never_printed"), "{stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        (out.status.code(), stderr)
    };
    for args in [
        &["budgets"][..],
        &["budgets", "frobnicate"],
        &[
            "budgets",
            "create",
            "--project",
            "p",
            "--limit-usd",
            "5",
            "--window",
            "day",
        ],
        &[
            "budgets",
            "create",
            "--project",
            "p",
            "--name",
            "n",
            "--limit-usd",
            "five",
            "--window",
            "day",
        ],
        &[
            "budgets",
            "create",
            "--project",
            "p",
            "--name",
            "n",
            "--limit-usd",
            "5",
            "--window",
            "fortnight",
        ],
        &[
            "budgets",
            "create",
            "--project",
            "p",
            "--name",
            "n",
            "--limit-usd",
            "5",
            "--window",
            "day",
            "--match",
            "novalue",
        ],
        &["budgets", "update", "b", "--match", "a=b", "--match-all"],
        &["keys", "revoke"],
        &["spend", "--group-by", "color"],
        &["spend", "--from", "yesterday"],
        &["projects", "create"],
        &["nonsense"],
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("Usage:") || stderr.contains("--help"),
            "{args:?}: {stderr}"
        );
    }
    // Missing project or key: a message that says what to pass.
    let (code, stderr) = run(&["budgets", "list"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--project"), "{stderr}");
    let out = Command::new(BIN)
        .args(["projects", "list"])
        .env_remove("BURSORA_ADMIN_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin-key"));
    // A server that is not there: exit 1 and where it looked.
    let (code, stderr) = run(&["projects", "list"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: cannot reach bursora-server at http://127.0.0.1:9"),
        "{stderr}"
    );
}

#[test]
fn a_wrong_key_is_an_error_without_the_key() {
    let s = Server::start();
    let out = Command::new(BIN)
        .args(["projects", "list", "--endpoint", &s.endpoint()])
        .args(["--admin-key", "bsa_wrong_key_0000000000000000000000000000"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: a valid API key is required"),
        "{stderr}"
    );
    assert!(!stderr.contains("bsa_wrong_key"), "{stderr}");
}
