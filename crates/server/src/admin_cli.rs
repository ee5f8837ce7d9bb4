//! The admin CLI of the `bursora-server` binary: `budgets`, `keys`, `projects` and `spend`,
//! over the same public HTTP API as the dashboard and the SDK (SPEC §6). Part of the binary,
//! not the library: it prints.
//!
//! Tables for people by default; `--json` prints the API's answers as they are. Errors from the
//! API are printed as `error: <message>` and exit 1; bad arguments exit 2 with a usage message.
//! The admin key is sent as `Authorization: Bearer` and never printed, not even in errors.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

/// Where the server is and who is asking; accepted before or after the subcommand.
#[derive(Debug, Args)]
pub struct Conn {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "BURSORA_ENDPOINT",
        default_value = "http://127.0.0.1:8787"
    )]
    endpoint: String,
    /// An admin key (read-only commands also take a project key).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "BURSORA_ADMIN_KEY",
        hide_env_values = true
    )]
    admin_key: Option<String>,
    /// The project to act in (see `bursora-server projects list`).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "BURSORA_PROJECT"
    )]
    project: Option<String>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
}

/// `bursora-server budgets ...`
#[derive(Debug, Args)]
pub struct Budgets {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    action: BudgetAction,
}

#[derive(Debug, Subcommand)]
enum BudgetAction {
    /// List the project's budgets and their current window's spend.
    List,
    /// Create a budget (a budget of that name is updated instead, like SDK declarations).
    Create(BudgetCreate),
    /// Change a budget's limit, window, mode or match (its name cannot change).
    Update(BudgetUpdate),
    /// Delete a budget and its counters.
    Delete {
        /// The budget's id or name.
        budget: String,
    },
}

#[derive(Debug, Args)]
struct BudgetCreate {
    /// Its name, unique in the project (SDK declarations find it by name).
    #[arg(long)]
    name: String,
    /// The limit per window, in USD (exact to the nano-USD).
    #[arg(long, value_name = "USD", value_parser = parse_usd)]
    limit_usd: i64,
    /// The window the limit applies to (UTC calendar windows; `total` never resets).
    #[arg(long, value_parser = ["minute", "hour", "day", "week", "month", "total"])]
    window: String,
    /// `block` refuses calls that do not fit; `notify` only counts.
    #[arg(long, default_value = "block", value_parser = ["block", "notify"])]
    mode: String,
    /// A tag the calls must carry, as KEY=VALUE (repeat for several); VALUE `*` keeps one
    /// counter per distinct value. Without any, the budget covers every call.
    #[arg(long = "match", value_name = "KEY=VALUE", value_parser = parse_pair)]
    matches: Vec<(String, String)>,
}

#[derive(Debug, Args)]
struct BudgetUpdate {
    /// The budget's id or name.
    budget: String,
    /// A new limit per window, in USD.
    #[arg(long, value_name = "USD", value_parser = parse_usd)]
    limit_usd: Option<i64>,
    /// A new window.
    #[arg(long, value_parser = ["minute", "hour", "day", "week", "month", "total"])]
    window: Option<String>,
    /// A new mode.
    #[arg(long, value_parser = ["block", "notify"])]
    mode: Option<String>,
    /// Replaces the whole match with these KEY=VALUE tags (repeat for several).
    #[arg(long = "match", value_name = "KEY=VALUE", value_parser = parse_pair, conflicts_with = "match_all")]
    matches: Vec<(String, String)>,
    /// Removes the match: the budget covers every call.
    #[arg(long)]
    match_all: bool,
}

/// `bursora-server keys ...`
#[derive(Debug, Args)]
pub struct Keys {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    action: KeyAction,
}

#[derive(Debug, Subcommand)]
enum KeyAction {
    /// List the project's keys (ids and names; secrets are never stored).
    List,
    /// Create a project key; the secret is printed this once.
    Create {
        /// What uses the key.
        #[arg(long)]
        name: Option<String>,
    },
    /// Revoke a key: it is refused (401) from now on.
    Revoke {
        /// The key's id (`key_...`, from `keys list`).
        id: String,
    },
}

/// `bursora-server projects ...`
#[derive(Debug, Args)]
pub struct Projects {
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    action: ProjectAction,
}

#[derive(Debug, Subcommand)]
enum ProjectAction {
    /// List every project.
    List,
    /// Create a project.
    Create {
        /// Its name.
        name: String,
    },
}

/// `bursora-server spend ...`
#[derive(Debug, Args)]
pub struct Spend {
    #[command(flatten)]
    conn: Conn,
    /// What to group by: `model`, `provider` or `tag:KEY`.
    #[arg(long, default_value = "model", value_parser = parse_group_by)]
    group_by: String,
    /// Start of the range: Unix ms, `2026-11-01`, RFC 3339, or an age like `7d`, `24h`, `30m`
    /// (default: 30 days ago).
    #[arg(long, value_parser = parse_time)]
    from: Option<i64>,
    /// End of the range, same forms (default: now).
    #[arg(long, value_parser = parse_time)]
    to: Option<i64>,
    /// Most groups to show.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
}

/// An admin command, ready to run.
#[derive(Debug)]
pub enum AdminCommand {
    Budgets(Budgets),
    Keys(Keys),
    Projects(Projects),
    Spend(Spend),
}

/// Why a command failed: a usage problem (exit 2) or an error from the server (exit 1).
enum Failure {
    Usage(String),
    Error(String),
}

/// Runs an admin command and prints its result.
pub async fn run(cmd: AdminCommand) -> ExitCode {
    let result = match cmd {
        AdminCommand::Budgets(b) => budgets(&b.conn, b.action).await,
        AdminCommand::Keys(k) => keys(&k.conn, k.action).await,
        AdminCommand::Projects(p) => projects(&p.conn, p.action).await,
        AdminCommand::Spend(s) => spend(&s).await,
    };
    match result {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: {message}\n\nFor more information, try '--help'."
            );
            ExitCode::from(2)
        }
        Err(Failure::Error(message)) => {
            let _ = writeln!(std::io::stderr(), "error: {message}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Argument parsing

/// USD as typed by a person (`12`, `12.5`, `$1,000.25`) → exact integer nano-USD.
fn parse_usd(text: &str) -> Result<i64, String> {
    let t: String = text
        .trim()
        .trim_start_matches('$')
        .chars()
        .filter(|c| *c != ',' && *c != '_')
        .collect();
    let (whole, frac) = t.split_once('.').unwrap_or((&t, ""));
    let ok = !whole.is_empty()
        && whole.len() <= 7
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 9
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return Err(format!(
            "{text:?} is not an amount in USD from 0 to 1000000, like 50 or 12.50"
        ));
    }
    let whole: i64 = whole.parse().map_err(|_| "amount too large".to_owned())?;
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}")
            .parse()
            .map_err(|_| "bad decimals".to_owned())?
    };
    let nanos = whole * 1_000_000_000 + frac;
    if nanos > 1_000_000 * 1_000_000_000 {
        return Err("a limit is at most 1000000 USD".into());
    }
    Ok(nanos)
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        }
        _ => Err(format!(
            "{text:?} is not KEY=VALUE (VALUE `*` keeps one counter per distinct value)"
        )),
    }
}

fn parse_group_by(text: &str) -> Result<String, String> {
    match text {
        "model" | "provider" => Ok(text.to_owned()),
        _ if text.strip_prefix("tag:").is_some_and(|k| !k.is_empty()) => Ok(text.to_owned()),
        _ => Err(format!("{text:?}: group by model, provider or tag:KEY")),
    }
}

/// Unix ms, a UTC date, RFC 3339, or an age (`7d`, `24h`, `30m`, `90s`) before now.
fn parse_time(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    if let Some(unit) = t.chars().last().filter(|c| "dhms".contains(*c))
        && let Ok(n) = t[..t.len() - 1].parse::<i64>()
    {
        let ms = match unit {
            'd' => 86_400_000,
            'h' => 3_600_000,
            'm' => 60_000,
            _ => 1_000,
        };
        return Ok(now_ms() - n.saturating_mul(ms));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .map_or(0, |dt| dt.and_utc().timestamp_millis()));
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|dt| dt.timestamp_millis())
        .map_err(|_| {
            format!("{text:?} is not a time: give Unix ms, 2026-11-01, RFC 3339, or an age like 7d")
        })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------------------------------------
// HTTP

struct Client {
    http: reqwest::Client,
    base: Url,
    key: String,
}

impl Conn {
    fn client(&self) -> Result<Client, Failure> {
        let key = self
            .admin_key
            .clone()
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| {
                Failure::Usage("no key: pass --admin-key <KEY> or set BURSORA_ADMIN_KEY".into())
            })?;
        let base = Url::parse(&self.endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "--endpoint {:?} is not an http:// URL like http://127.0.0.1:8787",
                    self.endpoint
                ))
            })?;
        let http = bursora_core::remote::http_client()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Failure::Error(format!("cannot start an HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            key: key.trim().to_owned(),
        })
    }

    fn project(&self) -> Result<&str, Failure> {
        self.project.as_deref().ok_or_else(|| {
            Failure::Usage(
                "name the project with --project <ID> (or BURSORA_PROJECT); `bursora-server projects list` shows them"
                    .into(),
            )
        })
    }
}

impl Client {
    /// `segments` are joined as path segments (each percent-encoded), `query` appended.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("http URLs always have a path");
            path.pop_if_empty();
            path.extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let url = self.url(segments, query);
        let mut req = self.http.request(method, url).bearer_auth(&self.key);
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.map_err(|e| {
            // reqwest's message names the URL, never the headers: the key cannot leak here.
            Failure::Error(format!(
                "cannot reach bursora-server at {}: {}",
                self.base,
                root_cause(&e)
            ))
        })?;
        let status = res.status();
        let text = res
            .text()
            .await
            .map_err(|e| Failure::Error(format!("the server's answer broke off: {e}")))?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .map_or_else(|| format!("the server answered {status}"), str::to_owned);
        Err(Failure::Error(if status == StatusCode::UNAUTHORIZED {
            format!("{message} (check --admin-key / BURSORA_ADMIN_KEY)")
        } else {
            message
        }))
    }

    async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Value, Failure> {
        self.send(Method::GET, segments, query, None).await
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn project_query(project: &str) -> Vec<(&'static str, String)> {
    vec![("project", project.to_owned())]
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

// ---------------------------------------------------------------------------------------------
// Commands

async fn budgets(conn: &Conn, action: BudgetAction) -> Result<String, Failure> {
    let client = conn.client()?;
    let project = conn.project()?;
    let q = project_query(project);
    match action {
        BudgetAction::List => {
            let budgets = client.get(&["v1", "budgets"], &q).await?;
            if conn.json {
                return Ok(pretty(&budgets));
            }
            let spend = client.get(&["v1", "spend"], &q).await?;
            Ok(budget_table(&budgets, &spend))
        }
        BudgetAction::Create(c) => {
            let body = json!({
                "name": c.name,
                "limit_nanos": c.limit_usd,
                "window": c.window,
                "mode": c.mode,
                "match": c.matches.into_iter().collect::<BTreeMap<_, _>>(),
            });
            let b = client
                .send(Method::POST, &["v1", "budgets"], &q, Some(&body))
                .await?;
            Ok(if conn.json {
                pretty(&b)
            } else {
                format!("saved budget {} ({})\n", s(&b["name"]), s(&b["id"]))
            })
        }
        BudgetAction::Update(u) => {
            let current = find_budget(&client, &q, &u.budget).await?;
            let id = s(&current["id"]);
            let selector = if u.match_all {
                json!({})
            } else if u.matches.is_empty() {
                current["match"].clone()
            } else {
                json!(u.matches.into_iter().collect::<BTreeMap<_, _>>())
            };
            let body = json!({
                "limit_nanos": u.limit_usd.map_or_else(|| current["limit_nanos"].clone(), Value::from),
                "window": u.window.map_or_else(|| current["window"].clone(), Value::from),
                "mode": u.mode.map_or_else(|| current["mode"].clone(), Value::from),
                "match": selector,
            });
            let b = client
                .send(Method::PUT, &["v1", "budgets", &id], &q, Some(&body))
                .await?;
            Ok(if conn.json {
                pretty(&b)
            } else {
                format!("updated budget {} ({id})\n", s(&b["name"]))
            })
        }
        BudgetAction::Delete { budget } => {
            let current = find_budget(&client, &q, &budget).await?;
            let id = s(&current["id"]);
            client
                .send(Method::DELETE, &["v1", "budgets", &id], &q, None)
                .await?;
            Ok(if conn.json {
                pretty(&json!({"deleted": id}))
            } else {
                format!("deleted budget {} ({id})\n", s(&current["name"]))
            })
        }
    }
}

/// The budget whose id or name is `which`.
async fn find_budget(client: &Client, q: &[(&str, String)], which: &str) -> Result<Value, Failure> {
    let list = client.get(&["v1", "budgets"], q).await?;
    list["budgets"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|b| b["id"] == which)
                .or_else(|| a.iter().find(|b| b["name"] == which))
        })
        .cloned()
        .ok_or_else(|| {
            Failure::Error(format!(
                "no budget {which:?} in this project (`budgets list` shows ids and names)"
            ))
        })
}

fn budget_table(budgets: &Value, spend: &Value) -> String {
    let list = budgets["budgets"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "no budgets yet: create one with `bursora-server budgets create --name NAME --limit-usd 50 --window day`\n".into();
    }
    let counters = spend["budgets"].as_array().cloned().unwrap_or_default();
    let rows = list
        .iter()
        .map(|b| {
            let mine: Vec<&Value> = counters.iter().filter(|c| c["id"] == b["id"]).collect();
            let spent: i64 = mine.iter().map(|c| i(&c["spent_nanos"])).sum();
            let reserved: i64 = mine.iter().map(|c| i(&c["reserved_nanos"])).sum();
            let fullest = mine
                .iter()
                .map(|c| i(&c["spent_nanos"]) + i(&c["reserved_nanos"]))
                .max()
                .unwrap_or(0);
            let limit = i(&b["limit_nanos"]);
            let resets = mine
                .iter()
                .find_map(|c| c["resets_at"].as_str())
                .unwrap_or(if b["window"] == "total" { "never" } else { "-" });
            vec![
                s(&b["name"]),
                s(&b["id"]),
                match_text(&b["match"]),
                s(&b["window"]),
                s(&b["mode"]),
                usd(limit),
                usd(spent),
                usd(reserved),
                if limit > 0 {
                    format!("{:.1}%", fullest as f64 * 100.0 / limit as f64)
                } else {
                    "-".into()
                },
                mine.len().to_string(),
                resets.to_owned(),
            ]
        })
        .collect();
    table(
        &[
            ("NAME", false),
            ("ID", false),
            ("MATCH", false),
            ("WINDOW", false),
            ("MODE", false),
            ("LIMIT", true),
            ("SPENT", true),
            ("RESERVED", true),
            ("FULLEST", true),
            ("COUNTERS", true),
            ("RESETS AT", false),
        ],
        rows,
    )
}

async fn keys(conn: &Conn, action: KeyAction) -> Result<String, Failure> {
    let client = conn.client()?;
    match action {
        KeyAction::List => {
            let project = conn.project()?;
            let v = client
                .get(&["v1", "projects", project, "keys"], &[])
                .await?;
            if conn.json {
                return Ok(pretty(&v));
            }
            let list = v["keys"]
                .as_array()
                .or_else(|| v.as_array())
                .cloned()
                .unwrap_or_default();
            if list.is_empty() {
                return Ok(
                    "no keys yet: create one with `bursora-server keys create --name NAME`\n"
                        .into(),
                );
            }
            let rows = list
                .iter()
                .map(|k| {
                    vec![
                        s(&k["name"]),
                        s(&k["id"]),
                        s(&k["project"]),
                        k["created_at"]
                            .as_str()
                            .map(str::to_owned)
                            .or_else(|| k["created_at_ms"].as_i64().map(|ms| ms.to_string()))
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            Ok(table(
                &[
                    ("NAME", false),
                    ("ID", false),
                    ("PROJECT", false),
                    ("CREATED", false),
                ],
                rows,
            ))
        }
        KeyAction::Create { name } => {
            let project = conn.project()?;
            let body = match name {
                Some(n) => json!({ "name": n }),
                None => json!({}),
            };
            let k = client
                .send(
                    Method::POST,
                    &["v1", "projects", project, "keys"],
                    &[],
                    Some(&body),
                )
                .await?;
            Ok(if conn.json {
                pretty(&k)
            } else {
                format!(
                    "created key {} ({}) for project {}\nkey (shown once, store it now): {}\n",
                    s(&k["name"]),
                    s(&k["id"]),
                    s(&k["project"]),
                    s(&k["key"])
                )
            })
        }
        KeyAction::Revoke { id } => {
            client
                .send(Method::DELETE, &["v1", "keys", &id], &[], None)
                .await?;
            Ok(if conn.json {
                pretty(&json!({"revoked": id}))
            } else {
                format!("revoked key {id}\n")
            })
        }
    }
}

async fn projects(conn: &Conn, action: ProjectAction) -> Result<String, Failure> {
    let client = conn.client()?;
    match action {
        ProjectAction::List => {
            let v = client.get(&["v1", "projects"], &[]).await?;
            if conn.json {
                return Ok(pretty(&v));
            }
            let list = v["projects"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                return Ok(
                    "no projects yet: create one with `bursora-server projects create NAME`\n"
                        .into(),
                );
            }
            let rows = list
                .iter()
                .map(|p| {
                    vec![
                        s(&p["name"]),
                        s(&p["id"]),
                        p["created_at_ms"]
                            .as_i64()
                            .map(bursora_core::window::format_utc)
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            Ok(table(
                &[("NAME", false), ("ID", false), ("CREATED", false)],
                rows,
            ))
        }
        ProjectAction::Create { name } => {
            let p = client
                .send(
                    Method::POST,
                    &["v1", "projects"],
                    &[],
                    Some(&json!({ "name": name })),
                )
                .await?;
            Ok(if conn.json {
                pretty(&p)
            } else {
                format!("created project {} ({})\n", s(&p["name"]), s(&p["id"]))
            })
        }
    }
}

async fn spend(cmd: &Spend) -> Result<String, Failure> {
    let conn = &cmd.conn;
    let client = conn.client()?;
    let project = conn.project()?;
    let mut q = project_query(project);
    q.push(("group_by", cmd.group_by.clone()));
    q.push(("limit", cmd.limit.to_string()));
    if let Some(from) = cmd.from {
        q.push(("from", from.to_string()));
    }
    if let Some(to) = cmd.to {
        q.push(("to", to.to_string()));
    }
    let v = client.get(&["v1", "spend", "breakdown"], &q).await?;
    if conn.json {
        return Ok(pretty(&v));
    }
    let groups = v["groups"].as_array().cloned().unwrap_or_default();
    let range = format!(
        "{} to {}",
        v["from_ms"]
            .as_i64()
            .map(bursora_core::window::format_utc)
            .unwrap_or_default(),
        v["to_ms"]
            .as_i64()
            .map(bursora_core::window::format_utc)
            .unwrap_or_default()
    );
    if groups.is_empty() {
        return Ok(format!("no spend from {range}\n"));
    }
    let total: i64 = groups.iter().map(|g| i(&g["spent_nanos"])).sum();
    let calls: i64 = groups.iter().map(|g| i(&g["calls"])).sum();
    let mut rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            let spent = i(&g["spent_nanos"]);
            vec![
                g["value"]
                    .as_str()
                    .map_or_else(|| "(none)".to_owned(), str::to_owned),
                usd(spent),
                if total > 0 {
                    format!("{:.1}%", spent as f64 * 100.0 / total as f64)
                } else {
                    "-".into()
                },
                i(&g["calls"]).to_string(),
            ]
        })
        .collect();
    rows.push(vec![
        "TOTAL".into(),
        usd(total),
        String::new(),
        calls.to_string(),
    ]);
    let mut out = format!("spend by {} from {range}\n", cmd.group_by);
    out.push_str(&table(
        &[
            (cmd.group_by.as_str(), false),
            ("SPENT", true),
            ("SHARE", true),
            ("CALLS", true),
        ],
        rows,
    ));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Output

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn i(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn match_text(v: &Value) -> String {
    let pairs: Vec<String> = v
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect())
        .unwrap_or_default();
    if pairs.is_empty() {
        "(every call)".into()
    } else {
        pairs.join(",")
    }
}

/// `$1,234.56` from nano-USD, exactly (integer arithmetic); below a cent, every significant
/// digit (`$0.000042`).
fn usd(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n != 0 && n < 10_000_000 {
        let frac = format!("{n:09}");
        return format!("{sign}$0.{}", frac.trim_end_matches('0'));
    }
    let cents = (n + 5_000_000) / 10_000_000;
    let whole = (cents / 100).to_string();
    let mut grouped = String::new();
    for (idx, ch) in whole.chars().enumerate() {
        if idx > 0 && (whole.len() - idx).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("{sign}${grouped}.{:02}", cents % 100)
}

/// Aligned columns; `(header, right_aligned)`.
fn table(columns: &[(&str, bool)], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut l = String::new();
        for (idx, ((cell, w), (_, right))) in cells.iter().zip(&widths).zip(columns).enumerate() {
            if idx > 0 {
                l.push_str("  ");
            }
            let _ = if *right {
                write!(l, "{cell:>w$}")
            } else {
                write!(l, "{cell:<w$}")
            };
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(columns.iter().map(|(h, _)| (*h).to_owned()).collect());
    for row in rows {
        line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_is_exact() {
        assert_eq!(parse_usd("12.5"), Ok(12_500_000_000));
        assert_eq!(parse_usd("$1,000.000000001"), Ok(1_000_000_000_001));
        assert_eq!(parse_usd("0.1"), Ok(100_000_000));
        assert!(parse_usd("abc").is_err());
        assert!(parse_usd("-1").is_err());
        assert!(parse_usd("1.0000000001").is_err());
        assert!(parse_usd("1000001").is_err());
        assert_eq!(usd(12_500_000_000), "$12.50");
        assert_eq!(usd(1_234_567_890_000), "$1,234.57");
        assert_eq!(usd(42_000), "$0.000042");
        assert_eq!(usd(0), "$0.00");
    }

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2026-11-01"), Ok(1_793_491_200_000));
        assert_eq!(parse_time("2026-11-01T00:00:00Z"), Ok(1_793_491_200_000));
        let week = now_ms() - parse_time("7d").unwrap();
        assert!((604_800_000..604_900_000).contains(&week), "{week}");
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn tables_align() {
        let t = table(
            &[("A", false), ("B", true)],
            vec![vec!["xx".into(), "1".into()]],
        );
        assert_eq!(t, "A   B\nxx  1\n");
    }
}
