//! The REST calls Cairn makes to GitHub, over a [`Transport`], with bounded retries and
//! errors that say what is missing.
//!
//! Retried (with backoff, at most [`Retry::attempts`] tries and never a wait longer than
//! [`Retry::max_delay`]): 429, 403 that is a rate limit (`x-ratelimit-remaining: 0` or a
//! "secondary rate limit" message), 500/502/503/504, and connections that fail. A
//! `retry-after` header, or for an exhausted quota `x-ratelimit-reset`, sets the wait;
//! otherwise it doubles from [`Retry::first_delay`]. A wait longer than the maximum is not
//! slept: the call fails at once with [`Error::RateLimited`].
//!
//! Not retried: 401 ([`Error::Unauthorized`]), other 403s ([`Error::Forbidden`], naming
//! the permission the call needs, e.g. `pull-requests: write`), 404 ([`Error::NotFound`],
//! naming what was looked for), and any other answer ([`Error::Rejected`]).
//!
//! The token lives in the transport only. Messages GitHub sends back are shortened and
//! have the token (when known through [`GitHub::redacting`]) removed before they go into
//! an error.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Repo;

/// An HTTP method Cairn uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// One request: a method, a path (with query) relative to the API base, a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    pub method: Method,
    /// `/repos/acme/infra/issues/12/comments?per_page=100&page=1`.
    pub path: String,
    pub body: Option<Value>,
}

/// What came back.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// Returns a header's value (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A request that got no answer (connection refused, timeout, TLS).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// Sends requests to GitHub. [`OctocrabTransport`] in production; tests may substitute
/// their own.
#[async_trait]
pub trait Transport: Send + Sync {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError>;
}

/// How hard to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Tries per call, the first included.
    pub attempts: u32,
    /// The first wait; it doubles on each retry unless GitHub says how long to wait.
    pub first_delay: Duration,
    /// No single wait is longer; a rate limit that resets later fails at once.
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            attempts: 4,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Errors talking to GitHub. Every variant names what Cairn was doing (`action`); none
/// carries the token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{0}` is not a GitHub API URL")]
    BadApiUrl(String),
    #[error("the GitHub client could not be set up: {0}")]
    Setup(String),
    #[error(
        "the token holds characters no GitHub token has (spaces, control characters or non-ASCII)"
    )]
    BadToken,
    #[error("GitHub rejected the token (401 Unauthorized) while {action}")]
    Unauthorized { action: String },
    #[error("the token lacks `{permission}` on {repo} (403 Forbidden while {action}: {message})")]
    Forbidden {
        action: String,
        repo: String,
        permission: String,
        message: String,
    },
    #[error("{what} was not found (404 Not Found while {action})")]
    NotFound {
        action: String,
        what: String,
        repo: String,
    },
    #[error("GitHub's rate limit stopped {action} after {attempts} attempt(s){}", .wait_secs.map(|s| format!("; it resets in {s}s")).unwrap_or_default())]
    RateLimited {
        action: String,
        attempts: u32,
        wait_secs: Option<u64>,
    },
    #[error("GitHub answered {status} while {action}, {attempts} time(s)")]
    Server {
        action: String,
        status: u16,
        attempts: u32,
    },
    #[error("GitHub at {api} could not be reached while {action} ({attempts} attempt(s))")]
    Unreachable {
        action: String,
        api: String,
        attempts: u32,
        #[source]
        source: TransportError,
    },
    #[error("GitHub refused {action} ({status}: {message})")]
    Rejected {
        action: String,
        status: u16,
        message: String,
    },
    #[error("GitHub's answer to {action} could not be read")]
    Decode {
        action: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Returns a hint for the user: what to grant, check or wait for.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Unauthorized { .. } => Some(
                "the token is missing, malformed, expired or revoked; give Cairn a valid token"
                    .into(),
            ),
            Error::Forbidden {
                permission, repo, ..
            } => Some(format!(
                "grant the token `{permission}` on {repo}; in a workflow add `permissions: {{ {permission} }}` to the job"
            )),
            Error::NotFound { what, repo, .. } => Some(format!(
                "check that {what} exists and that the token can see {repo} (GitHub answers 404, not 403, to a token without access to a private repository)"
            )),
            Error::RateLimited { .. } => {
                Some("wait for the rate limit to reset, then run again".into())
            }
            Error::Server { .. } | Error::Unreachable { .. } => Some(
                "GitHub or the network had a problem; run again later (the comment is updated in place)".into(),
            ),
            Error::BadApiUrl(_) => {
                Some("give the API's base URL, e.g. https://api.github.com".into())
            }
            _ => None,
        }
    }
}

/// The production transport: octocrab (hyper, rustls with ring), with a personal or
/// Actions token.
pub struct OctocrabTransport {
    client: octocrab::Octocrab,
}

impl OctocrabTransport {
    /// Builds a client for the API at `api` (`https://api.github.com`, or a GitHub
    /// Enterprise Server's `https://host/api/v3`) that sends `token`. Call it inside a
    /// Tokio runtime (`Runtime::enter`): the client runs a task on it.
    pub fn new(api: &str, token: &str) -> Result<OctocrabTransport> {
        // octocrab panics on a token that is not a valid header value.
        let token = token.trim();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::BadToken);
        }
        let api_uri: http::Uri = api
            .trim_end_matches('/')
            .parse()
            .map_err(|_| Error::BadApiUrl(api.to_string()))?;
        if api_uri.scheme().is_none() || api_uri.authority().is_none() {
            return Err(Error::BadApiUrl(api.to_string()));
        }
        // octocrab starts a worker task on the current Tokio runtime.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Setup(
                "the GitHub client must be set up inside a Tokio runtime".into(),
            ));
        }
        let client = octocrab::Octocrab::builder()
            .base_uri(api_uri)
            .map_err(|_| Error::BadApiUrl(api.to_string()))?
            .personal_token(token.to_string())
            .add_header(
                http::header::ACCEPT,
                "application/vnd.github+json".to_string(),
            )
            .add_header(
                http::HeaderName::from_static("x-github-api-version"),
                "2022-11-28".to_string(),
            )
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(60)))
            .build()
            // octocrab's errors describe the setup (TLS roots, URI), never the token.
            .map_err(|e| Error::Setup(e.to_string()))?;
        Ok(OctocrabTransport { client })
    }
}

#[async_trait]
impl Transport for OctocrabTransport {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        let path = request.path.as_str();
        let body = request.body.as_ref();
        let sent = match request.method {
            Method::Get => self.client._get(path).await,
            Method::Post => self.client._post(path, body).await,
            Method::Patch => self.client._patch(path, body).await,
            Method::Delete => self.client._delete(path, body).await,
        };
        let response = sent.map_err(|e| TransportError(describe_octocrab(&e)))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = self
            .client
            .body_to_string(response)
            .await
            .map_err(|e| TransportError(describe_octocrab(&e)))?;
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// An octocrab error with its causes, on one line.
fn describe_octocrab(error: &octocrab::Error) -> String {
    crate::diagnostics::error_chain(error)
}

/// A comment on an issue or pull request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Comment {
    pub id: u64,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub html_url: String,
}

impl Comment {
    pub fn body(&self) -> &str {
        self.body.as_deref().unwrap_or("")
    }
}

/// An issue, as far as Cairn reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Issue {
    pub number: u64,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub html_url: String,
    #[serde(default)]
    pub state: String,
    /// Present when the "issue" is a pull request (the issues API lists both).
    #[serde(default)]
    pub pull_request: Option<Value>,
}

impl Issue {
    pub fn body(&self) -> &str {
        self.body.as_deref().unwrap_or("")
    }
}

/// A commit status state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

impl StatusState {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failure",
            StatusState::Error => "error",
        }
    }
}

/// GitHub limits a commit status description to 140 characters.
pub const STATUS_DESCRIPTION_MAX: usize = 140;

/// What a call is for, for messages: "updating the plan comment", the permission it
/// needs, and what a 404 means.
struct Op<'a> {
    action: &'a str,
    permission: &'a str,
    what: String,
}

/// Issues to list per page (GitHub's maximum), and pages at most.
const PER_PAGE: usize = 100;
const MAX_PAGES: usize = 50;

/// The GitHub REST API, as Cairn uses it.
pub struct GitHub {
    transport: Box<dyn Transport>,
    api: String,
    retry: Retry,
    secrets: Vec<String>,
}

impl GitHub {
    /// A client for the API at `api` (used in messages) over `transport`.
    pub fn new(transport: Box<dyn Transport>, api: impl Into<String>) -> GitHub {
        GitHub {
            transport,
            api: api.into(),
            retry: Retry::default(),
            secrets: Vec::new(),
        }
    }

    /// A client for `api` with `token`, through octocrab.
    pub fn connect(api: &str, token: &str) -> Result<GitHub> {
        let token = token.trim();
        let transport = OctocrabTransport::new(api, token)?;
        Ok(GitHub::new(Box::new(transport), api.trim_end_matches('/')).redacting(token))
    }

    pub fn with_retry(mut self, retry: Retry) -> GitHub {
        self.retry = retry;
        self
    }

    /// Removes `secret` from every message GitHub sends back before it goes into an
    /// error (defence in depth: GitHub does not echo tokens).
    pub fn redacting(mut self, secret: &str) -> GitHub {
        if !secret.is_empty() {
            self.secrets.push(secret.to_string());
        }
        self
    }

    fn clean(&self, text: &str) -> String {
        let mut out: String = text.chars().take(300).collect();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "[redacted]");
        }
        out
    }

    /// GitHub's `message`, or the start of the body.
    fn message(&self, response: &HttpResponse) -> String {
        let from_json = serde_json::from_str::<Value>(&response.body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string));
        let text = from_json.unwrap_or_else(|| response.body.trim().to_string());
        if text.is_empty() {
            "no message".into()
        } else {
            self.clean(&text)
        }
    }

    fn is_rate_limit(&self, response: &HttpResponse) -> bool {
        response.status == 429
            || (response.status == 403
                && (response.header("x-ratelimit-remaining") == Some("0")
                    || response.header("retry-after").is_some()
                    || response.body.to_ascii_lowercase().contains("rate limit")))
    }

    /// How long GitHub asks to wait, if it says.
    fn asked_wait(response: &HttpResponse) -> Option<Duration> {
        if let Some(secs) = response
            .header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_secs(secs));
        }
        if response.header("x-ratelimit-remaining") == Some("0") {
            let reset = response
                .header("x-ratelimit-reset")
                .and_then(|v| v.trim().parse::<u64>().ok())?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs();
            return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
        }
        None
    }

    /// Sends `request`, retrying what is worth retrying; returns a 2xx answer.
    async fn call(&self, op: &Op<'_>, request: HttpRequest, repo: &Repo) -> Result<HttpResponse> {
        let mut backoff = self.retry.first_delay;
        let attempts = self.retry.attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self.transport.send(&request).await;
            let (wait, failure) = match outcome {
                Ok(response) if (200..300).contains(&response.status) => return Ok(response),
                Ok(response) if self.is_rate_limit(&response) => {
                    let asked = Self::asked_wait(&response);
                    let failure = Error::RateLimited {
                        action: op.action.to_string(),
                        attempts: attempt,
                        wait_secs: asked.map(|d| d.as_secs()),
                    };
                    (asked.unwrap_or(backoff), failure)
                }
                Ok(response) if matches!(response.status, 500 | 502 | 503 | 504) => (
                    Self::asked_wait(&response).unwrap_or(backoff),
                    Error::Server {
                        action: op.action.to_string(),
                        status: response.status,
                        attempts: attempt,
                    },
                ),
                Ok(response) => return Err(self.refused(op, &response, repo)),
                Err(source) => (
                    backoff,
                    Error::Unreachable {
                        action: op.action.to_string(),
                        api: self.api.clone(),
                        attempts: attempt,
                        source: TransportError(self.clean(&source.0)),
                    },
                ),
            };
            if attempt >= attempts || wait > self.retry.max_delay {
                return Err(failure);
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.retry.max_delay);
        }
    }

    /// The error for an answer that is not retried.
    fn refused(&self, op: &Op<'_>, response: &HttpResponse, repo: &Repo) -> Error {
        let action = op.action.to_string();
        match response.status {
            401 => Error::Unauthorized { action },
            403 => Error::Forbidden {
                action,
                repo: repo.to_string(),
                permission: op.permission.to_string(),
                message: self.message(response),
            },
            404 => Error::NotFound {
                action,
                what: op.what.clone(),
                repo: repo.to_string(),
            },
            status => Error::Rejected {
                action,
                status,
                message: self.message(response),
            },
        }
    }

    fn decode<T: for<'de> Deserialize<'de>>(op: &Op<'_>, response: &HttpResponse) -> Result<T> {
        serde_json::from_str(&response.body).map_err(|source| Error::Decode {
            action: op.action.to_string(),
            source,
        })
    }

    /// Lists every comment on an issue or pull request, oldest first.
    pub async fn list_comments(&self, repo: &Repo, number: u64) -> Result<Vec<Comment>> {
        let op = Op {
            action: "listing the pull request's comments",
            permission: "pull-requests: read",
            what: format!("pull request #{number} in {repo}"),
        };
        self.pages(&op, repo, |page| {
            format!(
                "/repos/{}/{}/issues/{number}/comments?per_page={PER_PAGE}&page={page}",
                repo.owner, repo.name
            )
        })
        .await
    }

    /// GETs `path(page)` for pages 1, 2, … until one comes back short (at most
    /// [`MAX_PAGES`]), and returns every item in order.
    async fn pages<T: for<'de> Deserialize<'de>>(
        &self,
        op: &Op<'_>,
        repo: &Repo,
        path: impl Fn(usize) -> String,
    ) -> Result<Vec<T>> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let request = HttpRequest {
                method: Method::Get,
                path: path(page),
                body: None,
            };
            let response = self.call(op, request, repo).await?;
            let items: Vec<T> = Self::decode(op, &response)?;
            let n = items.len();
            all.extend(items);
            if n < PER_PAGE {
                break;
            }
        }
        Ok(all)
    }

    /// Adds a comment to an issue or pull request.
    pub async fn create_comment(&self, repo: &Repo, number: u64, body: &str) -> Result<Comment> {
        let op = Op {
            action: "adding the comment",
            permission: "pull-requests: write",
            what: format!("pull request or issue #{number} in {repo}"),
        };
        let request = HttpRequest {
            method: Method::Post,
            path: format!(
                "/repos/{}/{}/issues/{number}/comments",
                repo.owner, repo.name
            ),
            body: Some(json!({ "body": body })),
        };
        let response = self.call(&op, request, repo).await?;
        Self::decode(&op, &response)
    }

    /// Replaces a comment's body.
    pub async fn update_comment(&self, repo: &Repo, id: u64, body: &str) -> Result<Comment> {
        let op = Op {
            action: "updating the comment",
            permission: "pull-requests: write",
            what: format!("comment {id} in {repo}"),
        };
        let request = HttpRequest {
            method: Method::Patch,
            path: format!("/repos/{}/{}/issues/comments/{id}", repo.owner, repo.name),
            body: Some(json!({ "body": body })),
        };
        let response = self.call(&op, request, repo).await?;
        Self::decode(&op, &response)
    }

    /// Deletes a comment.
    pub async fn delete_comment(&self, repo: &Repo, id: u64) -> Result<()> {
        let op = Op {
            action: "deleting an outdated part of the comment",
            permission: "pull-requests: write",
            what: format!("comment {id} in {repo}"),
        };
        let request = HttpRequest {
            method: Method::Delete,
            path: format!("/repos/{}/{}/issues/comments/{id}", repo.owner, repo.name),
            body: None,
        };
        self.call(&op, request, repo).await.map(|_| ())
    }

    /// Sets a commit status; `description` is cut to 140 characters.
    pub async fn create_status(
        &self,
        repo: &Repo,
        sha: &str,
        state: StatusState,
        context: &str,
        description: &str,
        target_url: Option<&str>,
    ) -> Result<()> {
        let op = Op {
            action: "setting the commit status",
            permission: "statuses: write",
            what: format!("commit {sha} in {repo}"),
        };
        let mut body = json!({
            "state": state.as_str(),
            "context": context,
            "description": truncate_chars(description, STATUS_DESCRIPTION_MAX),
        });
        if let Some(url) = target_url.filter(|u| !u.is_empty()) {
            body["target_url"] = json!(url);
        }
        let request = HttpRequest {
            method: Method::Post,
            path: format!("/repos/{}/{}/statuses/{sha}", repo.owner, repo.name),
            body: Some(body),
        };
        self.call(&op, request, repo).await.map(|_| ())
    }

    /// Lists the open issues carrying `label` (pull requests left out), oldest first.
    pub async fn open_issues(&self, repo: &Repo, label: &str) -> Result<Vec<Issue>> {
        let op = Op {
            action: "listing open issues",
            permission: "issues: read",
            what: format!("the issues of {repo}"),
        };
        let issues: Vec<Issue> = self
            .pages(&op, repo, |page| {
                format!(
                    "/repos/{}/{}/issues?state=open&labels={}&sort=created&direction=asc&per_page={PER_PAGE}&page={page}",
                    repo.owner,
                    repo.name,
                    query_escape(label)
                )
            })
            .await?;
        Ok(issues
            .into_iter()
            .filter(|i| i.pull_request.is_none())
            .collect())
    }

    /// Opens an issue.
    pub async fn create_issue(
        &self,
        repo: &Repo,
        title: &str,
        body: &str,
        labels: &[&str],
    ) -> Result<Issue> {
        let op = Op {
            action: "opening the drift issue",
            permission: "issues: write",
            what: format!("the issues of {repo}"),
        };
        let request = HttpRequest {
            method: Method::Post,
            path: format!("/repos/{}/{}/issues", repo.owner, repo.name),
            body: Some(json!({ "title": title, "body": body, "labels": labels })),
        };
        let response = self.call(&op, request, repo).await?;
        Self::decode(&op, &response)
    }

    /// Changes an issue's title, body or state (`open`, `closed`).
    pub async fn update_issue(
        &self,
        repo: &Repo,
        number: u64,
        title: Option<&str>,
        body: Option<&str>,
        state: Option<&str>,
    ) -> Result<Issue> {
        let op = Op {
            action: if state == Some("closed") {
                "closing the drift issue"
            } else {
                "updating the drift issue"
            },
            permission: "issues: write",
            what: format!("issue #{number} in {repo}"),
        };
        let mut patch = serde_json::Map::new();
        if let Some(t) = title {
            patch.insert("title".into(), json!(t));
        }
        if let Some(b) = body {
            patch.insert("body".into(), json!(b));
        }
        if let Some(s) = state {
            patch.insert("state".into(), json!(s));
            if s == "closed" {
                patch.insert("state_reason".into(), json!("completed"));
            }
        }
        let request = HttpRequest {
            method: Method::Patch,
            path: format!("/repos/{}/{}/issues/{number}", repo.owner, repo.name),
            body: Some(Value::Object(patch)),
        };
        let response = self.call(&op, request, repo).await?;
        Self::decode(&op, &response)
    }
}

/// Cuts `text` to at most `max` characters, ending with `…` when cut.
pub fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Percent-encodes a query value (labels are short words; anything unusual is encoded).
fn query_escape(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// Answers from a script and records what was asked; fails on calls it has no
    /// answer for.
    #[derive(Clone, Default)]
    struct Scripted {
        answers: Arc<Mutex<VecDeque<Result<HttpResponse, TransportError>>>>,
        seen: Arc<Mutex<Vec<HttpRequest>>>,
    }

    #[async_trait]
    impl Transport for Scripted {
        async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
            self.seen.lock().unwrap().push(request.clone());
            self.answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| panic!("unexpected request {request:?}"))
        }
    }

    fn answer(
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<HttpResponse, TransportError> {
        Ok(HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_string(),
        })
    }

    fn client(answers: Vec<Result<HttpResponse, TransportError>>) -> (GitHub, Scripted) {
        let t = Scripted::default();
        t.answers.lock().unwrap().extend(answers);
        let gh = GitHub::new(Box::new(t.clone()), "http://github.test")
            .with_retry(Retry {
                attempts: 3,
                first_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(50),
            })
            .redacting("ghp_SECRET");
        (gh, t)
    }

    fn repo() -> Repo {
        Repo::parse("acme/infra").unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn server_errors_and_rate_limits_are_retried() {
        let (gh, t) = client(vec![
            answer(502, &[], "bad gateway"),
            answer(429, &[("retry-after", "0")], ""),
            answer(201, &[], r#"{"id": 7, "body": "hi", "html_url": "u"}"#),
        ]);
        let c = rt().block_on(gh.create_comment(&repo(), 3, "hi")).unwrap();
        assert_eq!(c.id, 7);
        let seen = t.seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen
            .iter()
            .all(|r| r.path == "/repos/acme/infra/issues/3/comments"));
        assert_eq!(seen[0].body, Some(json!({"body": "hi"})));
    }

    #[test]
    fn retries_are_bounded() {
        let (gh, t) = client(vec![
            answer(503, &[], ""),
            answer(503, &[], ""),
            answer(503, &[], ""),
        ]);
        let err = rt().block_on(gh.delete_comment(&repo(), 9)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Server {
                    status: 503,
                    attempts: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(t.seen.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_rate_limit_resetting_later_than_the_maximum_wait_fails_at_once() {
        let (gh, t) = client(vec![answer(
            403,
            &[("x-ratelimit-remaining", "0"), ("retry-after", "3600")],
            r#"{"message": "API rate limit exceeded"}"#,
        )]);
        let err = rt().block_on(gh.list_comments(&repo(), 3)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::RateLimited {
                    attempts: 1,
                    wait_secs: Some(3600),
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(t.seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn refusals_name_what_is_missing_without_the_token() {
        let (gh, _) = client(vec![answer(
            403,
            &[],
            r#"{"message": "Resource not accessible by integration ghp_SECRET"}"#,
        )]);
        let err = rt()
            .block_on(gh.create_status(
                &repo(),
                "abc",
                StatusState::Success,
                "cairn/plan",
                "ok",
                None,
            ))
            .unwrap_err();
        let text = format!("{err} {}", err.hint().unwrap());
        assert!(
            text.contains("lacks `statuses: write` on acme/infra"),
            "{text}"
        );
        assert!(!text.contains("ghp_SECRET"), "{text}");

        let (gh, _) = client(vec![answer(404, &[], r#"{"message": "Not Found"}"#)]);
        let err = rt().block_on(gh.list_comments(&repo(), 12)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pull request #12 in acme/infra was not found (404 Not Found while listing the pull request's comments)"
        );

        let (gh, _) = client(vec![answer(401, &[], r#"{"message": "Bad credentials"}"#)]);
        let err = rt().block_on(gh.list_comments(&repo(), 12)).unwrap_err();
        assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    }

    #[test]
    fn comments_are_listed_page_by_page() {
        let page: Vec<Value> = (0..100).map(|i| json!({"id": i, "body": "x"})).collect();
        let (gh, t) = client(vec![
            answer(200, &[], &Value::Array(page).to_string()),
            answer(200, &[], r#"[{"id": 100, "body": null}]"#),
        ]);
        let all = rt().block_on(gh.list_comments(&repo(), 4)).unwrap();
        assert_eq!(all.len(), 101);
        assert_eq!(all[100].body(), "");
        let seen = t.seen.lock().unwrap();
        assert!(
            seen[1].path.ends_with("per_page=100&page=2"),
            "{:?}",
            seen[1]
        );
    }

    #[test]
    fn bad_setups_are_errors_not_panics() {
        assert!(matches!(
            GitHub::connect("http://127.0.0.1:1", "ghp_x"),
            Err(Error::Setup(_))
        ));
        let rt = rt();
        let _inside = rt.enter();
        for token in ["", "ghp_a b", "ghp_\u{e9}", "ghp_\n1"] {
            assert!(
                matches!(
                    GitHub::connect("http://127.0.0.1:1", token),
                    Err(Error::BadToken)
                ),
                "{token:?}"
            );
        }
        for api in ["not a url", "/relative", "127.0.0.1:1"] {
            assert!(
                matches!(GitHub::connect(api, "ghp_x"), Err(Error::BadApiUrl(_))),
                "{api}"
            );
        }
    }

    #[test]
    fn status_descriptions_fit() {
        let long = "x".repeat(300);
        let cut = truncate_chars(&long, STATUS_DESCRIPTION_MAX);
        assert_eq!(cut.chars().count(), 140);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_chars("short", 140), "short");
        assert_eq!(query_escape("drift ok"), "drift%20ok");
    }
}
