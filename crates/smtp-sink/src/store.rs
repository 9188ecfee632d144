//! The mailbox: accepted messages in arrival order, at most `max_messages` of them (the
//! oldest is dropped first), each summarized once on arrival and optionally also written
//! to `<dir>/<id>.eml`.
//!
//! Ids count up from one more than the highest `<n>.eml` already in the directory (or 1),
//! so restarting the sink on the same directory never overwrites earlier mail.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::mime::{self, Summary};

/// One message accepted by the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Sequence number, in the order messages were accepted (the API's `ID`, as text).
    pub id: usize,
    /// The reverse path given in `MAIL FROM` (empty for the null sender `<>`).
    pub from: String,
    /// The forward paths given in `RCPT TO` and accepted, in order.
    pub recipients: Vec<String>,
    /// The message content as received, with dot-stuffing removed and the
    /// terminating `.` line excluded. Line endings are kept as sent.
    pub data: Vec<u8>,
}

impl Message {
    /// The content as text (invalid UTF-8 is replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The raw value of the first header called `name` (case-insensitive), with
    /// folded continuation lines joined by a single space. Not decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if line.is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(value) = current.as_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            if current.is_some() {
                break;
            }
            if let Some((key, value)) = line.split_once(':')
                && key.trim().eq_ignore_ascii_case(name)
            {
                current = Some(value.trim().to_string());
            }
        }
        current
    }

    /// The `Subject` header, with RFC 2047 encoded words decoded.
    pub fn subject(&self) -> Option<String> {
        mime::subject(&self.data).or_else(|| self.header("Subject"))
    }

    /// Everything after the blank line that ends the header section, undecoded.
    pub fn body(&self) -> String {
        let text = self.text();
        for separator in ["\r\n\r\n", "\n\n"] {
            if let Some(index) = text.find(separator) {
                return text[index + separator.len()..].to_string();
            }
        }
        String::new()
    }

    /// The decoded text body: the first `text/plain` part, else the HTML body as text.
    pub fn text_body(&self) -> Option<String> {
        mime::text_body(&self.data)
    }

    /// The decoded first `text/html` part.
    pub fn html_body(&self) -> Option<String> {
        mime::html_body(&self.data)
    }
}

/// A stored message with what the API shows about it.
pub(crate) struct Entry {
    pub message: Message,
    pub received: SystemTime,
    pub read: AtomicBool,
    pub summary: Summary,
}

impl Entry {
    pub(crate) fn api_id(&self) -> String {
        self.message.id.to_string()
    }

    pub(crate) fn is_read(&self) -> bool {
        self.read.load(Ordering::Relaxed)
    }

    pub(crate) fn set_read(&self, read: bool) {
        self.read.store(read, Ordering::Relaxed);
    }
}

pub(crate) struct Mailbox {
    entries: Mutex<VecDeque<Arc<Entry>>>,
    arrived: Condvar,
    /// Held while a message is numbered and written, so ids, files and order agree.
    next_id: Mutex<usize>,
    max_messages: usize,
    dir: Option<PathBuf>,
}

impl Mailbox {
    /// A mailbox keeping at most `max_messages` (at least one), writing to `dir` if given.
    pub(crate) fn open(max_messages: usize, dir: Option<PathBuf>) -> io::Result<Mailbox> {
        let mut last_id = 0;
        if let Some(dir) = &dir {
            fs::create_dir_all(dir).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot create directory {}: {error}", dir.display()),
                )
            })?;
            last_id = highest_eml_number(dir)?;
        }
        Ok(Mailbox {
            entries: Mutex::new(VecDeque::new()),
            arrived: Condvar::new(),
            next_id: Mutex::new(last_id + 1),
            max_messages: max_messages.max(1),
            dir,
        })
    }

    fn entries(&self) -> MutexGuard<'_, VecDeque<Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number, summarize, write and keep a message; returns it.
    pub(crate) fn store(&self, from: String, recipients: Vec<String>, data: Vec<u8>) -> Message {
        // Parse outside every lock: it is the expensive part.
        let summary = mime::summarize(&data, &recipients);
        let message = {
            let mut next_id = self.next_id.lock().unwrap_or_else(PoisonError::into_inner);
            let message = Message {
                id: *next_id,
                from,
                recipients,
                data,
            };
            *next_id += 1;
            if let Some(dir) = &self.dir {
                let path = dir.join(format!("{}.eml", message.id));
                if let Err(error) = fs::write(&path, &message.data) {
                    eprintln!("smtp-sink: could not write {}: {error}", path.display());
                }
            }
            let entry = Arc::new(Entry {
                message: message.clone(),
                received: SystemTime::now(),
                read: AtomicBool::new(false),
                summary,
            });
            let mut entries = self.entries();
            entries.push_back(entry);
            while entries.len() > self.max_messages {
                entries.pop_front();
            }
            message
        };
        self.arrived.notify_all();
        message
    }

    /// All entries, oldest first.
    pub(crate) fn entries_oldest_first(&self) -> Vec<Arc<Entry>> {
        self.entries().iter().cloned().collect()
    }

    /// The entry with API id `id`; `latest` names the newest.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Entry>> {
        let entries = self.entries();
        if id == "latest" {
            return entries.back().cloned();
        }
        let id: usize = id.parse().ok()?;
        // Ids grow with position, so a binary search finds it even after deletions.
        let index = entries
            .binary_search_by_key(&id, |entry| entry.message.id)
            .ok()?;
        entries.get(index).cloned()
    }

    pub(crate) fn messages(&self) -> Vec<Message> {
        self.entries()
            .iter()
            .map(|entry| entry.message.clone())
            .collect()
    }

    /// Remove the entries whose numeric ids are in `ids`; how many were removed.
    pub(crate) fn delete(&self, ids: &[usize]) -> usize {
        let mut entries = self.entries();
        let before = entries.len();
        entries.retain(|entry| !ids.contains(&entry.message.id));
        before - entries.len()
    }

    pub(crate) fn clear(&self) {
        self.entries().clear();
    }

    /// Wait until at least `count` messages are kept or `timeout` passed; all kept messages.
    pub(crate) fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        let mut entries = self.entries();
        while entries.len() < count {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            entries = self
                .arrived
                .wait_timeout(entries, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        entries.iter().map(|entry| entry.message.clone()).collect()
    }
}

/// The largest `n` of the files `<n>.eml` in `dir` (0 if none).
fn highest_eml_number(dir: &Path) -> io::Result<usize> {
    let mut highest = 0;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "eml")
            && let Some(number) = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .and_then(|stem| stem.parse::<usize>().ok())
        {
            highest = highest.max(number);
        }
    }
    Ok(highest)
}

/// Read all `*.eml` files from `dir`, sorted by their numeric name.
pub fn read_dir_messages(dir: &Path) -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "eml") {
            let data = fs::read(&path)?;
            files.push((path, data));
        }
    }
    files.sort_by_key(|(path, _)| {
        path.file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_headers_and_body() {
        let message = Message {
            id: 1,
            from: "a@b".into(),
            recipients: vec!["c@d".into()],
            data: b"From: a@b\r\nSubject: Hello\r\n  world\r\nX-Other: 1\r\n\r\nBody line\r\n"
                .to_vec(),
        };
        assert_eq!(message.header("subject").as_deref(), Some("Hello world"));
        assert_eq!(message.subject().as_deref(), Some("Hello world"));
        assert_eq!(message.header("x-other").as_deref(), Some("1"));
        assert_eq!(message.header("missing"), None);
        assert_eq!(message.body(), "Body line\r\n");
        assert_eq!(message.text_body().as_deref(), Some("Body line\r\n"));
    }

    #[test]
    fn oldest_messages_are_dropped_beyond_the_limit() {
        let mailbox = Mailbox::open(2, None).unwrap();
        for n in 1..=3 {
            mailbox.store(
                "a@b".into(),
                vec!["c@d".into()],
                format!("Subject: {n}\r\n\r\n").into(),
            );
        }
        let ids: Vec<usize> = mailbox.messages().iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![2, 3]);
        assert!(mailbox.get("1").is_none());
        assert_eq!(mailbox.get("latest").map(|e| e.message.id), Some(3));
        assert_eq!(mailbox.delete(&[2, 99]), 1);
        assert_eq!(mailbox.get("3").map(|e| e.message.id), Some(3));
    }

    #[test]
    fn numbering_continues_after_files_already_in_the_directory() {
        let dir = std::env::temp_dir().join(format!("smtp-sink-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("7.eml"), b"old").unwrap();
        fs::write(dir.join("notes.txt"), b"ignored").unwrap();
        let mailbox = Mailbox::open(10, Some(dir.clone())).unwrap();
        let message = mailbox.store("a@b".into(), vec!["c@d".into()], b"new".to_vec());
        assert_eq!(message.id, 8);
        assert_eq!(fs::read(dir.join("7.eml")).unwrap(), b"old");
        assert_eq!(fs::read(dir.join("8.eml")).unwrap(), b"new");
        let _ = fs::remove_dir_all(&dir);
    }
}
