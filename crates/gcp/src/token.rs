//! The shared token: one gcloud-auth token source (which caches and refreshes) behind
//! the provider traits each client library asks for.

use std::sync::Arc;

use gcloud_auth::project::{Config, Project, ProjectInfo};
use gcloud_auth::token_source::TokenSource as AuthTokenSource;

use crate::error::{step_of, AuthError, Step};
use crate::identity::Identity;

/// One signed-in token source and the identity it belongs to.
pub(crate) struct Shared {
    inner: Box<dyn AuthTokenSource>,
    identity: Identity,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("identity", &self.identity.to_string()).finish()
    }
}

impl Shared {
    pub(crate) async fn bearer(&self) -> Result<String, AuthError> {
        let t = self.inner.token().await.map_err(|source| AuthError::SignIn {
            identity: Box::new(self.identity.clone()),
            step: step_of(&self.identity, &source),
            source,
        })?;
        Ok(format!("Bearer {}", t.access_token))
    }

    pub(crate) fn provider(self: &Arc<Self>) -> SharedProvider {
        SharedProvider(Arc::new(SharedSource(self.clone())))
    }
}

/// `token_source::TokenSource` (GCS, Spanner, Pub/Sub) over [`Shared`].
#[derive(Debug)]
struct SharedSource(Arc<Shared>);

#[async_trait::async_trait]
impl token_source::TokenSource for SharedSource {
    async fn token(&self) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.bearer().await?)
    }
}

/// What the gcloud clients hold: every client gets the same token source.
#[derive(Debug, Clone)]
pub(crate) struct SharedProvider(Arc<SharedSource>);

impl token_source::TokenSourceProvider for SharedProvider {
    fn token_source(&self) -> Arc<dyn token_source::TokenSource> {
        self.0.clone()
    }
}

/// `gcp_auth::TokenProvider` (bigtable_rs) over [`Shared`]. Scopes are ignored: the
/// shared token is cloud-platform, which covers Bigtable's.
pub(crate) struct BigtableTokens {
    shared: Arc<Shared>,
    project_id: Option<String>,
}

impl BigtableTokens {
    pub(crate) fn new(shared: Arc<Shared>, project_id: Option<String>) -> BigtableTokens {
        BigtableTokens { shared, project_id }
    }
}

#[async_trait::async_trait]
impl gcp_auth::TokenProvider for BigtableTokens {
    async fn token(&self, _scopes: &[&str]) -> Result<Arc<gcp_auth::Token>, gcp_auth::Error> {
        let bearer = self.shared.bearer().await.map_err(|e| gcp_auth::Error::Other("Google sign-in", Box::new(e)))?;
        let access = bearer.strip_prefix("Bearer ").unwrap_or(&bearer);
        // gcp_auth's Token has no public constructor; it is built the way its own
        // providers build it, from a token response. gcloud-auth refreshes the shared
        // token itself and bigtable_rs asks for it on every call, so a short life is fine.
        let token: gcp_auth::Token = serde_json::from_value(serde_json::json!({ "access_token": access, "expires_in": 60 }))
            .map_err(|e| gcp_auth::Error::Json("building a Bigtable token", e))?;
        Ok(Arc::new(token))
    }

    async fn project_id(&self) -> Result<Arc<str>, gcp_auth::Error> {
        self.project_id.as_deref().map(Arc::from).ok_or(gcp_auth::Error::Str("the Google credentials name no project"))
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn well_known_file() -> Option<std::path::PathBuf> {
    if let Some(dir) = env("CLOUDSDK_CONFIG") {
        return Some(std::path::Path::new(&dir).join("application_default_credentials.json"));
    }
    env("HOME").map(|h| std::path::Path::new(&h).join(".config/gcloud/application_default_credentials.json"))
}

/// Application Default Credentials, in gcloud's order: `GOOGLE_APPLICATION_CREDENTIALS`,
/// gcloud's application-default file, the metadata server. Fetches the first token, so a
/// wrong credential fails here, naming the step.
pub(crate) async fn sign_in(scopes: &'static [&'static str], file: Option<&std::path::Path>) -> Result<(Shared, Identity), AuthError> {
    let config = Config::default().with_scopes(scopes);
    let file = match (file, env("GOOGLE_APPLICATION_CREDENTIALS")) {
        (Some(p), _) => Some((p.display().to_string(), format!("credential file {}", p.display()))),
        (None, Some(p)) => Some((p.clone(), format!("GOOGLE_APPLICATION_CREDENTIALS={p}"))),
        (None, None) => {
            well_known_file().filter(|p| p.is_file()).map(|p| (p.display().to_string(), format!("gcloud's application-default file {}", p.display())))
        }
    };
    if let Some((path, source)) = file {
        let text = tokio::fs::read_to_string(&path).await.map_err(|source| AuthError::Read { path: path.clone(), source })?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| AuthError::Parse { path: path.clone(), message: e.to_string() })?;
        let identity = Identity::from_file(source, &json);
        if !matches!(identity.kind.as_str(), "service_account" | "authorized_user" | "external_account") {
            return Err(AuthError::Unsupported { path, kind: identity.kind });
        }
        let creds = gcloud_auth::credentials::CredentialsFile::new_from_str(&text)
            .await
            .map_err(|e| AuthError::Parse { path: path.clone(), message: e.to_string() })?;
        let inner = gcloud_auth::project::create_token_source_from_credentials(&creds, &config).await.map_err(|source| AuthError::SignIn {
            identity: Box::new(identity.clone()),
            step: step_of(&identity, &source),
            source,
        })?;
        return Ok((Shared { inner, identity: identity.clone() }, identity));
    }
    if !gcloud_metadata::on_gce().await {
        let well_known = well_known_file().map_or_else(|| "(no home directory)".into(), |p| p.display().to_string());
        return Err(AuthError::NoCredentials { well_known });
    }
    let project = gcloud_metadata::project_id().await;
    let project_id = (!project.is_empty()).then_some(project);
    let email = gcloud_metadata::email("default").await.ok();
    let identity = Identity::metadata(email, project_id.clone());
    let inner = gcloud_auth::project::create_token_source_from_project(&Project::FromMetadataServer(ProjectInfo { project_id }), config)
        .await
        .map_err(|source| AuthError::SignIn { identity: Box::new(identity.clone()), step: Step::AccessToken, source })?;
    Ok((Shared { inner, identity: identity.clone() }, identity))
}
