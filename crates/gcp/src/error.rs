//! Sign-in errors that name the credential and the step that failed.

use crate::identity::Identity;

/// The step of a sign-in that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The credential file's settings (missing token_url, unsupported source, …).
    Settings,
    /// Getting the subject token (reading the file, calling the URL, AWS credentials).
    SubjectToken(String),
    /// Exchanging the subject token at Google's Security Token Service.
    StsExchange(String),
    /// Exchanging the federated token for the service account's (`generateAccessToken`).
    Impersonation(String),
    /// Asking for an access token (key file, user credentials, metadata server).
    AccessToken,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Settings => write!(f, "reading its external_account settings"),
            Step::SubjectToken(from) => write!(f, "getting the subject token from {from}"),
            Step::StsExchange(url) => write!(f, "STS token exchange at {url}"),
            Step::Impersonation(url) => write!(f, "service-account impersonation at {url}"),
            Step::AccessToken => write!(f, "getting an access token"),
        }
    }
}

/// Why crossdock could not sign in to Google Cloud.
#[derive(thiserror::Error)]
pub enum AuthError {
    #[error(
        "no Google credentials: GOOGLE_APPLICATION_CREDENTIALS is unset, there is no gcloud application-default file at {well_known}, and no metadata server answered (set GOOGLE_APPLICATION_CREDENTIALS to a key or external_account file, or use an emulator variable for local runs)"
    )]
    NoCredentials { well_known: String },
    #[error("Google credentials {path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("Google credentials {path}: not a credential file: {message}")]
    Parse { path: String, message: String },
    #[error("Google credentials {path}: unsupported type {kind:?} (service_account, authorized_user and external_account are supported)")]
    Unsupported { path: String, kind: String },
    #[error("Google sign-in as {identity} failed at {step}: {source}")]
    SignIn {
        identity: Box<Identity>,
        step: Step,
        #[source]
        source: gcloud_auth::error::Error,
    },
    #[error("building the GCS HTTP client: {0}")]
    HttpClient(#[source] reqwest_middleware::reqwest::Error),
}

// The gRPC clients format token errors with `{:?}`: show the message, not a struct dump.
impl std::fmt::Debug for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn same_url(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| a.trim_end_matches('/') == b.trim_end_matches('/'))
}

/// Which step `e` comes from. gcloud-auth chains the steps inside one token source; its
/// error variants and the URL of a failed request tell them apart.
pub(crate) fn step_of(identity: &Identity, e: &gcloud_auth::error::Error) -> Step {
    use gcloud_auth::error::Error as E;
    use gcloud_auth::token_source::external_account_source::error::Error as X;
    let sts = || Step::StsExchange(identity.token_url.clone().unwrap_or_default());
    let imp = || Step::Impersonation(identity.impersonation_url.clone().unwrap_or_default());
    if identity.kind != "external_account" {
        return Step::AccessToken;
    }
    match e {
        E::ExternalAccountSource(x) => match x {
            X::UnexpectedStatusOnGetSubjectToken(..) => sts(),
            X::NoCredentialsSource
            | X::UnsupportedAWSVersion(_)
            | X::UnsupportedSubjectTokenSource
            | X::UnsupportedFormatType
            | X::MissingRegionURL
            | X::MissingSecurityCredentialsURL
            | X::MissingRegionalCredVerificationURL
            | X::MissingTokenURL
            | X::MissingSubjectTokenType
            | X::MissingHeaders
            | X::MissingFormat
            | X::MissingSubjectTokenFieldName
            | X::InvalidRegionURL(_)
            | X::InvalidSecurityCredentialsURL(_)
            | X::InvalidIMDSv2SessionTokenURL(_) => Step::Settings,
            _ => Step::SubjectToken(identity.subject.clone().unwrap_or_default()),
        },
        E::UnexpectedImpersonateTokenResponse(..) => imp(),
        E::HttpError(h) => match h.url().map(|u| u.as_str()) {
            u if same_url(u, identity.impersonation_url.as_deref().unwrap_or("-")) => imp(),
            _ => sts(),
        },
        E::TimeParse(_) => imp(),
        _ => sts(),
    }
}
