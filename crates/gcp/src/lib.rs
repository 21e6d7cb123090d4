//! The one place crossdock signs in to Google Cloud.
//!
//! [`Gcp`] finds Application Default Credentials as gcloud does (the file named by
//! `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's application-default file, else the
//! metadata server), signs in once, and hands every client (GCS, Spanner data and admin,
//! Bigtable data and admin, Pub/Sub) the same token source, so a process holds one
//! identity and refreshes one token. The credential file may be a service-account key,
//! gcloud user credentials or an `external_account` (workload identity federation: a
//! subject token from a file, a URL or AWS, exchanged at STS, optionally impersonating a
//! service account).
//!
//! The emulator variables (`STORAGE_EMULATOR_HOST`, `SPANNER_EMULATOR_HOST`,
//! `BIGTABLE_EMULATOR_HOST`, `PUBSUB_EMULATOR_HOST`) are the only way to get an
//! anonymous client; any other endpoint (`CROSSDOCK_GCS_ENDPOINT`, for private endpoints
//! and tests) is signed in to.
// Libraries report through their return values and tracing, never the terminal or exit.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr, clippy::exit))]

mod error;
mod identity;
mod storage_error;
pub mod storage_http;
mod token;

use std::sync::Arc;

pub use error::{AuthError, Step};
pub use identity::Identity;
pub use storage_error::{body_cut_off, gcs_failure, gcs_status, GcsFailure};
use token::{BigtableTokens, Shared};

/// The scope every token is asked for: it covers GCS, Spanner, Bigtable and Pub/Sub, so
/// one token serves every client.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Sets the GCS JSON API endpoint without switching to anonymous access (private
/// endpoints, a proxy). `STORAGE_EMULATOR_HOST` is the emulator switch.
pub const GCS_ENDPOINT_VAR: &str = "CROSSDOCK_GCS_ENDPOINT";

/// How to reach Google Cloud: cheap to clone; signs in on the first client that needs
/// credentials and reuses that sign-in for every later client.
#[derive(Clone, Default)]
pub struct Gcp {
    signed: Arc<tokio::sync::OnceCell<Signed>>,
    storage_endpoint: Option<String>,
    credentials_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Gcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gcp").field("storage_endpoint", &self.storage_endpoint).field("identity", &self.signed.get().map(|s| &s.identity)).finish()
    }
}

#[derive(Clone)]
struct Signed {
    token: Arc<Shared>,
    identity: Identity,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Gcp {
    /// Reads `CROSSDOCK_GCS_ENDPOINT`; signs in lazily.
    pub fn from_env() -> Gcp {
        Gcp { signed: Arc::default(), storage_endpoint: env(GCS_ENDPOINT_VAR), credentials_file: None }
    }

    /// Signs in with this credential file instead of looking for Application Default
    /// Credentials (the same as `GOOGLE_APPLICATION_CREDENTIALS=path`, without touching
    /// the environment).
    pub fn with_credentials_file(mut self, path: impl Into<std::path::PathBuf>) -> Gcp {
        self.credentials_file = Some(path.into());
        self.signed = Arc::default();
        self
    }

    /// Overrides the GCS endpoint (a flag taking precedence over the environment).
    pub fn with_storage_endpoint(mut self, endpoint: Option<String>) -> Gcp {
        if endpoint.is_some() {
            self.storage_endpoint = endpoint;
        }
        self
    }

    async fn signed(&self) -> Result<&Signed, AuthError> {
        self.signed
            .get_or_try_init(|| async {
                let (token, identity) = token::sign_in(&[CLOUD_PLATFORM], self.credentials_file.as_deref()).await?;
                tracing::info!(identity = %identity, "signed in to Google Cloud");
                Ok(Signed { token: Arc::new(token), identity })
            })
            .await
    }

    /// Signs in (if not yet) and names the identity the clients act as.
    pub async fn identity(&self) -> Result<Identity, AuthError> {
        Ok(self.signed().await?.identity.clone())
    }

    /// The identity signed in as so far, if any client needed one (none when every
    /// client went to an emulator).
    pub fn signed_in(&self) -> Option<Identity> {
        self.signed.get().map(|s| s.identity.clone())
    }

    /// The current `Bearer …` authorization value, for hand-made gRPC calls.
    pub async fn authorization(&self) -> Result<String, AuthError> {
        self.signed().await?.token.bearer().await
    }

    /// The project the credentials belong to, if they name one.
    pub async fn project_id(&self) -> Result<Option<String>, AuthError> {
        Ok(self.signed().await?.identity.project_id.clone())
    }

    /// GCS: anonymous at `STORAGE_EMULATOR_HOST` when set; else signed in, at
    /// `CROSSDOCK_GCS_ENDPOINT` or Google's endpoint. Requests go through
    /// [`storage_http::client`] with its default timeouts and the request retry policy;
    /// a caller wanting other timeouts or its own middleware replaces `http`.
    pub async fn storage_config(&self) -> Result<gcloud_storage::client::ClientConfig, AuthError> {
        use gcloud_storage::client::ClientConfig;
        let http =
            storage_http::client(storage_http::Timeouts::default(), crossdock_core::retry::Policy::REQUEST, Vec::new()).map_err(AuthError::HttpClient)?;
        if let Some(emulator) = env("STORAGE_EMULATOR_HOST") {
            let mut c = ClientConfig::default().anonymous();
            c.storage_endpoint = emulator;
            c.http = Some(http);
            return Ok(c);
        }
        let signed = self.signed().await?;
        let mut c = ClientConfig { http: Some(http), ..Default::default() };
        if let Some(ep) = &self.storage_endpoint {
            c.storage_endpoint = ep.trim_end_matches('/').to_string();
        }
        c.token_source_provider = Some(Box::new(signed.token.provider()));
        c.project_id.clone_from(&signed.identity.project_id);
        c.default_google_access_id.clone_from(&signed.identity.email);
        Ok(c)
    }

    /// The gRPC environment of the gcloud clients (Spanner, Pub/Sub): the emulator named
    /// by `emulator_var` when set, else Google Cloud with the shared token.
    pub async fn grpc_environment(&self, emulator_var: &str) -> Result<gcloud_gax::conn::Environment, AuthError> {
        use gcloud_gax::conn::Environment;
        match env(emulator_var) {
            Some(host) => Ok(Environment::Emulator(host)),
            None => Ok(Environment::GoogleCloud(Box::new(self.signed().await?.token.provider()))),
        }
    }

    /// Spanner data client configuration.
    pub async fn spanner_config(&self) -> Result<gcloud_spanner::client::ClientConfig, AuthError> {
        Ok(gcloud_spanner::client::ClientConfig { environment: self.grpc_environment("SPANNER_EMULATOR_HOST").await?, ..Default::default() })
    }

    /// Spanner admin (DDL) client configuration.
    pub async fn spanner_admin_config(&self) -> Result<gcloud_spanner::admin::AdminClientConfig, AuthError> {
        Ok(gcloud_spanner::admin::AdminClientConfig { environment: self.grpc_environment("SPANNER_EMULATOR_HOST").await?, ..Default::default() })
    }

    /// Pub/Sub client configuration for `project`.
    pub async fn pubsub_config(&self, project: &str) -> Result<gcloud_pubsub::client::ClientConfig, AuthError> {
        Ok(gcloud_pubsub::client::ClientConfig {
            environment: self.grpc_environment("PUBSUB_EMULATOR_HOST").await?,
            project_id: Some(project.to_string()),
            ..Default::default()
        })
    }

    /// How to reach Bigtable: the emulator at `BIGTABLE_EMULATOR_HOST` (anonymous), else
    /// Google Cloud with a token provider of the kind bigtable_rs takes (`gcp_auth`'s trait)
    /// over the shared token.
    pub async fn bigtable(&self) -> Result<BigtableAccess, AuthError> {
        if let Some(host) = env("BIGTABLE_EMULATOR_HOST") {
            return Ok(BigtableAccess::Emulator(host));
        }
        Ok(BigtableAccess::Signed(self.bigtable_token_provider().await?))
    }

    /// The token provider [`Gcp::bigtable`] hands bigtable_rs outside the emulator.
    pub async fn bigtable_token_provider(&self) -> Result<Arc<dyn gcp_auth::TokenProvider>, AuthError> {
        let signed = self.signed().await?;
        Ok(Arc::new(BigtableTokens::new(signed.token.clone(), signed.identity.project_id.clone())))
    }
}

/// See [`Gcp::bigtable`].
#[derive(Clone)]
pub enum BigtableAccess {
    /// `host:port` of the emulator.
    Emulator(String),
    /// Signed in; the provider hands out the shared token.
    Signed(Arc<dyn gcp_auth::TokenProvider>),
}

impl std::fmt::Debug for BigtableAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BigtableAccess::Emulator(h) => write!(f, "Emulator({h})"),
            BigtableAccess::Signed(_) => write!(f, "Signed"),
        }
    }
}
