//! A hub's recent console output, shared by its sessions: a ring of at most [`RING_BYTES`]
//! bytes at absolute offsets. The hub's reader thread appends and never waits; each session
//! reads from its own offset, as much as is there (up to what it asks for) in one piece, and
//! one that falls more than the ring holds behind is told it lagged.
//!
//! The bound is in bytes, not in chunks: a guest printing line by line hands libvirt's stream
//! many small pieces, and a session that is briefly descheduled on a busy node must not count
//! as slow for a few hundred short lines.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Most output kept per hub; a session further behind than this has lost output.
pub const RING_BYTES: usize = 1024 * 1024;

/// The ring and the offset of its first byte.
#[derive(Debug, Default)]
struct Ring {
    data: VecDeque<u8>,
    /// Absolute offset of `data[0]` (bytes published before it are gone).
    start: u64,
    closed: bool,
}

impl Ring {
    fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }
}

/// One hub's output. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct OutputRing {
    ring: Mutex<Ring>,
    capacity: usize,
    /// The end offset, to wake readers waiting for more.
    published: watch::Sender<u64>,
}

/// Why a session cannot read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// Output the session had not read yet was overwritten.
    Lagged,
    /// The hub closed and everything published was read.
    Closed,
}

impl OutputRing {
    /// An empty ring of [`RING_BYTES`].
    pub fn new() -> Arc<Self> {
        Self::with_capacity(RING_BYTES)
    }

    /// An empty ring holding at most `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            ring: Mutex::new(Ring::default()),
            capacity: capacity.max(1),
            published: watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `bytes`, dropping the oldest output beyond the capacity; never waits for a
    /// reader.
    pub fn publish(&self, bytes: &[u8]) {
        let end = {
            let mut ring = self.lock();
            ring.data.extend(bytes);
            let excess = ring.data.len().saturating_sub(self.capacity);
            if excess > 0 {
                ring.data.drain(..excess);
                ring.start += excess as u64;
            }
            ring.end()
        };
        self.published.send_replace(end);
    }

    /// Marks the output finished: readers get [`ReadError::Closed`] once they have read it.
    pub fn close(&self) {
        let end = {
            let mut ring = self.lock();
            ring.closed = true;
            ring.end()
        };
        self.published.send_modify(|v| *v = end);
    }

    /// A reader of everything published from now on.
    pub fn reader(self: &Arc<Self>) -> OutputReader {
        let offset = self.lock().end();
        OutputReader {
            ring: self.clone(),
            offset,
            published: self.published.subscribe(),
        }
    }
}

/// One session's place in a hub's output.
#[derive(Debug)]
pub struct OutputReader {
    ring: Arc<OutputRing>,
    offset: u64,
    published: watch::Receiver<u64>,
}

impl OutputReader {
    /// What is there to read now, at most `max` bytes, or `None`.
    ///
    /// # Errors
    /// [`ReadError::Lagged`] when output this reader had not read was overwritten,
    /// [`ReadError::Closed`] when the hub closed and everything was read.
    pub fn try_next(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        let ring = self.ring.lock();
        if self.offset < ring.start {
            return Err(ReadError::Lagged);
        }
        let end = ring.end();
        if self.offset == end {
            return if ring.closed {
                Err(ReadError::Closed)
            } else {
                Ok(None)
            };
        }
        let from = (self.offset - ring.start) as usize;
        let len = ((end - self.offset) as usize).min(max.max(1));
        let bytes: Vec<u8> = ring.data.range(from..from + len).copied().collect();
        self.offset += len as u64;
        Ok(Some(Bytes::from(bytes)))
    }

    /// Waits for output and returns as much as is there, at most `max` bytes. Cancel-safe:
    /// nothing is consumed unless it returns.
    ///
    /// # Errors
    /// As [`Self::try_next`].
    pub async fn next(&mut self, max: usize) -> Result<Bytes, ReadError> {
        loop {
            // Seen before looking, so a publish after the look wakes the wait below.
            self.published.borrow_and_update();
            if let Some(bytes) = self.try_next(max)? {
                return Ok(bytes);
            }
            if self.published.changed().await.is_err() {
                return Err(ReadError::Closed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_output_from_when_they_joined_in_pieces_of_what_they_ask() {
        let ring = OutputRing::with_capacity(16);
        ring.publish(b"before");
        let mut reader = ring.reader();
        assert_eq!(reader.try_next(8), Ok(None));
        ring.publish(b"abc");
        ring.publish(b"defgh");
        assert_eq!(reader.try_next(5), Ok(Some(Bytes::from_static(b"abcde"))));
        assert_eq!(reader.try_next(64), Ok(Some(Bytes::from_static(b"fgh"))));
        assert_eq!(reader.try_next(64), Ok(None));
    }

    #[test]
    fn a_reader_further_behind_than_the_ring_lagged_and_others_read_on() {
        let ring = OutputRing::with_capacity(8);
        let mut slow = ring.reader();
        let mut fast = ring.reader();
        ring.publish(b"12345");
        assert_eq!(fast.try_next(64), Ok(Some(Bytes::from_static(b"12345"))));
        ring.publish(b"6789");
        assert_eq!(slow.try_next(64), Err(ReadError::Lagged));
        assert_eq!(fast.try_next(64), Ok(Some(Bytes::from_static(b"6789"))));
        // What was kept stays bounded.
        ring.publish(&[b'x'; 100]);
        assert_eq!(ring.lock().data.len(), 8);
        assert_eq!(fast.try_next(64), Err(ReadError::Lagged));
    }

    #[test]
    fn a_closed_ring_is_read_to_its_end_then_closed() {
        let ring = OutputRing::with_capacity(8);
        let mut reader = ring.reader();
        ring.publish(b"bye");
        ring.close();
        assert_eq!(reader.try_next(64), Ok(Some(Bytes::from_static(b"bye"))));
        assert_eq!(reader.try_next(64), Err(ReadError::Closed));
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_output_and_for_the_close() {
        let ring = OutputRing::with_capacity(64);
        let mut reader = ring.reader();
        let writer = ring.clone();
        let waiting = tokio::spawn(async move {
            let first = reader.next(64).await;
            let second = reader.next(64).await;
            (first, second)
        });
        tokio::task::yield_now().await;
        writer.publish(b"hello");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        writer.close();
        let (first, second) = waiting.await.unwrap();
        assert_eq!(first, Ok(Bytes::from_static(b"hello")));
        assert_eq!(second, Err(ReadError::Closed));
    }
}
