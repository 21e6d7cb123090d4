//! The loader's data path up to the writers: each file is downloaded and checked
//! whole (stored CRC32C, size + sha256, before any of its rows is written), then converted on a
//! blocking thread into chunks of rows that flow through a bounded channel while the
//! next file downloads. Memory stays at about two files' raw bytes plus a few chunks,
//! whatever the part size, and writers never wait at file boundaries.

use crate::error::LoadError;
use crate::marker::{read_part, Marker};
use crate::progress::Reject;
use crate::rowparse::RowParser;
use crate::schema::{Row, TableModel, TargetKind};
use crate::sink::pgcopy::{self, CopyRows};
use bytes::BytesMut;
use crossdock_core::item::parse_line;
use crossdock_core::marker::MarkerFile;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A chunk ends after this many lines or [`CHUNK_BYTES`] of them, whichever comes
/// first: big enough to amortise a channel hop and to let a batch (at most one chunk)
/// grow where a target likes large ones (a COPY transaction), small enough to keep
/// every writer busy and memory bounded whatever the row size.
pub const CHUNK_LINES: usize = 32_768;
pub const CHUNK_BYTES: usize = 4 << 20;
/// Chunks buffered between the converter and the writers.
pub const CHUNKS_AHEAD: usize = 4;

/// What the writers receive, in file order.
pub enum Msg {
    /// Rows and rejects of the next lines of file `file` (an index into the to-do
    /// list); `last` on the file's final chunk (which may be empty).
    Chunk { file: usize, rows: Rows, rejects: Vec<Reject>, last: bool },
    /// File `file` could not be read (missing, corrupt); nothing follows.
    Failed { file: usize, error: LoadError },
}

/// Converted rows: cells, or binary COPY tuples for a target that
/// [takes them](crate::sink::Target::takes_copy).
pub enum Rows {
    Cells(std::vec::IntoIter<Row>),
    Copy(CopyRows),
}

impl Rows {
    /// Takes the next `n` rows (fewer at the end).
    pub fn take_front(&mut self, n: usize) -> Rows {
        match self {
            Rows::Cells(rows) => Rows::Cells(rows.by_ref().take(n).collect::<Vec<_>>().into_iter()),
            Rows::Copy(rows) => Rows::Copy(rows.take_front(n)),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Rows::Cells(rows) => rows.len(),
            Rows::Copy(rows) => rows.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A chunk's rows as they are built.
enum Building {
    Cells(Vec<Row>),
    Copy { tuples: BytesMut, ends: Vec<usize> },
}

impl Building {
    fn new(copy: bool) -> Building {
        if copy {
            Building::Copy { tuples: BytesMut::with_capacity(CHUNK_BYTES), ends: Vec::new() }
        } else {
            Building::Cells(Vec::new())
        }
    }

    /// Converts `text` on the fast path; `false` if the checked path must decide.
    fn push_fast(&mut self, parser: &mut RowParser, text: &str) -> bool {
        match self {
            Building::Cells(rows) => parser.parse(text).map(|row| rows.push(row)).is_some(),
            Building::Copy { tuples, ends } => {
                parser.parse_copy(text, tuples) && {
                    ends.push(tuples.len());
                    true
                }
            }
        }
    }

    /// Adds a row the checked path built; an error if it cannot be encoded.
    fn push(&mut self, model: &TableModel, row: Row) -> Result<(), String> {
        match self {
            Building::Cells(rows) => rows.push(row),
            Building::Copy { tuples, ends } => {
                pgcopy::put_row(model, &row, tuples)?;
                ends.push(tuples.len());
            }
        }
        Ok(())
    }

    fn finish(self) -> Rows {
        match self {
            Building::Cells(rows) => Rows::Cells(rows.into_iter()),
            Building::Copy { tuples, ends } => Rows::Copy(CopyRows::new(tuples.freeze(), ends)),
        }
    }
}

/// Converts `raw` (one file, already checked) into chunks sent on `tx`, as binary COPY
/// tuples when `copy`. Returns early if the receiver is gone.
pub fn convert_file(model: &TableModel, copy: bool, name: &str, file: usize, raw: &[u8], tx: &mpsc::Sender<Msg>) {
    // Bigtable needs a row key it can build; other targets take any row.
    let check = |row: &Row| -> Result<(), String> {
        if model.target == TargetKind::Bigtable {
            crate::sink::bigtable::row_key(model, row).map(|_| ())
        } else {
            Ok(())
        }
    };
    let mut parser = RowParser::new(model);
    let (mut rows, mut rejects) = (Building::new(copy), Vec::new());
    let (mut lines_in_chunk, mut bytes_in_chunk) = (0, 0);
    for (i, line) in raw.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let n = i as u64 + 1;
        let reject = |reason: String| Reject { file: name.into(), line: n, reason, item: String::from_utf8_lossy(line).into_owned() };
        lines_in_chunk += 1;
        bytes_in_chunk += line.len();
        match std::str::from_utf8(line) {
            Err(_) => rejects.push(reject("not UTF-8".into())),
            Ok(text) if rows.push_fast(&mut parser, text) => {}
            Ok(text) => {
                let row = match parser.parse(text) {
                    Some(row) => Ok(row),
                    None => parse_line(text, n).map_err(|e| e.to_string()).and_then(|item| model.into_row(item)),
                };
                if let Err(reason) = row.and_then(|row| check(&row).map(|_| row)).and_then(|row| rows.push(model, row)) {
                    rejects.push(reject(reason));
                }
            }
        }
        if lines_in_chunk == CHUNK_LINES || bytes_in_chunk >= CHUNK_BYTES {
            let chunk =
                Msg::Chunk { file, rows: std::mem::replace(&mut rows, Building::new(copy)).finish(), rejects: std::mem::take(&mut rejects), last: false };
            if tx.blocking_send(chunk).is_err() {
                return;
            }
            (lines_in_chunk, bytes_in_chunk) = (0, 0);
        }
    }
    let _ = tx.blocking_send(Msg::Chunk { file, rows: rows.finish(), rejects, last: true });
}

/// Reads and converts `todo` in order, one file downloading while the previous one
/// converts. Stops when `stop` is set or the writers are gone.
pub async fn produce(marker: &Marker, todo: &[&MarkerFile], model: Arc<TableModel>, copy: bool, tx: mpsc::Sender<Msg>, stop: &AtomicBool) {
    let mut converting: Option<(usize, tokio::task::JoinHandle<()>)> = None;
    let finish = |converting: Option<(usize, tokio::task::JoinHandle<()>)>| {
        let tx = tx.clone();
        async move {
            if let Some((file, handle)) = converting {
                if let Err(e) = handle.await {
                    let error = LoadError::Config(format!("converting file {} failed: {e}", todo[file].name));
                    let _ = tx.send(Msg::Failed { file, error }).await;
                    return false;
                }
            }
            true
        }
    };
    for (file, f) in todo.iter().enumerate() {
        if stop.load(Ordering::Relaxed) || tx.is_closed() {
            break;
        }
        let raw = read_part(marker, f).await;
        if !finish(converting.take()).await {
            return;
        }
        match raw {
            Ok(raw) => {
                let (model, tx, name) = (model.clone(), tx.clone(), f.name.clone());
                converting = Some((file, tokio::task::spawn_blocking(move || convert_file(&model, copy, &name, file, &raw, &tx))));
            }
            Err(error) => {
                let _ = tx.send(Msg::Failed { file, error }).await;
                return;
            }
        }
    }
    finish(converting).await;
}
