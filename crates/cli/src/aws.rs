//! AWS client configuration. Endpoints come from the standard variables
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_DYNAMODB`, …), which is how the local stack
//! (moto, dynalite) is reached; S3 then needs path-style addressing.

pub async fn config(region: Option<String>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r));
    }
    loader.load().await
}

/// S3 client; path-style when a custom endpoint is configured (moto, MinIO, …).
pub fn s3(conf: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let path_style = std::env::var_os("AWS_ENDPOINT_URL_S3").is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some();
    let s3 = aws_sdk_s3::config::Builder::from(conf).force_path_style(path_style).build();
    aws_sdk_s3::Client::from_conf(s3)
}
