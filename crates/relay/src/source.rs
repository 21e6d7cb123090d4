//! The S3 side of a copy: the object's body and ETag (GetObject), or its current ETag
//! alone (HeadObject), from S3 or, in tests, objects in memory ([`Source::memory`]).

use crate::error::RelayError;
use crate::s3_event::normalize_etag;
use std::pin::Pin;
use tokio::io::AsyncBufRead;

/// Where relayed objects are read from.
#[derive(Debug, Clone)]
pub struct Source {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    S3(aws_sdk_s3::Client),
    #[cfg(any(test, feature = "testing"))]
    Memory(memory::MemorySource),
}

/// An object opened for reading.
pub struct Opened {
    /// Its ETag, without quotes.
    pub etag: String,
    pub body: Pin<Box<dyn AsyncBufRead + Send>>,
}

fn s3_err<E: std::error::Error + Send + Sync + 'static>(bucket: &str, key: &str, e: &aws_sdk_s3::error::SdkError<E>) -> RelayError {
    use aws_sdk_s3::error::SdkError;
    let retryable = match e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            status >= 500 || status == 429 || status == 408
        }
        _ => true,
    };
    RelayError::S3 { bucket: bucket.into(), key: key.into(), message: aws_sdk_s3::error::DisplayErrorContext(e).to_string(), retryable }
}

impl Source {
    /// The remote client (the memory backend answers before any client call).
    fn client(&self) -> &aws_sdk_s3::Client {
        match &self.backend {
            Backend::S3(c) => c,
            #[cfg(any(test, feature = "testing"))]
            Backend::Memory(_) => unreachable!("the memory backend answers before any client call"),
        }
    }

    pub fn s3(client: aws_sdk_s3::Client) -> Source {
        Source { backend: Backend::S3(client) }
    }

    /// Objects in memory, and the handle that puts them there.
    #[cfg(any(test, feature = "testing"))]
    pub fn memory() -> (Source, memory::MemorySource) {
        let m = memory::MemorySource::default();
        (Source { backend: Backend::Memory(m.clone()) }, m)
    }

    /// GetObject: the body as it streams in; [`RelayError::SourceNotFound`] when the
    /// object does not exist.
    pub async fn open(&self, bucket: &str, key: &str) -> Result<Opened, RelayError> {
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Memory(m) = &self.backend {
            return m.open(bucket, key).await;
        }
        let client = self.client();
        match client.get_object().bucket(bucket).key(key).send().await {
            Ok(o) => Ok(Opened { etag: o.e_tag().map(normalize_etag).unwrap_or_default(), body: Box::pin(o.body.into_async_read()) }),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Err(RelayError::SourceNotFound { bucket: bucket.into(), key: key.into() }),
            Err(e) => Err(s3_err(bucket, key, &e)),
        }
    }

    /// HeadObject: the object's current ETag (`None` if S3 gave none);
    /// [`RelayError::SourceNotFound`] when it does not exist.
    pub async fn etag(&self, bucket: &str, key: &str) -> Result<Option<String>, RelayError> {
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Memory(m) = &self.backend {
            return m.etag(bucket, key);
        }
        let client = self.client();
        match client.head_object().bucket(bucket).key(key).send().await {
            Ok(h) => Ok(h.e_tag().map(normalize_etag)),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_not_found()) => Err(RelayError::SourceNotFound { bucket: bucket.into(), key: key.into() }),
            Err(e) => Err(s3_err(bucket, key, &e)),
        }
    }
}

#[cfg(any(test, feature = "testing"))]
pub mod memory {
    //! Source objects in memory: bytes and an ETag per write, and reads a test makes
    //! fail part-way (a reset connection) or hang (S3 accepts the request and never
    //! answers).

    use super::Opened;
    use crate::error::RelayError;
    use bytes::Bytes;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    /// How reading an object goes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Body {
        Whole,
        /// Half the bytes, then a read error.
        FailsHalfway,
        /// No answer to GetObject, ever. (A body that stops half-way cannot be told from
        /// this on paused time: tokio holds its clock while the copy's encoder thread
        /// runs, and that thread waits for the rest of the body.)
        Hangs,
    }

    #[derive(Debug, Clone)]
    struct Stored {
        bytes: Bytes,
        etag: String,
        body: Body,
    }

    #[derive(Debug, Default)]
    struct State {
        /// By (bucket, key).
        objects: BTreeMap<(String, String), Stored>,
        versions: u64,
    }

    #[derive(Debug, Clone, Default)]
    pub struct MemorySource {
        state: Arc<Mutex<State>>,
    }

    impl MemorySource {
        fn state(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Writes (or overwrites) an object; returns its new ETag.
        pub fn put(&self, bucket: &str, key: &str, bytes: impl Into<Bytes>) -> String {
            let mut st = self.state();
            st.versions += 1;
            let etag = format!("etag-{}", st.versions);
            st.objects.insert((bucket.into(), key.into()), Stored { bytes: bytes.into(), etag: etag.clone(), body: Body::Whole });
            etag
        }

        /// Makes the object's body behave as `body` from now on.
        pub fn set_body(&self, bucket: &str, key: &str, body: Body) {
            if let Some(o) = self.state().objects.get_mut(&(bucket.to_string(), key.to_string())) {
                o.body = body;
            }
        }

        pub fn remove(&self, bucket: &str, key: &str) {
            self.state().objects.remove(&(bucket.to_string(), key.to_string()));
        }

        fn find(&self, bucket: &str, key: &str) -> Result<Stored, RelayError> {
            let found = self.state().objects.get(&(bucket.to_string(), key.to_string())).cloned();
            found.ok_or_else(|| RelayError::SourceNotFound { bucket: bucket.into(), key: key.into() })
        }

        pub(super) async fn open(&self, bucket: &str, key: &str) -> Result<Opened, RelayError> {
            use futures::StreamExt;
            let Stored { bytes, etag, body } = self.find(bucket, key)?;
            let half = bytes.slice(..bytes.len() / 2);
            let chunks = |b: Bytes| futures::stream::iter([Ok::<_, std::io::Error>(b)]);
            let stream = match body {
                Body::Whole => chunks(bytes).boxed(),
                Body::FailsHalfway => chunks(half).chain(futures::stream::iter([Err(std::io::Error::other("connection reset"))])).boxed(),
                Body::Hangs => std::future::pending().await,
            };
            Ok(Opened { etag, body: Box::pin(tokio_util::io::StreamReader::new(stream)) })
        }

        pub(super) fn etag(&self, bucket: &str, key: &str) -> Result<Option<String>, RelayError> {
            Ok(Some(self.find(bucket, key)?.etag))
        }
    }
}
