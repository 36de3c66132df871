//! The log's way out: every line goes through a bounded queue to a thread
//! of its own that writes it to stderr, so that a reader of stderr that
//! stalls (a log collector that stopped reading its pipe) blocks no shard
//! and no admin request. When the queue is full, new lines are dropped and
//! counted ([`dropped`]: `log_lines_dropped` in `/stats`,
//! `monconn_forwarder_log_lines_dropped` in `/metrics`).
//!
//! The queue is bounded in bytes as well as in lines: one hex dump
//! (`print_bytes`) of a 64 KiB read is a line of some 280 KB, and a queue of
//! lines alone could hold gigabytes of them. `tracing-appender`'s
//! non-blocking writer bounds lines only, hence this one.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// The most bytes of log waiting for stderr; past that, lines are dropped.
const MAX_BYTES: usize = 8 * 1024 * 1024;

/// The most lines waiting for stderr.
const MAX_LINES: usize = 16 * 1024;

/// Bytes queued and not yet written.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// Lines dropped since the start.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines were dropped because stderr did not keep up: here,
/// and as hex dumps (`print_bytes`) that the library's dump queue dropped
/// before they were formatted ([`monconn::tap::dumps_lost`]).
pub fn dropped() -> u64 {
    DROPPED.load(Relaxed) + monconn::tap::dumps_lost()
}

/// The writer the subscriber writes each formatted event to: a handle on
/// the queue. Writes never block and never fail.
#[derive(Debug)]
pub struct Queue {
    lines: SyncSender<Vec<u8>>,
}

impl Queue {
    /// Starts the thread that writes the queue to stderr.
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn start() -> io::Result<Queue> {
        let (lines, queued) = sync_channel(MAX_LINES);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_out(&queued))?;
        Ok(Queue { lines })
    }
}

/// Writes queued lines to stderr, as many at a time as are waiting.
fn write_out(queued: &Receiver<Vec<u8>>) {
    while let Ok(line) = queued.recv() {
        let mut stderr = io::stderr().lock();
        let mut next = Some(line);
        while let Some(line) = next {
            // Nothing to do about an error: the line is gone either way.
            let _ = stderr.write_all(&line);
            PENDING.fetch_sub(line.len(), Relaxed);
            next = queued.try_recv().ok();
        }
    }
}

/// Waits, up to `limit`, for the queued lines to be written (on exit).
pub fn flush(limit: Duration) {
    let deadline = Instant::now() + limit;
    while PENDING.load(Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

// === impl Queue ===

impl<'a> MakeWriter<'a> for Queue {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line(&self.lines)
    }
}

/// One event's writer.
#[derive(Debug)]
pub struct Line<'a>(&'a SyncSender<Vec<u8>>);

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = buf.len();
        let queued = PENDING.fetch_add(len, Relaxed) + len <= MAX_BYTES
            && self.0.try_send(buf.to_vec()).is_ok();
        if !queued {
            PENDING.fetch_sub(len, Relaxed);
            DROPPED.fetch_add(1, Relaxed);
        }
        Ok(len)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_and_counts() {
        // A queue nobody empties.
        let (lines, _queued) = sync_channel(2);
        let before = dropped();
        let mut line = Line(&lines);
        for _ in 0..3 {
            assert_eq!(line.write(b"a line\n").unwrap(), 7);
        }
        assert_eq!(dropped() - before, 1);
        // Over the byte budget: dropped whatever the room in lines.
        let (lines, _queued) = sync_channel(2);
        let big = vec![b'x'; MAX_BYTES + 1];
        assert_eq!(Line(&lines).write(&big).unwrap(), big.len());
        assert_eq!(dropped() - before, 2);
    }
}
