//! The standard AWS chain, resolved by the CLI for S3 stores. The library reads no
//! environment: what the `AWS_*` variables, `~/.aws` profiles, a web identity token, the
//! container credentials endpoint and the EC2 instance metadata service say reaches an
//! S3 store through [`DefaultChain`], its [`AwsChain`].
//!
//! The chains are the SDK's default ones (environment, profile, web identity, container,
//! instance metadata), except that the instance metadata service is asked only on an
//! EC2 instance or when `AWS_EC2_METADATA_DISABLED=false` says to: elsewhere its address
//! belongs to no one, and a chain that finds nothing should say so at once instead of
//! timing out there.

use std::path::Path;

use async_trait::async_trait;
use aws_config::ecs::EcsCredentialsProvider;
use aws_config::environment::{
    EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
};
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::imds::region::ImdsRegionProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::{ProfileFileCredentialsProvider, ProfileFileRegionProvider};
use aws_config::provider_config::ProviderConfig;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::SharedHttpClient;
use cairn::backend::store::{AwsChain, FALLBACK_REGION};

/// The standard AWS chain, with the instance metadata service asked only where it can
/// answer.
#[derive(Debug, Clone, Copy)]
pub struct DefaultChain {
    /// Whether the region and credential chains may ask the instance metadata service.
    instance_metadata: bool,
}

impl DefaultChain {
    /// Decides once whether the instance metadata service may be asked: when
    /// `AWS_EC2_METADATA_DISABLED` is `false`, or on an EC2 instance (its DMI data says
    /// so) unless it is `true`. The other variables are read by the SDK's providers when
    /// a store connects.
    pub fn from_env() -> DefaultChain {
        let instance_metadata = match std::env::var("AWS_EC2_METADATA_DISABLED")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            Ok("true") => false,
            Ok("false") => true,
            _ => on_ec2(),
        };
        DefaultChain { instance_metadata }
    }
}

#[async_trait]
impl AwsChain for DefaultChain {
    async fn load(&self, region: Option<&str>, http: SharedHttpClient) -> SdkConfig {
        let base = ProviderConfig::without_region().with_http_client(http.clone());
        let region = match region {
            Some(region) => Some(Region::new(region.to_string())),
            None => {
                let mut chain =
                    RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
                        .or_else(
                            ProfileFileRegionProvider::builder()
                                .configure(&base)
                                .build(),
                        );
                if self.instance_metadata {
                    chain = chain.or_else(ImdsRegionProvider::builder().configure(&base).build());
                }
                chain.region().await
            }
        };
        // The credential providers that call AWS (STS for a web identity) need a region
        // even where no one named one.
        let region = region.unwrap_or_else(|| Region::new(FALLBACK_REGION));
        let conf = base.with_region(Some(region.clone()));
        let mut credentials = CredentialsProviderChain::first_try(
            "Environment",
            EnvironmentVariableCredentialsProvider::new(),
        )
        .or_else(
            "Profile",
            ProfileFileCredentialsProvider::builder()
                .configure(&conf)
                .build(),
        )
        .or_else(
            "WebIdentityToken",
            WebIdentityTokenCredentialsProvider::builder()
                .configure(&conf)
                .build(),
        )
        .or_else(
            "EcsContainer",
            EcsCredentialsProvider::builder().configure(&conf).build(),
        );
        if self.instance_metadata {
            credentials = credentials.or_else(
                "Ec2InstanceMetadata",
                ImdsCredentialsProvider::builder().configure(&conf).build(),
            );
        }
        aws_config::defaults(BehaviorVersion::latest())
            // Every provider the loader makes (for `AWS_ENDPOINT_URL`, retries, …) uses
            // the store's client too; built on its own, one would look for the default
            // client, which is left out.
            .http_client(http)
            .region(region)
            .credentials_provider(credentials)
            .load()
            .await
    }
}

/// Whether this machine is an EC2 instance, by its DMI data (no request is sent).
fn on_ec2() -> bool {
    let read = |name: &str| {
        std::fs::read_to_string(Path::new("/sys/devices/virtual/dmi/id").join(name))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    read("sys_vendor") == "Amazon EC2" || read("board_asset_tag").starts_with("i-")
}
