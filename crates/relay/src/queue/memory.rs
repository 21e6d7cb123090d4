//! A queue in memory with SQS's visibility rules: a received message is hidden until its
//! visibility runs out (on tokio's clock, so paused-time tests are exact), each receive
//! gives it a new receipt, and only the current receipt changes or deletes it. Every
//! message keeps its history: receives, visibility changes, deletion.

use super::Received;
use std::sync::{Arc, Mutex};
use tokio::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
pub struct MemoryQueue {
    inner: Arc<Mutex<State>>,
    sent: Arc<tokio::sync::Notify>,
}

#[derive(Debug, Default)]
struct State {
    messages: Vec<Message>,
}

#[derive(Debug)]
struct Message {
    id: String,
    body: String,
    visible_at: Option<Instant>,
    receipt: Option<String>,
    receives: u32,
    visibility_changes: Vec<u32>,
    deleted: bool,
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fate {
    pub receives: u32,
    /// Every visibility change asked for, in seconds, in order (heartbeats, retries,
    /// releases).
    pub visibility_changes: Vec<u32>,
    pub deleted: bool,
}

impl MemoryQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a message; returns its id.
    pub fn send(&self, body: impl Into<String>) -> String {
        let mut st = self.state();
        let id = format!("m{}", st.messages.len());
        st.messages.push(Message {
            id: id.clone(),
            body: body.into(),
            visible_at: None,
            receipt: None,
            receives: 0,
            visibility_changes: Vec::new(),
            deleted: false,
        });
        drop(st);
        self.sent.notify_waiters();
        id
    }

    /// The message's history so far.
    pub fn fate(&self, id: &str) -> Option<Fate> {
        let st = self.state();
        st.messages.iter().find(|m| m.id == id).map(|m| Fate { receives: m.receives, visibility_changes: m.visibility_changes.clone(), deleted: m.deleted })
    }

    /// Messages not deleted.
    pub fn remaining(&self) -> usize {
        self.state().messages.iter().filter(|m| !m.deleted).count()
    }

    pub(super) async fn receive(&self, max: usize, wait_secs: u32, visibility: u32) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(u64::from(wait_secs));
        loop {
            let sent = self.sent.notified();
            let now = Instant::now();
            let next_visible = {
                let mut st = self.state();
                let mut out = Vec::new();
                for m in st.messages.iter_mut().filter(|m| !m.deleted && m.visible_at.is_none_or(|t| t <= now)).take(max) {
                    m.receives += 1;
                    let receipt = format!("{}-r{}", m.id, m.receives);
                    m.receipt = Some(receipt.clone());
                    m.visible_at = Some(now + Duration::from_secs(u64::from(visibility)));
                    out.push(Received { id: m.id.clone(), receipt, body: m.body.clone(), sent_ms: None });
                }
                if !out.is_empty() {
                    return out;
                }
                st.messages.iter().filter(|m| !m.deleted).filter_map(|m| m.visible_at).min()
            };
            if now >= deadline {
                return Vec::new();
            }
            let until = next_visible.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = sent => {}
            }
        }
    }

    fn current<'a>(st: &'a mut State, receipt: &str) -> Result<&'a mut Message, String> {
        st.messages
            .iter_mut()
            .find(|m| !m.deleted && m.receipt.as_deref() == Some(receipt))
            .ok_or_else(|| format!("ReceiptHandleIsInvalid: {receipt} is not the message's current receipt"))
    }

    pub(super) fn set_visibility(&self, receipt: &str, secs: u32) -> Result<(), String> {
        let mut st = self.state();
        let m = Self::current(&mut st, receipt)?;
        m.visibility_changes.push(secs);
        m.visible_at = Some(Instant::now() + Duration::from_secs(u64::from(secs)));
        drop(st);
        self.sent.notify_waiters();
        Ok(())
    }

    pub(super) fn delete_batch(&self, receipts: &[&str]) -> Vec<(usize, String)> {
        let mut st = self.state();
        let mut failed = Vec::new();
        for (i, receipt) in receipts.iter().enumerate() {
            match Self::current(&mut st, receipt) {
                Ok(m) => m.deleted = true,
                Err(why) => failed.push((i, why)),
            }
        }
        failed
    }
}
