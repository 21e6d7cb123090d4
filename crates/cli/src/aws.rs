//! AWS client configuration. Endpoints come from the standard variables
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_DYNAMODB`, …), which is how the local stack
//! (moto, dynalite) is reached; S3 then needs path-style addressing.

/// Every AWS client retries under `Policy::AWS` in the SDK's standard mode (exponential
/// backoff with full jitter; throttling, 5xx, timeouts and connection errors are
/// retried, other errors returned at once).
fn retry_config() -> aws_config::retry::RetryConfig {
    let p = crossdock_core::retry::Policy::AWS;
    aws_config::retry::RetryConfig::standard().with_max_attempts(p.attempts).with_initial_backoff(p.base).with_max_backoff(p.max)
}

/// Counts the SDK's retries in `crossdock_retries_total` (service and operation from the
/// request's metadata), as every retried call is counted: the SDK offers no hook on the
/// shared `SdkConfig`, so every client is built here with it.
#[derive(Debug)]
struct CountRetries;

impl aws_smithy_runtime_api::client::interceptors::Intercept for CountRetries {
    fn name(&self) -> &'static str {
        "CountRetries"
    }

    fn read_after_execution(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<'_>,
        _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use aws_smithy_runtime_api::client::{orchestrator::Metadata, retries::RequestAttempts};
        let attempts = cfg.load::<RequestAttempts>().map_or(1, |a| a.attempts());
        if let Some(m) = cfg.load::<Metadata>() {
            let succeeded = matches!(context.output_or_error(), Some(Ok(_)));
            crossdock_core::retry::retried_by_client(m.service(), m.name(), attempts, succeeded);
        }
        Ok(())
    }
}

/// S3 client; path-style when a custom endpoint is configured (moto, MinIO, …).
pub fn s3(conf: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let path_style = std::env::var_os("AWS_ENDPOINT_URL_S3").is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some();
    let s3 = aws_sdk_s3::config::Builder::from(conf).force_path_style(path_style).interceptor(CountRetries).build();
    aws_sdk_s3::Client::from_conf(s3)
}

pub fn sqs(conf: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(conf).interceptor(CountRetries).build())
}

pub fn dynamodb(conf: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(aws_sdk_dynamodb::config::Builder::from(conf).interceptor(CountRetries).build())
}

pub fn streams(conf: &aws_config::SdkConfig) -> aws_sdk_dynamodbstreams::Client {
    aws_sdk_dynamodbstreams::Client::from_conf(aws_sdk_dynamodbstreams::config::Builder::from(conf).interceptor(CountRetries).build())
}

pub fn kinesis(conf: &aws_config::SdkConfig) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::from_conf(aws_sdk_kinesis::config::Builder::from(conf).interceptor(CountRetries).build())
}

pub fn autoscaling(conf: &aws_config::SdkConfig) -> aws_sdk_applicationautoscaling::Client {
    aws_sdk_applicationautoscaling::Client::from_conf(aws_sdk_applicationautoscaling::config::Builder::from(conf).interceptor(CountRetries).build())
}

/// The `--profile` of this process, set once from the command line.
static PROFILE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

pub fn use_profile(name: Option<String>) {
    let _ = PROFILE.set(name);
}

/// The one AWS set-up of every command: credentials and region from the default chain
/// as the aws CLI resolves them (environment, `--profile`/AWS_PROFILE with SSO,
/// `credential_process` and role chains, web identity, ECS/EC2 metadata).
pub async fn config(region: Option<String>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).retry_config(retry_config());
    if let Some(p) = PROFILE.get().and_then(|p| p.as_deref()) {
        loader = loader.profile_name(p);
    }
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r));
    }
    loader.load().await
}
