//! `raindrop jobs|queues|dead-letters|submit`: the job API of a running application, from a
//! terminal or a script. Tables when standard output is a terminal, JSON otherwise (or with
//! `--json`); the exit status says what happened (see [`Exit`]).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the application is and how to talk to it.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// The job API's address (default: `$RAINDROP_URL`, else http://127.0.0.1:8080).
    #[arg(long, global = true)]
    url: Option<String>,
    /// Print JSON even on a terminal.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Jobs {
    /// Jobs, newest first.
    List {
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only these states, comma-separated (queued, running, dead, …).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One job's status.
    Show { id: String },
    /// Cancels a waiting or running job.
    Cancel { id: String },
    /// Puts a dead letter back in its queue.
    Retry { id: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum Queues {
    /// Stops workers taking jobs from a queue.
    Pause { name: String },
    /// Lets workers take jobs from a queue again.
    Resume { name: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeadLetters {
    /// Dead letters, newest first.
    List {
        /// Only this queue.
        #[arg(long)]
        queue: Option<String>,
    },
    /// Puts a dead letter back in its queue.
    Retry { id: String },
    /// Removes dead letters for good (of one queue, or every served queue).
    Purge {
        #[arg(long)]
        queue: Option<String>,
    },
}

/// What a command asks of the API.
pub(crate) enum Call {
    Jobs(Jobs),
    Queues(Option<Queues>),
    DeadLetters(DeadLetters),
    Submit { queue: String, payload: String },
}

/// The exit status of a client command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Done.
    Ok = 0,
    /// The API refused (4xx): the code and message are printed on standard error.
    Refused = 1,
    /// The API could not be reached, answered 5xx, or the command was malformed.
    Unreachable = 2,
    /// The job, queue or route does not exist (404).
    NotFound = 3,
}

impl Connection {
    /// The job API's address: `--url`, else `$RAINDROP_URL`, else the default.
    pub(crate) fn base(&self) -> String {
        let base = self
            .url
            .clone()
            .or_else(|| std::env::var("RAINDROP_URL").ok())
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        base.trim_end_matches('/').to_owned()
    }
}

/// `GET base + path` as JSON, with the API key from `RAINDROP_API_KEY`; a refusal or an
/// unreachable API as a message.
pub(crate) fn get_json(base: &str, path: &str) -> Result<Value, String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let mut request = client.get(format!("{base}{path}"));
    if let Ok(key) = std::env::var("RAINDROP_API_KEY") {
        request = request.bearer_auth(key);
    }
    let response = request
        .send()
        .map_err(|e| format!("cannot reach {base}: {e}"))?;
    let status = response.status();
    let value: Value = response.json().map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(value)
    } else {
        Err(format!(
            "{} {}",
            status.as_u16(),
            value["code"].as_str().unwrap_or("error")
        ))
    }
}

/// Runs `call` against the API `connection` names; the API key comes from `RAINDROP_API_KEY`.
pub(crate) fn run(connection: &Connection, call: Call) -> ExitCode {
    let base = connection.base();
    let table = !connection.json && std::io::stdout().is_terminal();
    let exit = match request(&base, call) {
        Ok((value, view)) => {
            if table {
                print!("{}", view.render(&value));
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            }
            Exit::Ok
        }
        Err((exit, message)) => {
            eprintln!("error: {message}");
            exit
        }
    };
    ExitCode::from(exit as u8)
}

/// How an answer is shown on a terminal.
enum View {
    Jobs,
    Job,
    Queues,
}

impl View {
    fn render(&self, value: &Value) -> String {
        let cell = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        match self {
            View::Jobs => {
                let rows: Vec<Vec<String>> = value["jobs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|j| {
                        ["id", "queue", "kind", "state", "attempt", "created_at"]
                            .iter()
                            .map(|k| cell(&j[*k]))
                            .collect()
                    })
                    .collect();
                let mut out = table(
                    &["ID", "QUEUE", "KIND", "STATE", "ATTEMPT", "CREATED"],
                    &rows,
                );
                if let Some(next) = value["next_cursor"].as_str() {
                    out.push_str(&format!("more after {next}\n"));
                }
                out
            }
            View::Job => {
                let mut out = String::new();
                if let Some(fields) = value.as_object() {
                    let width = fields.keys().map(String::len).max().unwrap_or(0);
                    for (key, v) in fields {
                        out.push_str(&format!("{key:width$}  {}\n", cell(v)));
                    }
                }
                out
            }
            View::Queues => {
                let states = ["queued", "scheduled", "running", "retrying", "dead"];
                let rows: Vec<Vec<String>> = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|q| {
                        let mut row = vec![cell(&q["name"]), cell(&q["paused"])];
                        row.extend(states.iter().map(|s| cell(&q["counts"][*s])));
                        row
                    })
                    .collect();
                table(
                    &[
                        "QUEUE",
                        "PAUSED",
                        "QUEUED",
                        "SCHEDULED",
                        "RUNNING",
                        "RETRYING",
                        "DEAD",
                    ],
                    &rows,
                )
            }
        }
    }
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

type Answer = Result<(Value, View), (Exit, String)>;

fn request(base: &str, call: Call) -> Answer {
    use reqwest::Method;
    let path = |p: &str| format!("{base}{p}");
    let (method, url, body, view) = match call {
        Call::Jobs(Jobs::List {
            queue,
            state,
            limit,
        }) => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(queue.map(|q| ("queue", q)));
            query.extend(state.map(|s| ("state", s)));
            let query = query_string(&query);
            (
                Method::GET,
                path(&format!("/v1/jobs?{query}")),
                None,
                View::Jobs,
            )
        }
        Call::Jobs(Jobs::Show { id }) => (
            Method::GET,
            path(&format!("/v1/jobs/{}", seg(&id))),
            None,
            View::Job,
        ),
        Call::Jobs(Jobs::Cancel { id }) => (
            Method::POST,
            path(&format!("/v1/jobs/{}/cancel", seg(&id))),
            None,
            View::Job,
        ),
        Call::Jobs(Jobs::Retry { id }) | Call::DeadLetters(DeadLetters::Retry { id }) => (
            Method::POST,
            path(&format!("/v1/dead-letters/{}/retry", seg(&id))),
            None,
            View::Job,
        ),
        Call::Queues(None) => (Method::GET, path("/v1/queues"), None, View::Queues),
        Call::Queues(Some(Queues::Pause { name })) => (
            Method::POST,
            path(&format!("/v1/queues/{}/pause", seg(&name))),
            None,
            View::Job,
        ),
        Call::Queues(Some(Queues::Resume { name })) => (
            Method::POST,
            path(&format!("/v1/queues/{}/resume", seg(&name))),
            None,
            View::Job,
        ),
        Call::DeadLetters(DeadLetters::List { queue }) => {
            let query = query_string(&queue.into_iter().map(|q| ("queue", q)).collect::<Vec<_>>());
            (
                Method::GET,
                path(&format!("/v1/dead-letters?{query}")),
                None,
                View::Jobs,
            )
        }
        Call::DeadLetters(DeadLetters::Purge { queue }) => {
            let query = query_string(&queue.into_iter().map(|q| ("queue", q)).collect::<Vec<_>>());
            (
                Method::DELETE,
                path(&format!("/v1/dead-letters?{query}")),
                None,
                View::Job,
            )
        }
        Call::Submit { queue, payload } => {
            let payload: Value = serde_json::from_str(&payload)
                .map_err(|e| (Exit::Unreachable, format!("the payload is not JSON: {e}")))?;
            let body = json!({ "queue": queue, "payload": payload });
            (Method::POST, path("/v1/jobs"), Some(body), View::Job)
        }
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| (Exit::Unreachable, e.to_string()))?;
    let mut request = client.request(method.clone(), &url);
    if let Ok(key) = std::env::var("RAINDROP_API_KEY") {
        request = request.bearer_auth(key);
    }
    // The job API takes its POSTs as JSON, with a body or without.
    if method == Method::POST {
        request = request
            .header("content-type", "application/json")
            .body(body.map_or_else(String::new, |b| b.to_string()));
    }
    let response = request
        .send()
        .map_err(|e| (Exit::Unreachable, format!("cannot reach {base}: {e}")))?;
    let status = response.status();
    let text = response.text().unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        return Ok((value, view));
    }
    let message = format!(
        "{} {}: {}",
        status.as_u16(),
        value["code"].as_str().unwrap_or("error"),
        value["message"].as_str().unwrap_or_default()
    );
    let exit = match status.as_u16() {
        404 => Exit::NotFound,
        400..=499 => Exit::Refused,
        _ => Exit::Unreachable,
    };
    Err((exit, message))
}

/// A path segment with the characters a URL reserves escaped.
fn seg(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `k=v&…` with both sides escaped.
fn query_string(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", seg(k), seg(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_and_urls_escape_what_they_must() {
        let out = table(&["A", "LONGER"], &[vec!["wide cell".into(), "x".into()]]);
        assert_eq!(out, "A          LONGER\nwide cell  x\n");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
        assert_eq!(
            query_string(&[("queue", "q&x".into()), ("limit", "5".into())]),
            "queue=q%26x&limit=5"
        );
    }
}
