//! Who the credentials sign in as, read from the credential file (or the metadata
//! server) before any token is asked for, so errors and `validate --online` can name it.

use serde_json::Value;

/// The identity a [`crate::Gcp`] signs in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Where the credentials came from: `GOOGLE_APPLICATION_CREDENTIALS=PATH`, gcloud's
    /// application-default file, or the metadata server.
    pub source: String,
    /// The credential type: `service_account`, `authorized_user`, `external_account`,
    /// `metadata server`.
    pub kind: String,
    /// The service account the clients act as, when known (key file, impersonation URL,
    /// metadata server).
    pub email: Option<String>,
    /// For `external_account`: the workload identity pool provider (audience).
    pub audience: Option<String>,
    /// For `external_account`: where the subject token comes from.
    pub subject: Option<String>,
    /// For `external_account` with impersonation: the `generateAccessToken` URL.
    pub impersonation_url: Option<String>,
    /// For `external_account`: the STS token-exchange URL.
    pub token_url: Option<String>,
    /// The project the credentials name, if any.
    pub project_id: Option<String>,
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

/// `…/projects/-/serviceAccounts/EMAIL:generateAccessToken` → `EMAIL`.
fn impersonated_email(url: &str) -> Option<String> {
    let rest = url.rsplit_once("/serviceAccounts/")?.1;
    let email = rest.split_once(':').map_or(rest, |(e, _)| e);
    (!email.is_empty()).then(|| email.to_string())
}

impl Identity {
    /// From a credential file's JSON.
    pub(crate) fn from_file(source: String, json: &Value) -> Identity {
        let kind = s(json, "type").unwrap_or_else(|| "(no type)".into());
        let mut id = Identity {
            source,
            kind: kind.clone(),
            email: None,
            audience: None,
            subject: None,
            impersonation_url: None,
            token_url: None,
            project_id: s(json, "project_id").or_else(|| s(json, "quota_project_id")),
        };
        match kind.as_str() {
            "service_account" => id.email = s(json, "client_email"),
            "external_account" => {
                id.audience = s(json, "audience");
                id.token_url = s(json, "token_url");
                id.impersonation_url = s(json, "service_account_impersonation_url");
                id.email = id.impersonation_url.as_deref().and_then(impersonated_email);
                let src = json.get("credential_source").cloned().unwrap_or(Value::Null);
                id.subject = Some(match (s(&src, "environment_id"), s(&src, "file"), s(&src, "url")) {
                    (Some(env), _, _) => format!("{env} (signed GetCallerIdentity from the environment or instance metadata)"),
                    (None, Some(file), _) => format!("file {file}"),
                    (None, None, Some(url)) => format!("URL {url}"),
                    _ => "an unsupported credential_source (only file, url and aws are)".into(),
                });
            }
            _ => {}
        }
        id
    }

    pub(crate) fn metadata(email: Option<String>, project_id: Option<String>) -> Identity {
        Identity {
            source: "the metadata server".into(),
            kind: "metadata server".into(),
            email,
            audience: None,
            subject: None,
            impersonation_url: None,
            token_url: None,
            project_id,
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.kind.as_str(), &self.email) {
            ("external_account", email) => {
                write!(
                    f,
                    "external account {} (subject token from {})",
                    self.audience.as_deref().unwrap_or("(no audience)"),
                    self.subject.as_deref().unwrap_or("?")
                )?;
                if let Some(email) = email {
                    write!(f, " impersonating {email}")?;
                }
            }
            (kind, Some(email)) => write!(f, "{email} ({kind})")?,
            ("authorized_user", None) => write!(f, "gcloud user credentials (authorized_user)")?,
            (kind, None) => write!(f, "{kind} credentials")?,
        }
        write!(f, " from {}", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_account_names_audience_subject_and_impersonated_account() {
        let json: Value = serde_json::from_str(
            r#"{"type":"external_account","audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/aws",
            "token_url":"https://sts.googleapis.com/v1/token","credential_source":{"environment_id":"aws1"},
            "service_account_impersonation_url":"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/relay@p.iam.gserviceaccount.com:generateAccessToken"}"#,
        )
        .expect("json");
        let id = Identity::from_file("/k.json".into(), &json);
        assert_eq!(id.email.as_deref(), Some("relay@p.iam.gserviceaccount.com"));
        let shown = id.to_string();
        assert!(shown.contains("providers/aws") && shown.contains("aws1") && shown.contains("impersonating relay@p"), "{shown}");
    }

    #[test]
    fn service_account_names_its_email() {
        let json: Value = serde_json::from_str(r#"{"type":"service_account","client_email":"a@p.iam.gserviceaccount.com","project_id":"p"}"#).expect("json");
        let id = Identity::from_file("k".into(), &json);
        assert_eq!(id.to_string(), "a@p.iam.gserviceaccount.com (service_account) from k");
        assert_eq!(id.project_id.as_deref(), Some("p"));
    }
}
