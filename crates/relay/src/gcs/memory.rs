//! Buckets in memory behind [`super::Gcs`]: objects with the resource fields the relay
//! reads (size, generation, CRC32C, metadata), generations that grow with every write,
//! create-only writes and generation preconditions as GCS enforces them, and faults a
//! test arms (a failed upload).

use super::Created;
use crate::error::RelayError;
use bytes::Bytes;
use crossdock_core::marker::Crc32c;
use gcloud_storage::http::objects::Object;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The buckets' state, shared by every clone.
#[derive(Clone, Default)]
pub struct MemoryGcs {
    inner: Arc<Mutex<State>>,
    calls: Arc<AtomicUsize>,
}

#[derive(Default)]
struct State {
    /// By (bucket, name): bytes and resource.
    objects: BTreeMap<(String, String), (Vec<u8>, Object)>,
    generation: i64,
    /// Uploads of objects whose name contains the key fail this many more times.
    failing_uploads: Vec<(String, usize)>,
    /// Create-only writes, in order: (bucket, name, created).
    creates: Vec<(String, String, bool)>,
}

impl MemoryGcs {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls made so far, as GCS would bill them (a listing is one per 1,000 objects).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// The next `times` uploads of objects whose name contains `name_part` fail, after
    /// their bytes were sent and before any object exists (a 503 on the last request);
    /// replaces what was armed for `name_part` before (0: none fail).
    pub fn fail_uploads(&self, name_part: &str, times: usize) {
        let mut st = self.state();
        st.failing_uploads.retain(|(part, _)| part != name_part);
        st.failing_uploads.push((name_part.into(), times));
    }

    /// Every create-only write: (bucket, name, whether it created the object).
    pub fn creates(&self) -> Vec<(String, String, bool)> {
        self.state().creates.clone()
    }

    /// The object's bytes and resource, without counting a call.
    pub fn object(&self, bucket: &str, name: &str) -> Option<(Vec<u8>, Object)> {
        self.state().objects.get(&(bucket.to_string(), name.to_string())).cloned()
    }

    /// Names of the objects in `bucket`.
    pub fn names(&self, bucket: &str) -> Vec<String> {
        self.state().objects.keys().filter(|(b, _)| b == bucket).map(|(_, n)| n.clone()).collect()
    }

    /// Stores an object as written by someone else (no failure armed applies).
    pub fn insert(&self, bucket: &str, name: &str, body: Vec<u8>, metadata: Option<HashMap<String, String>>) -> Object {
        self.store(bucket, name, body, None, metadata)
    }

    fn store(&self, bucket: &str, name: &str, body: Vec<u8>, content_type: Option<&str>, metadata: Option<HashMap<String, String>>) -> Object {
        let mut st = self.state();
        st.generation += 1;
        let o = Object {
            bucket: bucket.into(),
            name: name.into(),
            size: body.len() as i64,
            generation: st.generation,
            crc32c: Some(Crc32c::of(&body).to_gcs()),
            content_type: content_type.map(str::to_string),
            metadata,
            ..Default::default()
        };
        st.objects.insert((bucket.into(), name.into()), (body, o.clone()));
        o
    }

    /// Replaces an object's bytes behind the relay's back, keeping its metadata.
    pub fn corrupt(&self, bucket: &str, name: &str) {
        let mut st = self.state();
        if let Some((body, o)) = st.objects.get_mut(&(bucket.to_string(), name.to_string())) {
            if let Some(b) = body.first_mut() {
                *b ^= 0xff;
            }
            o.crc32c = Some(Crc32c::of(body).to_gcs());
        }
    }

    pub(super) fn get(&self, bucket: &str, name: &str) -> Result<Option<Object>, RelayError> {
        self.call();
        Ok(self.object(bucket, name).map(|(_, o)| o))
    }

    pub(super) fn download(&self, bucket: &str, name: &str) -> Result<Option<Vec<u8>>, RelayError> {
        self.call();
        Ok(self.object(bucket, name).map(|(b, _)| b))
    }

    pub(super) fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<Object>, RelayError> {
        let st = self.state();
        let found: Vec<Object> = st.objects.iter().filter(|((b, n), _)| b == bucket && n.starts_with(prefix)).map(|(_, (_, o))| o.clone()).collect();
        self.calls.fetch_add(found.len().div_ceil(1000).max(1), Ordering::Relaxed);
        Ok(found)
    }

    pub(super) fn delete(&self, bucket: &str, name: &str, generation: Option<i64>) -> Result<(), RelayError> {
        self.call();
        let mut st = self.state();
        let key = (bucket.to_string(), name.to_string());
        match (st.objects.get(&key), generation) {
            (Some((_, o)), Some(g)) if o.generation != g => Err(precondition_failed(bucket, name)),
            _ => {
                st.objects.remove(&key);
                Ok(())
            }
        }
    }

    pub(super) fn create(&self, bucket: &str, name: &str, body: Vec<u8>) -> Result<Created, RelayError> {
        self.call();
        let exists = self.object(bucket, name).is_some();
        self.state().creates.push((bucket.into(), name.into(), !exists));
        if exists {
            return Ok(Created::AlreadyExists);
        }
        self.insert(bucket, name, body, None);
        Ok(Created::Created)
    }

    /// The last request of an upload: the object appears, or an armed failure.
    pub(super) fn finish_upload(
        &self,
        bucket: &str,
        name: &str,
        body: Vec<u8>,
        content_type: &str,
        metadata: Option<HashMap<String, String>>,
    ) -> Result<Object, RelayError> {
        self.call();
        {
            let mut st = self.state();
            if let Some((_, left)) = st.failing_uploads.iter_mut().find(|(part, left)| *left > 0 && name.contains(part.as_str())) {
                *left -= 1;
                return Err(RelayError::Gcs { bucket: bucket.into(), key: name.into(), message: "503 Service Unavailable (armed)".into(), retryable: true });
            }
        }
        Ok(self.store(bucket, name, body, Some(content_type), metadata))
    }

    pub(super) fn patch_metadata(&self, bucket: &str, name: &str, generation: i64, metadata: HashMap<String, String>) -> Result<super::Patched, RelayError> {
        self.call();
        let mut st = self.state();
        match st.objects.get_mut(&(bucket.to_string(), name.to_string())) {
            Some((_, o)) if o.generation == generation => {
                o.metadata = Some(metadata);
                Ok(super::Patched::Applied)
            }
            _ => Err(precondition_failed(bucket, name)),
        }
    }

    pub(super) fn session(&self, bucket: &str, name: &str, content_type: &str) -> Session {
        self.call();
        Session { gcs: self.clone(), bucket: bucket.into(), name: name.into(), content_type: content_type.into(), received: Vec::new() }
    }
}

fn precondition_failed(bucket: &str, name: &str) -> RelayError {
    RelayError::Gcs { bucket: bucket.into(), key: name.into(), message: "412 Precondition Failed".into(), retryable: false }
}

/// A resumable upload in memory: the bytes received so far; nothing is an object until
/// the last request.
pub struct Session {
    gcs: MemoryGcs,
    bucket: String,
    name: String,
    content_type: String,
    received: Vec<u8>,
}

impl Session {
    pub(super) fn put(&mut self, offset: u64, data: Bytes, total: Option<u64>) -> Result<Option<Object>, RelayError> {
        if offset != self.received.len() as u64 {
            return Err(RelayError::Gcs {
                bucket: self.bucket.clone(),
                key: self.name.clone(),
                message: format!("chunk at {offset}, session has {} bytes", self.received.len()),
                retryable: false,
            });
        }
        self.received.extend_from_slice(&data);
        match total {
            None => {
                self.gcs.call();
                Ok(None)
            }
            Some(_) => {
                let body = std::mem::take(&mut self.received);
                self.gcs.finish_upload(&self.bucket, &self.name, body, &self.content_type, None).map(Some)
            }
        }
    }
}
