//! Connecting: the HTTPS client shared by every store, the [`AwsChain`] a store gets its
//! region, credentials and SDK settings from, and the client built lazily on a store's
//! first request (retries, timeouts, checksums, addressing), with the bucket looked up
//! once.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_credential_types::provider::{error::CredentialsError, future, ProvideCredentials};
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider, SharedHttpClient,
};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::Client;

use super::{S3Store, FALLBACK_REGION, MAX_ATTEMPTS};
use crate::backend::store::{Error, Result};

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
/// through [`StoreOptions::aws`](crate::backend::store::StoreOptions::aws).
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
pub(super) struct StaticCredentials {
    pub(super) access_key_id: String,
    pub(super) secret_access_key: String,
    pub(super) session_token: Option<String>,
}

/// What the lazily built client needs to know; what it learned once built.
pub(super) struct Connection {
    pub(super) client: Client,
    /// The same client without the SDK's retries, for conditional writes and deletes:
    /// `put` and `delete` retry those themselves, knowing when an attempt may have
    /// landed (see the module's caveats).
    pub(super) once: Client,
    /// The region the requests are signed for.
    pub(super) region: String,
    /// Values to scrub from every message: the secret key and session token in use.
    pub(super) secrets: Vec<String>,
    /// The access key in use (an identifier, not a secret), for messages.
    pub(super) access_key_id: Option<String>,
    /// The endpoint the AWS configuration names, when the workspace names none.
    pub(super) configured_endpoint: Option<String>,
}

impl S3Store {
    /// The client, built on first use, once the bucket is known to be there.
    pub(super) async fn connection(&self) -> Result<&Connection> {
        let c = self.connection.get_or_try_init(|| self.connect()).await?;
        self.bucket_found
            .get_or_try_init(|| self.check_bucket(c))
            .await?;
        Ok(c)
    }

    pub(super) async fn connect(&self) -> Result<Connection> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::store::object::ObjectStore;
    use crate::backend::store::StoreOptions;

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
}
