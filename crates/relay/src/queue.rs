//! The SQS side of the relay: receive (long poll), change a message's visibility,
//! delete in batches, and the queue's visibility timeout; against SQS or, in tests, a
//! queue in memory ([`Queue::memory`]) that keeps every message's fate.

#[cfg(any(test, feature = "testing"))]
pub mod memory;

use crate::error::RelayError;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};

/// The relay's queue.
#[derive(Debug, Clone)]
pub struct Queue {
    url: String,
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqs(aws_sdk_sqs::Client),
    #[cfg(any(test, feature = "testing"))]
    Memory(memory::MemoryQueue),
}

/// A received message.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub receipt: String,
    pub body: String,
    /// When it was sent (ms since the epoch), for the lag metric.
    pub sent_ms: Option<u64>,
}

fn sqs_message<E: std::error::Error + 'static, R: std::fmt::Debug>(e: &aws_sdk_sqs::error::SdkError<E, R>) -> String {
    aws_sdk_sqs::error::DisplayErrorContext(e).to_string()
}

impl Queue {
    /// The remote client (the memory backend answers before any client call).
    fn client(&self) -> &aws_sdk_sqs::Client {
        match &self.backend {
            Backend::Sqs(c) => c,
            #[cfg(any(test, feature = "testing"))]
            Backend::Memory(_) => unreachable!("the memory backend answers before any client call"),
        }
    }

    pub fn sqs(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Queue {
        Queue { url: url.into(), backend: Backend::Sqs(client) }
    }

    /// An empty queue in memory, and the handle that sends to it and inspects it.
    #[cfg(any(test, feature = "testing"))]
    pub fn memory() -> (Queue, memory::MemoryQueue) {
        let m = memory::MemoryQueue::default();
        (Queue { url: "memory://queue".into(), backend: Backend::Memory(m.clone()) }, m)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The queue's own visibility timeout in seconds (`None` if it does not say).
    pub async fn visibility_timeout(&self) -> Result<Option<u32>, RelayError> {
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Memory(_) = &self.backend {
            return Ok(None);
        }
        let client = self.client();
        let attrs =
            client.get_queue_attributes().queue_url(&self.url).attribute_names(QueueAttributeName::VisibilityTimeout).send().await.map_err(|e| {
                match e.as_service_error() {
                    Some(se) if se.is_queue_does_not_exist() => RelayError::QueueNotFound { queue: self.url.clone() },
                    _ => RelayError::Sqs { queue: self.url.clone(), message: sqs_message(&e) },
                }
            })?;
        Ok(attrs.attributes().and_then(|a| a.get(&QueueAttributeName::VisibilityTimeout)).and_then(|v| v.parse().ok()))
    }

    /// Up to `max` messages, waiting up to `wait_secs` for one, hidden from other
    /// receivers for `visibility` seconds.
    pub async fn receive(&self, max: usize, wait_secs: u32, visibility: u32) -> Result<Vec<Received>, String> {
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Memory(m) = &self.backend {
            return Ok(m.receive(max, wait_secs, visibility).await);
        }
        let client = self.client();
        let out = client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max as i32)
            .wait_time_seconds(wait_secs as i32)
            .visibility_timeout(visibility as i32)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| sqs_message(&e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let sent_ms = m.attributes().and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp)).and_then(|t| t.parse::<u64>().ok());
                let receipt = m.receipt_handle?;
                let id = m.message_id.unwrap_or_else(|| receipt.chars().take(16).collect());
                Some(Received { id, receipt, body: m.body.unwrap_or_default(), sent_ms })
            })
            .collect())
    }

    /// Hides the message for `secs` more seconds from now (0: visible at once).
    pub async fn set_visibility(&self, receipt: &str, secs: u32) -> Result<(), String> {
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Memory(m) = &self.backend {
            return m.set_visibility(receipt, secs);
        }
        let client = self.client();
        let call = client.change_message_visibility().queue_url(&self.url).receipt_handle(receipt).visibility_timeout(secs as i32).send();
        call.await.map(|_| ()).map_err(|e| sqs_message(&e))
    }

    /// Deletes the messages of `receipts` (at most 10); returns the ones not deleted, by
    /// index, with the reason.
    pub async fn delete_batch(&self, receipts: &[&str]) -> Result<Vec<(usize, String)>, String> {
        #[cfg(any(test, feature = "testing"))]
        if let Backend::Memory(m) = &self.backend {
            return Ok(m.delete_batch(receipts));
        }
        let client = self.client();
        let entries: Vec<DeleteMessageBatchRequestEntry> = receipts
            .iter()
            .enumerate()
            .filter_map(|(i, receipt)| DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(*receipt).build().ok())
            .collect();
        let out = client.delete_message_batch().queue_url(&self.url).set_entries(Some(entries)).send().await.map_err(|e| sqs_message(&e))?;
        Ok(out.failed().iter().map(|f| (f.id().parse::<usize>().unwrap_or(usize::MAX), f.message().unwrap_or(f.code()).to_string())).collect())
    }
}
