//! A stand-in for GitHub's REST API on 127.0.0.1, for the calls Cairn makes: issue
//! comments (list with pages, create, update, delete), commit statuses, issues (list by
//! label and state, create, update). It keeps what was written, so a second run sees the
//! first run's comments, and records every request (method, path with query, JSON
//! body, whether the token was right) for tests to check.
//!
//! It stays strict: a wrong or missing token gets 401, another repository or an unknown
//! pull request 404, and a route it does not know 404 (recorded, so tests can assert
//! there were none). Faults can be scripted: "answer the next N requests whose path
//! contains X with status S".
//!
//! Include with `#[path = "../support/github_server.rs"] mod github_server;`.

#![allow(dead_code)]

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query: `/repos/acme/infra/issues/7/comments?per_page=100&page=1`.
    pub path: String,
    pub body: Option<Value>,
    /// The `Authorization` header carried the expected token.
    pub authorized: bool,
    /// The raw `Authorization` header, to check how the token was sent.
    pub authorization: Option<String>,
}

/// A scripted failure.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: Option<String>,
    pub path_contains: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub times: usize,
}

#[derive(Debug, Clone)]
pub struct StoredComment {
    pub id: u64,
    pub issue: u64,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct StoredIssue {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    pub state: String,
}

#[derive(Debug, Default)]
pub struct State {
    pub owner: String,
    pub name: String,
    pub token: String,
    /// Pull requests that exist.
    pub pulls: BTreeSet<u64>,
    pub comments: Vec<StoredComment>,
    pub issues: Vec<StoredIssue>,
    /// `(sha, body)` of every status set.
    pub statuses: Vec<(String, Value)>,
    pub requests: Vec<Recorded>,
    /// Requests no route matched.
    pub unexpected: Vec<String>,
    pub faults: VecDeque<Fault>,
    next_id: u64,
}

/// The running stand-in. Stops when dropped.
pub struct FakeGitHub {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeGitHub {
    /// Serves repository `owner/name`, accepting `token`, with these pull requests.
    pub fn start(repo: &str, token: &str, pulls: &[u64]) -> FakeGitHub {
        let (owner, name) = repo.split_once('/').unwrap();
        let state = Arc::new(Mutex::new(State {
            owner: owner.into(),
            name: name.into(),
            token: token.into(),
            pulls: pulls.iter().copied().collect(),
            next_id: 1000,
            ..State::default()
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(handle).with_state(shared);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        FakeGitHub {
            url,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Answers the next `times` requests whose path contains `path_contains` (and whose
    /// method is `method`, when given) with `status` and `body`.
    pub fn fail(
        &self,
        method: Option<&str>,
        path_contains: &str,
        status: u16,
        times: usize,
        headers: &[(&str, &str)],
        body: &str,
    ) {
        self.state.lock().unwrap().faults.push_back(Fault {
            method: method.map(str::to_string),
            path_contains: path_contains.into(),
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
            times,
        });
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    /// The comments on issue or pull request `number`, oldest first.
    pub fn comments(&self, number: u64) -> Vec<StoredComment> {
        self.state
            .lock()
            .unwrap()
            .comments
            .iter()
            .filter(|c| c.issue == number)
            .cloned()
            .collect()
    }

    pub fn issues(&self) -> Vec<StoredIssue> {
        self.state.lock().unwrap().issues.clone()
    }

    pub fn statuses(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().statuses.clone()
    }

    pub fn unexpected(&self) -> Vec<String> {
        self.state.lock().unwrap().unexpected.clone()
    }

    /// Adds a comment as someone else would.
    pub fn add_comment(&self, number: u64, body: &str) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let id = s.next_id;
        s.comments.push(StoredComment {
            id,
            issue: number,
            body: body.into(),
        });
        id
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reply(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn not_found() -> Response {
    reply(
        404,
        json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}),
    )
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

fn comment_json(s: &State, c: &StoredComment) -> Value {
    json!({
        "id": c.id,
        "body": c.body,
        "html_url": format!("https://github.test/{}/{}/pull/{}#issuecomment-{}", s.owner, s.name, c.issue, c.id),
        "user": {"login": "github-actions[bot]"},
    })
}

fn issue_json(s: &State, i: &StoredIssue) -> Value {
    json!({
        "number": i.number,
        "title": i.title,
        "body": i.body,
        "state": i.state,
        "labels": i.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
        "html_url": format!("https://github.test/{}/{}/issues/{}", s.owner, s.name, i.number),
    })
}

async fn handle(
    AxumState(state): AxumState<Arc<Mutex<State>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let full = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    let json_body: Option<Value> = if body.is_empty() {
        None
    } else {
        serde_json::from_slice(&body).ok()
    };
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let authorized = authorization.as_deref() == Some(&format!("Bearer {}", s.token))
        || authorization.as_deref() == Some(&format!("token {}", s.token));
    s.requests.push(Recorded {
        method: method.to_string(),
        path: full.clone(),
        body: json_body.clone(),
        authorized,
        authorization,
    });

    // Scripted faults first.
    let hit = s.faults.iter().position(|f| {
        f.times > 0
            && full.contains(&f.path_contains)
            && f.method.as_deref().is_none_or(|m| m == method.as_str())
    });
    if let Some(i) = hit {
        let fault = s.faults[i].clone();
        s.faults[i].times -= 1;
        let mut response = (
            StatusCode::from_u16(fault.status).unwrap(),
            fault.body.clone(),
        )
            .into_response();
        for (n, v) in &fault.headers {
            response.headers_mut().insert(
                axum::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        return response;
    }
    if !authorized {
        return reply(401, json!({"message": "Bad credentials"}));
    }
    let prefix = format!("/repos/{}/{}/", s.owner, s.name);
    let Some(rest) = path.strip_prefix(&prefix) else {
        return not_found();
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let issue_exists =
        |s: &State, n: u64| s.pulls.contains(&n) || s.issues.iter().any(|i| i.number == n);
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["issues", n, "comments"]) => {
            let Ok(n) = n.parse::<u64>() else {
                return not_found();
            };
            if !issue_exists(&s, n) {
                return not_found();
            }
            let per_page: usize = query_param(&query, "per_page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(30);
            let page: usize = query_param(&query, "page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let all: Vec<Value> = s
                .comments
                .iter()
                .filter(|c| c.issue == n)
                .map(|c| comment_json(&s, c))
                .collect();
            let slice: Vec<Value> = all
                .into_iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .collect();
            reply(200, Value::Array(slice))
        }
        ("POST", ["issues", n, "comments"]) => {
            let Ok(n) = n.parse::<u64>() else {
                return not_found();
            };
            if !issue_exists(&s, n) {
                return not_found();
            }
            let Some(text) = json_body.as_ref().and_then(|b| b["body"].as_str()) else {
                return reply(422, json!({"message": "body is missing"}));
            };
            if text.chars().count() > 65_536 {
                return reply(
                    422,
                    json!({"message": "Validation Failed: body is too long (maximum is 65536 characters)"}),
                );
            }
            s.next_id += 1;
            let c = StoredComment {
                id: s.next_id,
                issue: n,
                body: text.to_string(),
            };
            s.comments.push(c.clone());
            let out = comment_json(&s, &c);
            reply(201, out)
        }
        ("PATCH", ["issues", "comments", id]) => {
            let Ok(id) = id.parse::<u64>() else {
                return not_found();
            };
            let Some(text) = json_body
                .as_ref()
                .and_then(|b| b["body"].as_str())
                .map(str::to_string)
            else {
                return reply(422, json!({"message": "body is missing"}));
            };
            if text.chars().count() > 65_536 {
                return reply(
                    422,
                    json!({"message": "Validation Failed: body is too long (maximum is 65536 characters)"}),
                );
            }
            let Some(i) = s.comments.iter().position(|c| c.id == id) else {
                return not_found();
            };
            s.comments[i].body = text;
            let c = s.comments[i].clone();
            let out = comment_json(&s, &c);
            reply(200, out)
        }
        ("DELETE", ["issues", "comments", id]) => {
            let Ok(id) = id.parse::<u64>() else {
                return not_found();
            };
            let Some(i) = s.comments.iter().position(|c| c.id == id) else {
                return not_found();
            };
            s.comments.remove(i);
            StatusCode::NO_CONTENT.into_response()
        }
        ("POST", ["statuses", sha]) => {
            let Some(b) = json_body.clone() else {
                return reply(422, json!({"message": "body is missing"}));
            };
            let state_ok = matches!(
                b["state"].as_str(),
                Some("error" | "failure" | "pending" | "success")
            );
            let description_ok = b["description"]
                .as_str()
                .is_none_or(|d| d.chars().count() <= 140);
            if !state_ok || !description_ok {
                return reply(422, json!({"message": "Validation Failed"}));
            }
            s.statuses.push((sha.to_string(), b.clone()));
            reply(
                201,
                json!({"id": 1, "state": b["state"], "context": b["context"]}),
            )
        }
        ("GET", ["issues"]) => {
            let want_state = query_param(&query, "state").unwrap_or_else(|| "open".into());
            let labels = query_param(&query, "labels").unwrap_or_default();
            let page: usize = query_param(&query, "page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let per_page: usize = query_param(&query, "per_page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(30);
            let wanted: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
            let mut out: Vec<Value> = s
                .issues
                .iter()
                .filter(|i| want_state == "all" || i.state == want_state)
                .filter(|i| wanted.iter().all(|w| i.labels.iter().any(|l| l == w)))
                .map(|i| issue_json(&s, i))
                .collect();
            // The issues API lists pull requests too.
            if page == 1 && want_state != "closed" && wanted.is_empty() {
                for n in &s.pulls {
                    out.push(json!({"number": n, "title": "a pull request", "state": "open", "pull_request": {}}));
                }
            }
            let slice: Vec<Value> = out
                .into_iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .collect();
            reply(200, Value::Array(slice))
        }
        ("POST", ["issues"]) => {
            let Some(b) = json_body.clone() else {
                return reply(422, json!({"message": "body is missing"}));
            };
            let number = s
                .pulls
                .iter()
                .chain(s.issues.iter().map(|i| &i.number))
                .max()
                .copied()
                .unwrap_or(0)
                + 1;
            let issue = StoredIssue {
                number,
                title: b["title"].as_str().unwrap_or("").into(),
                body: b["body"].as_str().unwrap_or("").into(),
                labels: b["labels"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|l| l.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                state: "open".into(),
            };
            s.issues.push(issue.clone());
            let out = issue_json(&s, &issue);
            reply(201, out)
        }
        ("PATCH", ["issues", n]) => {
            let Ok(n) = n.parse::<u64>() else {
                return not_found();
            };
            let Some(i) = s.issues.iter().position(|i| i.number == n) else {
                return not_found();
            };
            let b = json_body.clone().unwrap_or(json!({}));
            if let Some(t) = b["title"].as_str() {
                s.issues[i].title = t.into();
            }
            if let Some(t) = b["body"].as_str() {
                s.issues[i].body = t.into();
            }
            if let Some(t) = b["state"].as_str() {
                s.issues[i].state = t.into();
            }
            let issue = s.issues[i].clone();
            let out = issue_json(&s, &issue);
            reply(200, out)
        }
        _ => {
            s.unexpected.push(format!("{method} {full}"));
            not_found()
        }
    }
}
