//! The S3 store (`s3://bucket/prefix`): objects are keys under the prefix of one bucket,
//! on AWS S3 or any S3-compatible server (MinIO, Ceph, Garage, s3s, …).
//!
//! What it owns: turning the [`ObjectStore`] operations into S3 requests, and S3's
//! answers into the store's typed [`Error`]s. What it must not do: know the layout
//! (that is [`super::Store`]'s), or let a credential reach a message.
//!
//! Flow and guarantees:
//! - The client is built lazily on the first request, so opening a store is cheap and
//!   synchronous. The region, credentials and SDK settings the workspace leaves open come
//!   from the caller's [`AwsChain`] (the CLI's is the standard AWS chain: environment,
//!   profile, web identity, container, and instance metadata only on an EC2 instance or
//!   with `AWS_EC2_METADATA_DISABLED=false`); the library itself reads no environment
//!   and no `~/.aws`. Without a chain, only the workspace's options and
//!   [`S3Store::with_credentials`] count. A chain that finds no credentials is
//!   [`Error::NoCredentials`] (the server was not asked), not a refusal. A workspace's
//!   `endpoint`, `region` and `path_style` override the chain; with an endpoint (the
//!   workspace's, or the chain's: `AWS_ENDPOINT_URL`) and no `path_style`, path-style
//!   addressing is used (what self-hosted servers expect). No region anywhere means
//!   [`FALLBACK_REGION`].
//! - `IfAbsent` is `If-None-Match: *`, `IfMatch` is `If-Match`; 412, and 409
//!   `ConditionalRequestConflict` (a concurrent conditional write), are
//!   [`Error::PreconditionFailed`]. So the lock and the state are only as safe as the
//!   server's conditional writes are atomic. AWS S3 and MinIO's are; s3s-fs 0.14's are
//!   not (it checks, then writes: concurrent creators can all win), which is why the
//!   tests put a serializing front before it (`tests/support/s3_server.rs`). Don't keep
//!   a shared store on a server like that.
//! - Large files go up as multipart uploads of [`PART_SIZE`] parts, read in order, at
//!   most [`PARTS_IN_FLIGHT`] on their way and one being read per file, so memory stays
//!   bounded (40 MiB per file). A multipart object becomes visible only when the upload
//!   completes; a failed upload is aborted (best effort: a bucket lifecycle rule for
//!   incomplete uploads removes what an abort could not). `get_file` writes a temporary
//!   file beside the target and renames it into place.
//! - `put_file_checked` stores a file only if it still has the SHA-256 the caller knows.
//!   A single `PUT` is signed with that hash as its payload hash (`x-amz-content-sha256`)
//!   instead of the SDK hashing the body again, and the server checks the body against
//!   it; a multipart upload hashes the parts as it reads them and is completed only if
//!   the whole matches (each part is still signed with its own hash).
//! - Requests are retried with jittered exponential backoff on throttling, 5xx answers,
//!   timeouts and connection errors (the SDK's standard retry mode), so a server that
//!   restarts mid-upload is ridden out if it comes back within the retries.
//! - Errors name the bucket and endpoint and say what to check. They are made of the
//!   server's error code and message only, never of the SDK's error values (which
//!   carry requests), and every message is scrubbed of the secret key and session
//!   token in use, in case a server echoes one.
//!
//! Caveats:
//! - S3 etags are content hashes: rewriting the same bytes keeps the etag. Every record
//!   compared by etag (lock, state) changes on each write (heartbeat, serial), so a
//!   compare-and-swap never sees an A-B-A.
//! - Conditional delete (`If-Match` on `DELETE`) is recent in S3 and missing from some
//!   servers, which then delete regardless. The store probes for it once (a conditional
//!   delete of a key that does not exist: a server that checks answers 404 or 412) and,
//!   where it is missing, emulates it by comparing the etag with `HEAD` first. The
//!   emulation leaves a window of one round trip in which a write landing between the
//!   `HEAD` and the `DELETE` is deleted; for the lock this needs a lease that already
//!   ran out, taken over within that round trip.
//! - Listings that omit etags (some servers do) are completed with one `HEAD` per key.
//! - The first request of a store looks the bucket up (`HEAD` of the bucket, which needs
//!   the `s3:ListBucket` permission listing needs anyway), so a missing bucket, a bucket
//!   in another region or an unreachable endpoint is reported as such by any operation
//!   (S3-compatible servers differ in what they answer to a `GET` or `PUT` there).
//! - A conditional write whose answer is lost (a timeout, a dropped connection) may
//!   have landed; its retry then fails its condition. The store retries conditional
//!   writes itself and, when a retry fails its condition after such a loss, reads the
//!   object back: if it holds exactly the bytes written, the write is taken as done.
//!   Records written conditionally (lock, state, journal) are unique, so no one else's
//!   write can hold the same bytes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_credential_types::provider::{error::CredentialsError, future, ProvideCredentials};
use aws_runtime::auth::PayloadSigningOverride;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider, SharedHttpClient,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

use super::object::{check_key, Condition, ObjectMeta, ObjectStore};
use super::{Error, Result, StoreOptions};

/// The size of one part of a multipart upload (S3 allows 5 MiB to 5 GiB). Files up to
/// this size go up in one `PUT`.
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
/// How many parts of one file are read and uploaded at the same time.
pub const PARTS_IN_FLIGHT: usize = 4;
/// S3's limit on the number of parts of an upload; bigger files get bigger parts.
const MAX_PARTS: u64 = 10_000;
/// Attempts per request, the first included (the SDK's default is 3).
const MAX_ATTEMPTS: u32 = 6;
/// Attempts to read a whole object whose body broke off after the answer began (the SDK
/// retries a request, not a body).
const BODY_ATTEMPTS: u32 = 3;

/// The region used when neither the workspace nor the AWS chain names one. S3-compatible
/// servers accept it; AWS redirects to the bucket's region with a clear error.
pub const FALLBACK_REGION: &str = "us-east-1";

/// One HTTPS client (rustls with ring, hyper 1) for the whole process: its connection
/// pools and loaded root certificates are shared by every store.
static HTTP_CLIENT: LazyLock<SharedHttpClient> = LazyLock::new(|| {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
});

/// Where an S3 store gets what its workspace leaves open: the region, the credentials,
/// and the AWS SDK's settings (`AWS_ENDPOINT_URL`, a profile's `endpoint_url`, …). A
/// store asks once, when it connects (on its first request).
///
/// The library has no implementation of its own, so that it reads no environment and no
/// `~/.aws`: the CLI's resolves the standard AWS chain (`cli/aws.rs`) and comes in
/// through [`StoreOptions::aws`].
#[async_trait]
pub trait AwsChain: fmt::Debug + Send + Sync {
    /// Resolves the configuration to connect with. `region` is the workspace's, when it
    /// names one: it wins over the chain's, and the chain's credential providers use it.
    /// `http` is the store's HTTPS client, for the providers that send requests
    /// (instance metadata, STS, the container endpoint).
    async fn load(&self, region: Option<&str>, http: SharedHttpClient) -> SdkConfig;
}

/// The credentials of a store that has neither explicit ones nor an [`AwsChain`]: none,
/// which the first request reports as [`Error::NoCredentials`].
#[derive(Debug)]
struct NoChain;

impl ProvideCredentials for NoChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
            "no AWS credential chain was given, and no explicit credentials",
        )))
    }
}

/// Explicit credentials, for callers that do not want the AWS chain (tests, tools).
#[derive(Clone)]
struct StaticCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

/// Signs a request with a payload SHA-256 the caller already has, instead of the SDK
/// hashing the body again. The signature covers it (`x-amz-content-sha256`), and the
/// server checks the body it receives against it, as it would the SDK's own hash.
#[derive(Debug)]
struct KnownPayloadSha256(String);

impl Intercept for KnownPayloadSha256 {
    fn name(&self) -> &'static str {
        "KnownPayloadSha256"
    }

    fn modify_before_signing(
        &self,
        _context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(PayloadSigningOverride::Precomputed(self.0.clone()));
        Ok(())
    }
}

/// What the lazily built client needs to know; what it learned once built.
struct Connection {
    client: Client,
    /// The same client without the SDK's retries, for conditional writes and deletes:
    /// `put` and `delete` retry those themselves, knowing when an attempt may have
    /// landed (see the module's caveats).
    once: Client,
    /// The region the requests are signed for.
    region: String,
    /// Values to scrub from every message: the secret key and session token in use.
    secrets: Vec<String>,
    /// The access key in use (an identifier, not a secret), for messages.
    access_key_id: Option<String>,
    /// The endpoint the AWS configuration names, when the workspace names none.
    configured_endpoint: Option<String>,
}

/// An S3 bucket and prefix as an [`ObjectStore`].
pub struct S3Store {
    bucket: String,
    /// Empty, or `a/b/`: always ends with `/` when not empty.
    prefix: String,
    options: StoreOptions,
    credentials: Option<StaticCredentials>,
    connection: OnceCell<Connection>,
    /// Set once the bucket was found (see [`S3Store::check_bucket`]).
    bucket_found: OnceCell<()>,
    /// Whether the server checks `If-Match` on `DELETE`; probed once.
    conditional_delete: OnceCell<bool>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand: the client's configuration is no one's business in a message.
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field(
                "endpoint",
                &self.options.endpoint.as_deref().map(strip_userinfo),
            )
            .field("region", &self.options.region)
            .field("path_style", &self.options.path_style)
            .field("explicit_credentials", &self.credentials.is_some())
            .finish()
    }
}

impl S3Store {
    /// Makes a store for `s3://bucket/prefix` with a workspace's options. Sends nothing:
    /// the client is built, and credentials resolved, on the first request.
    pub fn new(url: &str, options: &StoreOptions) -> Result<S3Store> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("an S3 store URL starts with `s3://`"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !valid_bucket(bucket) {
            return Err(invalid(
                "the bucket name must be 3 to 63 lowercase letters, digits, `.` or `-`",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() && !check_key(prefix) {
            return Err(invalid(
                "the prefix must be `/`-separated names, without empty, `.` or `..` parts",
            ));
        }
        if let Some(endpoint) = &options.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(Error::InvalidUrl {
                    url: endpoint.clone(),
                    reason: "the endpoint must be an `http://` or `https://` URL".into(),
                });
            }
        }
        Ok(S3Store {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            options: options.clone(),
            credentials: None,
            connection: OnceCell::new(),
            bucket_found: OnceCell::new(),
            conditional_delete: OnceCell::new(),
        })
    }

    /// Uses these credentials instead of the AWS chain.
    pub fn with_credentials(
        mut self,
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<&str>,
    ) -> S3Store {
        self.credentials = Some(StaticCredentials {
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            session_token: session_token.map(str::to_string),
        });
        self
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The prefix keys live under: empty, or ending with `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where requests go, for messages: the workspace's endpoint (without any user
    /// information in it) or AWS S3 in the region in use.
    fn endpoint_label(&self) -> String {
        match &self.options.endpoint {
            Some(e) => strip_userinfo(e),
            None => match (self.connection.get(), &self.options.region) {
                (Some(c), _) => match &c.configured_endpoint {
                    Some(e) => strip_userinfo(e),
                    None => format!("AWS S3 in {}", c.region),
                },
                (None, Some(region)) => format!("AWS S3 in {region}"),
                (None, None) => "AWS S3".to_string(),
            },
        }
    }

    /// The client, built on first use, once the bucket is known to be there.
    async fn connection(&self) -> Result<&Connection> {
        let c = self.connection.get_or_try_init(|| self.connect()).await?;
        self.bucket_found
            .get_or_try_init(|| self.check_bucket(c))
            .await?;
        Ok(c)
    }

    async fn connect(&self) -> Result<Connection> {
        let sdk = match &self.options.aws {
            Some(chain) => {
                chain
                    .load(self.options.region.as_deref(), HTTP_CLIENT.clone())
                    .await
            }
            None => SdkConfig::builder()
                .behavior_version(BehaviorVersion::latest())
                .build(),
        };
        let region = match &self.options.region {
            Some(region) => region.clone(),
            None => sdk
                .region()
                .map_or(FALLBACK_REGION.to_string(), |r| r.to_string()),
        };
        let credentials = match &self.credentials {
            Some(c) => SharedCredentialsProvider::new(Credentials::new(
                &c.access_key_id,
                &c.secret_access_key,
                c.session_token.clone(),
                None,
                "cairn",
            )),
            None => sdk
                .credentials_provider()
                .unwrap_or_else(|| SharedCredentialsProvider::new(NoChain)),
        };

        // Learn the secret in use, only to keep it out of messages. A chain that finds
        // nothing is not an error yet: the first request says so, with a hint.
        let mut secrets = Vec::new();
        let mut access_key_id = None;
        if let Ok(creds) = credentials.provide_credentials().await {
            access_key_id = Some(creds.access_key_id().to_string());
            secrets.push(creds.secret_access_key().to_string());
            if let Some(token) = creds.session_token() {
                secrets.push(token.to_string());
            }
        }
        secrets.retain(|s| s.len() >= 4);

        let mut config = aws_sdk_s3::config::Builder::from(&sdk)
            // Every provider of the chain (IMDS, STS) was handed this client too; built on
            // its own, one would look for the default client, which is left out.
            .http_client(HTTP_CLIENT.clone())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(8)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .read_timeout(Duration::from_secs(60))
                    .build(),
            )
            .region(Region::new(region.clone()))
            .credentials_provider(credentials)
            // Checksums only where S3 requires them: many S3-compatible servers reject
            // the streaming checksum trailers the SDK sends by default now.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // An endpoint of the workspace's, or of the AWS configuration
            // (`AWS_ENDPOINT_URL`, a profile's `endpoint_url`), is a self-hosted server.
            .force_path_style(
                self.options
                    .path_style
                    .unwrap_or(self.options.endpoint.is_some() || sdk.endpoint_url().is_some()),
            );
        if let Some(endpoint) = &self.options.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let config = config.build();
        let once = config
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build();
        let connection = Connection {
            client: Client::from_conf(config),
            once: Client::from_conf(once),
            region,
            secrets,
            access_key_id,
            configured_endpoint: sdk.endpoint_url().map(str::to_string),
        };
        Ok(connection)
    }

    /// Looks the bucket up once (`HEAD`, which needs the `s3:ListBucket` permission that
    /// listing needs anyway), so that a missing bucket, a bucket in another region or an
    /// unreachable endpoint is reported as such by the first operation, whatever the
    /// server answers to that operation. Refusals (403) are left to the operations,
    /// whose answers carry an error code.
    async fn check_bucket(&self, c: &Connection) -> Result<()> {
        let Err(e) = c.client.head_bucket().bucket(&self.bucket).send().await else {
            return Ok(());
        };
        let status = e.raw_response().map(|r| r.status().as_u16());
        match (&e, status) {
            (_, Some(404)) => Err(Error::NoSuchBucket {
                bucket: self.bucket.clone(),
                endpoint: self.endpoint_label(),
            }),
            (_, Some(301)) => Err(Error::WrongRegion {
                bucket: self.bucket.clone(),
                region: e
                    .raw_response()
                    .and_then(|r| r.headers().get("x-amz-bucket-region"))
                    .map(str::to_string),
                signed_for: c.region.clone(),
            }),
            (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_), _) => {
                Err(self.error("open", "", e))
            }
            _ => Ok(()),
        }
    }

    fn full_key(&self, key: &str) -> Result<String> {
        if !check_key(key) {
            return Err(Error::InvalidKey(key.to_string()));
        }
        Ok(format!("{}{key}", self.prefix))
    }

    fn precondition(&self, key: &str) -> Error {
        Error::PreconditionFailed {
            key: key.to_string(),
            store: self.url(),
        }
    }

    /// Removes the secrets in use from a message.
    fn scrub(&self, text: String) -> String {
        let Some(connection) = self.connection.get() else {
            return scrub_static(&self.credentials, text);
        };
        let mut text = scrub_static(&self.credentials, text);
        for secret in &connection.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "[redacted]");
            }
        }
        text
    }

    /// Turns an SDK error into the store's error. Takes only the status, code and
    /// message out of it.
    fn error<E>(&self, op: &'static str, key: &str, err: SdkError<E>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        let message = err.message().map(str::to_string);
        match &err {
            SdkError::TimeoutError(_) => {
                return Error::Unreachable {
                    endpoint: self.endpoint_label(),
                    bucket: self.bucket.clone(),
                    reason: "the request timed out".into(),
                }
            }
            SdkError::DispatchFailure(failure) => {
                if no_credentials(&err) {
                    return Error::NoCredentials {
                        store: self.url(),
                        endpoint: self.endpoint_label(),
                    };
                }
                if let Some(reason) = credentials_problem(&err) {
                    return Error::Credentials {
                        store: self.url(),
                        reason: self.scrub(reason),
                    };
                }
                if failure.is_io() || failure.is_timeout() {
                    let reason = failure
                        .as_connector_error()
                        .map(|e| chain(e))
                        .unwrap_or_else(|| "connection failed".into());
                    return Error::Unreachable {
                        endpoint: self.endpoint_label(),
                        bucket: self.bucket.clone(),
                        reason: self.scrub(reason),
                    };
                }
                return Error::S3 {
                    op,
                    key: key.to_string(),
                    store: self.url(),
                    status: None,
                    code: "RequestFailed".into(),
                    message: self.scrub(chain(&err)),
                };
            }
            SdkError::ConstructionFailure(_) => {
                return Error::S3 {
                    op,
                    key: key.to_string(),
                    store: self.url(),
                    status: None,
                    code: "InvalidRequest".into(),
                    message: self.scrub(chain(&err)),
                }
            }
            _ => {}
        }
        let code_str = code.as_deref().unwrap_or("");
        match (status, code_str) {
            (Some(412), _) | (_, "PreconditionFailed") => return self.precondition(key),
            (Some(409), "ConditionalRequestConflict") => return self.precondition(key),
            (_, "NoSuchBucket") => {
                return Error::NoSuchBucket {
                    bucket: self.bucket.clone(),
                    endpoint: self.endpoint_label(),
                }
            }
            (
                _,
                "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "InvalidToken"
                | "TokenRefreshRequired"
                | "InvalidClientTokenId"
                | "MissingSecurityHeader"
                | "NotSignedUp",
            ) => {
                let what = match code_str {
                    "SignatureDoesNotMatch" => {
                        "the signature does not match: the secret key is not this access key's"
                    }
                    "ExpiredToken" | "TokenRefreshRequired" => "the session token has expired",
                    "InvalidToken" => "the session token is not valid",
                    "MissingSecurityHeader" => "the request carried no credentials",
                    _ => "the server does not know this access key",
                };
                let access_key = self
                    .connection
                    .get()
                    .and_then(|c| c.access_key_id.clone())
                    .map_or(String::new(), |id| format!("access key `{id}`; "));
                let said = match message.as_deref() {
                    Some(m) if !m.is_empty() => format!("{code_str}: {m}"),
                    _ => code_str.to_string(),
                };
                return Error::Credentials {
                    store: self.url(),
                    reason: self.scrub(format!("{what} ({access_key}the server said {said})")),
                };
            }
            (_, "AccessDenied" | "AllAccessDisabled") | (Some(403), "") => {
                return Error::AccessDenied {
                    op,
                    key: key.to_string(),
                    bucket: self.bucket.clone(),
                    endpoint: self.endpoint_label(),
                }
            }
            _ => {}
        }
        Error::S3 {
            op,
            key: key.to_string(),
            store: self.url(),
            status,
            code: code.unwrap_or_else(|| match status {
                Some(s) => format!("HTTP {s}"),
                None => "Unknown".into(),
            }),
            message: self.scrub(message.unwrap_or_default()),
        }
    }

    fn io(&self, op: &'static str, key: &str, source: std::io::Error) -> Error {
        Error::Io {
            op,
            key: key.to_string(),
            store: self.url(),
            source,
        }
    }

    fn body_error(&self, op: &'static str, key: &str, e: impl fmt::Display) -> Error {
        Error::Unreachable {
            endpoint: self.endpoint_label(),
            bucket: self.bucket.clone(),
            reason: self.scrub(format!("the answer to {op} `{key}` broke off: {e}")),
        }
    }

    /// Whether the server checks `If-Match` on `DELETE`: a conditional delete of a key
    /// that cannot exist is refused (404 or 412) by a server that checks, and succeeds
    /// on one that ignores the header.
    async fn checks_conditional_delete(&self) -> Result<bool> {
        self.conditional_delete
            .get_or_try_init(|| async {
                let c = self.connection().await?;
                let probe = format!(
                    "{}.cairn/probe-{}",
                    self.prefix,
                    uuid::Uuid::new_v4().simple()
                );
                match c
                    .client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&probe)
                    .if_match("\"cairn-probe\"")
                    .send()
                    .await
                {
                    Ok(_) => Ok(false),
                    Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
                        Some(404 | 412) if e.code() != Some("NoSuchBucket") => Ok(true),
                        _ => Err(self.error("delete", ".cairn/probe", e)),
                    },
                }
            })
            .await
            .copied()
    }

    /// Uploads `file` (of `size` bytes) as a multipart upload. Parts are read in order, so
    /// that with `sha256` the whole file is hashed on the way and the upload is completed
    /// only if the hash matches (aborted otherwise).
    async fn put_multipart(
        &self,
        key: &str,
        full: &str,
        (source, file): (&Path, std::fs::File),
        size: u64,
        sha256: Option<&str>,
    ) -> Result<()> {
        let c = self.connection().await?;
        let part_size = PART_SIZE.max(size.div_ceil(MAX_PARTS).next_multiple_of(1024 * 1024));
        let parts = size.div_ceil(part_size);
        let upload = c
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| self.error("put", key, e))?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| Error::S3 {
                op: "put",
                key: key.to_string(),
                store: self.url(),
                status: None,
                code: "InvalidResponse".into(),
                message: "the server started a multipart upload without an id".into(),
            })?
            .to_string();

        let file = Arc::new(file);
        let hasher = sha256.map(|_| Arc::new(std::sync::Mutex::new(Sha256::new())));
        let uploaded: Result<Vec<CompletedPart>> = futures::stream::iter(1..=parts)
            // One part read at a time, in order (and hashed, when checked), while up to
            // PARTS_IN_FLIGHT earlier parts are on their way.
            .map(|number| {
                let file = file.clone();
                let hasher = hasher.clone();
                async move {
                    let offset = (number - 1) * part_size;
                    let len = part_size.min(size - offset) as usize;
                    let body = tokio::task::spawn_blocking(move || {
                        let body = read_at(&file, offset, len)?;
                        if let Some(hasher) = &hasher {
                            hasher.lock().expect("hasher lock").update(&body);
                        }
                        Ok::<_, std::io::Error>(body)
                    })
                    .await
                    .map_err(Error::from_join)?
                    .map_err(|e| self.io("read", key, e))?;
                    Ok::<_, Error>((number, body))
                }
            })
            .buffered(1)
            .map(|read| {
                let upload_id = upload_id.clone();
                async move {
                    let (number, body) = read?;
                    let part = c
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(full)
                        .upload_id(&upload_id)
                        .part_number(number as i32)
                        .content_length(body.len() as i64)
                        .body(ByteStream::from(body))
                        .send()
                        .await
                        .map_err(|e| self.error("put", key, e))?;
                    Ok(CompletedPart::builder()
                        .part_number(number as i32)
                        .set_e_tag(part.e_tag().map(str::to_string))
                        .build())
                }
            })
            .buffer_unordered(PARTS_IN_FLIGHT)
            .try_collect()
            .await;
        let uploaded = uploaded.and_then(|completed| {
            let (Some(expected), Some(hasher)) = (sha256, hasher) else {
                return Ok(completed);
            };
            let actual = hex::encode(hasher.lock().expect("hasher lock").clone().finalize());
            if actual != expected {
                return Err(Error::ContentMismatch {
                    key: key.to_string(),
                    store: self.url(),
                    path: source.display().to_string(),
                    sha256: expected.to_string(),
                });
            }
            Ok(completed)
        });
        let result = match uploaded {
            Ok(mut completed) => {
                completed.sort_by_key(|p| p.part_number());
                c.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(completed))
                            .build(),
                    )
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.error("put", key, e))
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Parts of an unfinished upload are invisible but stored (and billed).
            let _ = c
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    /// Writes a file: one `PUT` up to [`PART_SIZE`], a multipart upload above. With
    /// `sha256`, only bytes with that hash are stored.
    async fn upload_file(
        &self,
        key: &str,
        source: &Path,
        sha256: Option<&str>,
    ) -> Result<ObjectMeta> {
        let full = self.full_key(key)?;
        let path = source.to_path_buf();
        let (file, size) = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path)?;
            let size = file.metadata()?.len();
            Ok::<_, std::io::Error>((file, size))
        })
        .await
        .map_err(Error::from_join)?
        .map_err(|e| self.io("read", key, e))?;
        if size <= PART_SIZE {
            // Allocated here and filled on the blocking pool: the runtime's few threads
            // allocate and free every body, so memory is reused rather than spread over a
            // heap per pool thread (in the s3sync bench, a peak of 150 MiB became 70).
            let body = Vec::with_capacity(size as usize);
            let body = tokio::task::spawn_blocking(move || {
                let (mut file, mut body) = (file, body);
                std::io::Read::read_to_end(&mut file, &mut body)?;
                Ok::<_, std::io::Error>(body)
            })
            .await
            .map_err(Error::from_join)?
            .map_err(|e| self.io("read", key, e))?;
            let checked = sha256.map(|sha256| (sha256, source));
            return self.put_once(key, &full, Bytes::from(body), checked).await;
        }
        self.put_multipart(key, &full, (source, file), size, sha256)
            .await?;
        // The etag of a multipart object is the server's to compute: ask for it.
        self.head_full(key, &full)
            .await?
            .ok_or_else(|| self.precondition(key))
    }

    /// One unconditional `PUT` (retried by the SDK). With `checked`, the known SHA-256 of
    /// `body` (read from the file named) is the signed payload hash: the SDK does not hash
    /// the body again, and the server refuses a body that does not match it.
    async fn put_once(
        &self,
        key: &str,
        full: &str,
        body: Bytes,
        checked: Option<(&str, &Path)>,
    ) -> Result<ObjectMeta> {
        let c = self.connection().await?;
        let size = body.len() as u64;
        let request = c
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .content_length(size as i64)
            .body(ByteStream::from(body.clone()));
        let sent = match checked {
            Some((sha256, _)) => {
                request
                    .customize()
                    .interceptor(KnownPayloadSha256(sha256.to_string()))
                    .send()
                    .await
            }
            None => request.send().await,
        };
        match sent {
            Ok(out) => Ok(ObjectMeta {
                key: key.to_string(),
                size,
                etag: normalize_etag(out.e_tag()),
            }),
            // Servers answer a body that does not match its signed hash differently (AWS
            // and MinIO: `XAmzContentSHA256Mismatch`; s3s: a 500 after the body): when a
            // checked write fails, the bytes sent say whether that was the reason.
            Err(e) => match checked {
                Some((expected, source)) if hex::encode(Sha256::digest(&body)) != expected => {
                    Err(Error::ContentMismatch {
                        key: key.to_string(),
                        store: self.url(),
                        path: source.display().to_string(),
                        sha256: expected.to_string(),
                    })
                }
                _ => Err(self.error("write", key, e)),
            },
        }
    }

    async fn head_full(&self, key: &str, full: &str) -> Result<Option<ObjectMeta>> {
        let c = self.connection().await?;
        match c
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                etag: normalize_etag(out.e_tag()),
            })),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => {
                if e.code() == Some("NoSuchBucket") {
                    return Err(self.error("stat", key, e));
                }
                Ok(None)
            }
            // The answer to a `HEAD` has no body, so no error code: refused credentials
            // and missing permissions both read 403. Ask again with a `GET` of one byte,
            // whose answer says which.
            Err(e)
                if e.code().is_none()
                    && matches!(
                        e.raw_response().map(|r| r.status().as_u16()),
                        Some(400 | 403)
                    ) =>
            {
                match c
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(full)
                    .range("bytes=0-0")
                    .send()
                    .await
                {
                    Err(detailed) => Err(self.error("stat", key, detailed)),
                    Ok(_) => Err(self.error("stat", key, e)),
                }
            }
            Err(e) => Err(self.error("stat", key, e)),
        }
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn url(&self) -> String {
        let base = format!("s3://{}/{}", self.bucket, self.prefix.trim_end_matches('/'));
        let base = base.trim_end_matches('/').to_string();
        match &self.options.endpoint {
            Some(endpoint) => format!("{base} (at {})", strip_userinfo(endpoint)),
            None => base,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<(Bytes, ObjectMeta)>> {
        let full = self.full_key(key)?;
        let c = self.connection().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = match c
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if e.code() == Some("NoSuchKey") => return Ok(None),
                Err(e) => return Err(self.error("read", key, e)),
            };
            // Bytes and metadata come from one answer: they belong to one version.
            let etag = normalize_etag(out.e_tag());
            match out.body.collect().await {
                Ok(body) => {
                    let bytes = body.into_bytes();
                    return Ok(Some((
                        bytes.clone(),
                        ObjectMeta {
                            key: key.to_string(),
                            size: bytes.len() as u64,
                            etag,
                        },
                    )));
                }
                Err(_) if attempt < BODY_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(e) => return Err(self.body_error("read", key, e)),
            }
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let full = self.full_key(key)?;
        self.head_full(key, &full).await
    }

    async fn put(&self, key: &str, body: Bytes, condition: Condition) -> Result<ObjectMeta> {
        let full = self.full_key(key)?;
        let c = self.connection().await?;
        let size = body.len() as u64;
        if condition == Condition::None {
            return self.put_once(key, &full, body, None).await;
        }
        let mut landed_maybe = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = c
                .once
                .put_object()
                .bucket(&self.bucket)
                .key(&full)
                .content_length(size as i64)
                .body(ByteStream::from(body.clone()));
            let request = match &condition {
                Condition::IfMatch(etag) => request.if_match(quote_etag(etag)),
                _ => request.if_none_match("*"),
            };
            match request.send().await {
                Ok(out) => {
                    return Ok(ObjectMeta {
                        key: key.to_string(),
                        size,
                        etag: normalize_etag(out.e_tag()),
                    })
                }
                // `If-Match` on a missing key: AWS answers 404 `NoSuchKey`.
                Err(e)
                    if is_precondition(&e)
                        || (matches!(condition, Condition::IfMatch(_))
                            && e.code() == Some("NoSuchKey")) =>
                {
                    // An earlier attempt may have written the object and lost the answer:
                    // then the object is ours, byte for byte.
                    if landed_maybe {
                        if let Some((current, meta)) = self.get(key).await? {
                            if current == body {
                                return Ok(meta);
                            }
                        }
                    }
                    return Err(self.precondition(key));
                }
                Err(e) if attempt < MAX_ATTEMPTS && is_transient(&e) => {
                    landed_maybe = true;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(self.error("write", key, e)),
            }
        }
    }

    async fn put_file(&self, key: &str, source: &Path) -> Result<ObjectMeta> {
        self.upload_file(key, source, None).await
    }

    async fn put_file_checked(&self, key: &str, source: &Path, sha256: &str) -> Result<ObjectMeta> {
        let valid = sha256.len() == 64
            && sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(Error::Backend(format!(
                "`{sha256}` is not a SHA-256 in lowercase hex (uploading `{key}`)"
            )));
        }
        self.upload_file(key, source, Some(sha256)).await
    }

    async fn get_file(&self, key: &str, dest: &Path) -> Result<()> {
        let full = self.full_key(key)?;
        let c = self.connection().await?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| self.io("write", key, e))?;
        }
        let tmp = temp_beside(dest);
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let out = match c
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if e.code() == Some("NoSuchKey") => {
                    break Err(self.io(
                        "read",
                        key,
                        std::io::Error::new(std::io::ErrorKind::NotFound, "no such object"),
                    ))
                }
                Err(e) => break Err(self.error("read", key, e)),
            };
            match self.write_body(key, out.body, &tmp).await {
                Ok(()) => break Ok(()),
                Err(_) if attempt < BODY_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, dest).await.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.io("write", key, e)
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        if prefix.starts_with('/') || prefix.split('/').any(|s| s == ".." || s == ".") {
            return Err(Error::InvalidKey(prefix.to_string()));
        }
        // No separate bucket check: a listing of a missing bucket answers `NoSuchBucket`
        // itself, and one that succeeds proves the bucket is there. So an unchanged store
        // costs one request (the state cache's listing).
        let c = self.connection.get_or_try_init(|| self.connect()).await?;
        let mut pages = c
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}{prefix}", self.prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        let mut without_etag = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("list", prefix, e))?;
            let _ = self.bucket_found.set(());
            for object in page.contents() {
                let Some(key) = object
                    .key()
                    .and_then(|k| k.strip_prefix(self.prefix.as_str()))
                else {
                    continue;
                };
                // Folder markers (`a/`) and keys this store could not have written are
                // not objects of the store.
                if !check_key(key) {
                    continue;
                }
                if object.e_tag().is_none() {
                    without_etag.push(out.len());
                }
                out.push(ObjectMeta {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    etag: normalize_etag(object.e_tag()),
                });
            }
        }
        // Some servers list without etags; the contract promises them.
        let heads: Vec<(usize, Option<ObjectMeta>)> = futures::stream::iter(without_etag)
            .map(|i| {
                let key = out[i].key.clone();
                async move {
                    let full = format!("{}{key}", self.prefix);
                    self.head_full(&key, &full).await.map(|m| (i, m))
                }
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let mut gone = Vec::new();
        for (i, meta) in heads {
            match meta {
                Some(meta) => out[i] = meta,
                // Deleted since it was listed.
                None => gone.push(i),
            }
        }
        gone.sort_unstable();
        for i in gone.into_iter().rev() {
            out.remove(i);
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        let full = self.full_key(key)?;
        let c = self.connection().await?;
        let etag = match condition {
            Condition::None => {
                return c
                    .client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&full)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.error("delete", key, e));
            }
            Condition::IfAbsent => return Err(self.precondition(key)),
            Condition::IfMatch(etag) => etag,
        };
        if !self.checks_conditional_delete().await? {
            // Emulated (see the module's caveats): compare, then delete.
            match self.head_full(key, &full).await? {
                Some(meta) if meta.etag == etag => {}
                _ => return Err(self.precondition(key)),
            }
            return c
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.error("delete", key, e));
        }
        let mut landed_maybe = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match c
                .once
                .delete_object()
                .bucket(&self.bucket)
                .key(&full)
                .if_match(quote_etag(&etag))
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e)
                    if is_precondition(&e)
                        || (e.raw_response().map(|r| r.status().as_u16()) == Some(404)
                            && e.code() != Some("NoSuchBucket")) =>
                {
                    // An earlier attempt may have deleted it and lost the answer.
                    if landed_maybe && self.head_full(key, &full).await?.is_none() {
                        return Ok(());
                    }
                    return Err(self.precondition(key));
                }
                Err(e) if attempt < MAX_ATTEMPTS && is_transient(&e) => {
                    landed_maybe = true;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(self.error("delete", key, e)),
            }
        }
    }
}

/// Returns whether `name` is a bucket name S3 accepts (the common rules).
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// Whether S3 refused a conditional write because its condition failed: 412, or 409
/// `ConditionalRequestConflict` (a concurrent conditional write to the same key).
fn is_precondition<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    let status = err.raw_response().map(|r| r.status().as_u16());
    status == Some(412)
        || err.code() == Some("PreconditionFailed")
        || (status == Some(409) && err.code() == Some("ConditionalRequestConflict"))
}

/// Whether another attempt may succeed: timeouts, broken connections, throttling, 5xx.
fn is_transient<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(f) => f.is_io() || f.is_timeout(),
        SdkError::ServiceError(_) => {
            let status = err.raw_response().map_or(0, |r| r.status().as_u16());
            status >= 500
                || status == 429
                || matches!(
                    err.code(),
                    Some("SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable")
                )
        }
        _ => false,
    }
}

/// Jittered exponential backoff before attempt `attempt + 1`: 100–200 ms, then
/// doubling, at most 8 s.
fn backoff(attempt: u32) -> Duration {
    let base = 200u64
        .saturating_mul(1 << attempt.min(6).saturating_sub(1))
        .min(8000);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u64;
    Duration::from_millis(base / 2 + base / 2 * jitter / 1000)
}

/// Etags as S3 sends them are quoted (`"…"`), sometimes weak (`W/"…"`); the store
/// compares them bare.
fn normalize_etag(etag: Option<&str>) -> String {
    let etag = etag.unwrap_or("");
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    etag.trim_matches('"').to_string()
}

fn quote_etag(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// `http://user:pass@host/` → `http://host/`.
fn strip_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

fn scrub_static(credentials: &Option<StaticCredentials>, mut text: String) -> String {
    if let Some(c) = credentials {
        for secret in std::iter::once(&c.secret_access_key).chain(&c.session_token) {
            if secret.len() >= 4 && text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "[redacted]");
            }
        }
    }
    text
}

/// An error and its sources, each by its `Display`, joined by `: ` (repeats dropped).
/// Never their `Debug`, which for SDK errors holds whole requests and answers.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// Whether a credentials error means that no provider of the chain had any credentials.
fn no_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(c) = e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
        {
            return matches!(
                c,
                aws_credential_types::provider::error::CredentialsError::CredentialsNotLoaded(_)
            );
        }
        current = e.source();
    }
    false
}

/// Finds a credentials-provider failure in an error's chain and describes it.
fn credentials_problem(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(c) = e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
        {
            return Some(chain(c));
        }
        current = e.source();
    }
    // Identity resolution failures without a typed source still say so.
    let text = chain(err);
    (text.contains("credentials") && text.contains("provider")).then_some(text)
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("object");
    path.with_file_name(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()))
}

fn read_at(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    #[cfg(unix)]
    std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, offset)?;
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = file.try_clone()?;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut buf)?;
    }
    Ok(Bytes::from(buf))
}

impl S3Store {
    async fn write_body(&self, key: &str, body: ByteStream, tmp: &Path) -> Result<()> {
        let mut file = tokio::fs::File::create(tmp)
            .await
            .map_err(|e| self.io("write", key, e))?;
        let mut body = body;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| self.body_error("read", key, e))?
        {
            file.write_all(&chunk)
                .await
                .map_err(|e| self.io("write", key, e))?;
        }
        file.flush().await.map_err(|e| self.io("write", key, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str) -> Result<S3Store> {
        S3Store::new(url, &StoreOptions::default())
    }

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        let s = store("s3://cairn-data/teams/risk/").unwrap();
        assert_eq!(s.bucket(), "cairn-data");
        assert_eq!(s.prefix(), "teams/risk/");
        assert_eq!(s.url(), "s3://cairn-data/teams/risk");
        let s = store("s3://cairn-data").unwrap();
        assert_eq!(s.prefix(), "");
        assert_eq!(s.url(), "s3://cairn-data");
        assert_eq!(store("s3://cairn-data/").unwrap().url(), "s3://cairn-data");
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for url in [
            "s3://",
            "s3://Upper",
            "s3://ab",
            "s3://-bucket",
            "s3://b_u",
            "s3://bucket/a//b",
            "s3://bucket/../x",
            "gs://bucket",
        ] {
            match store(url) {
                Err(Error::InvalidUrl { url: u, reason }) => {
                    assert_eq!(u, url);
                    assert!(!reason.is_empty());
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        let options = StoreOptions {
            endpoint: Some("localhost:9000".into()),
            ..StoreOptions::default()
        };
        assert!(matches!(
            S3Store::new("s3://bucket", &options),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn the_url_names_the_endpoint_without_user_information() {
        let options = StoreOptions {
            endpoint: Some("http://key:secret@127.0.0.1:9000".into()),
            region: Some("eu-west-1".into()),
            path_style: None,
            ..StoreOptions::default()
        };
        let s = S3Store::new("s3://bucket/p", &options).unwrap();
        assert_eq!(s.url(), "s3://bucket/p (at http://127.0.0.1:9000)");
        assert!(!format!("{s:?}").contains("secret"));
    }

    /// With no chain and no explicit credentials there are none, whatever the process's
    /// environment holds: the library asks no one, and says so before sending anything.
    #[tokio::test]
    async fn without_a_chain_a_store_has_no_credentials() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let options = StoreOptions {
            endpoint: Some(endpoint),
            ..StoreOptions::default()
        };
        let s = S3Store::new("s3://bucket/p", &options).unwrap();
        match s.get("k").await {
            Err(Error::NoCredentials { store, .. }) => assert!(store.starts_with("s3://bucket/p")),
            other => panic!("expected NoCredentials, got {other:?}"),
        }
    }

    #[test]
    fn etags_compare_bare() {
        assert_eq!(normalize_etag(Some("\"abc\"")), "abc");
        assert_eq!(normalize_etag(Some("W/\"abc-2\"")), "abc-2");
        assert_eq!(normalize_etag(Some("abc")), "abc");
        assert_eq!(quote_etag("abc"), "\"abc\"");
    }

    #[test]
    fn keys_map_under_the_prefix_and_are_checked() {
        let s = store("s3://bucket/p/q").unwrap();
        assert_eq!(s.full_key("a/b").unwrap(), "p/q/a/b");
        assert!(matches!(s.full_key("../a"), Err(Error::InvalidKey(_))));
        let s = store("s3://bucket").unwrap();
        assert_eq!(s.full_key("a").unwrap(), "a");
    }

    #[test]
    fn a_bucket_in_another_region_says_which() {
        let e = Error::WrongRegion {
            bucket: "cairn-data".into(),
            region: Some("eu-west-1".into()),
            signed_for: "us-east-1".into(),
        };
        assert_eq!(
            e.to_string(),
            "the bucket `cairn-data` is in eu-west-1, not in us-east-1; set `region` in the \
             workspace (`region = \"eu-west-1\"`)"
        );
        let e = Error::WrongRegion {
            bucket: "cairn-data".into(),
            region: None,
            signed_for: "us-east-1".into(),
        };
        assert!(e.to_string().contains("is in another region"), "{e}");
    }

    #[test]
    fn error_chains_show_each_cause_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = Error::Io {
            op: "read",
            key: "k".into(),
            store: "s3://b".into(),
            source: inner,
        };
        assert_eq!(chain(&outer), "read `k` in s3://b failed: refused");
    }

    #[test]
    fn static_secrets_are_scrubbed() {
        let s = store("s3://bucket").unwrap().with_credentials(
            "AKIDEXAMPLE",
            "CAIRNSECRETDONOTPRINT1234",
            Some("TOKEN5678"),
        );
        let text = s.scrub("x CAIRNSECRETDONOTPRINT1234 y TOKEN5678".into());
        assert_eq!(text, "x [redacted] y [redacted]");
        assert!(!format!("{s:?}").contains("CAIRNSECRET"));
    }
}
