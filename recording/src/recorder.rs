//! The live recorder of one session: an in-process subscriber of the agent's media that sits in
//! front of the fan-out (design.md "Evidence").
//!
//! `take` is called with every RTP packet before any viewer gets it; a packet the recorder did
//! not take is not forwarded, so no viewer sees a frame the recording lacks. Frames and timeline
//! entries collect in memory for about a second, then the chunk goes to a writer thread that
//! encrypts, stores and syncs it and signs its manifest line. When writing fails the recorder
//! stops taking packets at once and retries; it reports each change of state, and gives up after
//! `RECOVERY_LIMIT`, so the session pauses and then ends instead of running unrecorded.
//!
//! A chunk holds the VP8 frames reassembled from the `record` track (from a keyframe on) and the
//! timeline entries the session notes: every session event as the audit log has it (the signed
//! consent receipts included), chat lines as each side got them, input counts per second and
//! kind (never keys or positions), and the agent's seals. Every `chunk_every` (the relay's
//! `--recording-chunk-ms`) the writer thread encrypts the chunk to the auditors' keys, writes it
//! and appends its manifest line (SHA-256 of the plaintext, size, frames; chained to the previous
//! line and signed, see `files`), then reports it; the session puts the same hash in the audit
//! log. A failed write, or a volume below `--recording-min-free-mb`, stalls the recorder. `close`
//! ends the manifest with the session's end reason.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sightline_core::recording::{Chunk, ChunkItem, ManifestBody, RecordedFrame, TimelineEntry};
use sightline_peer::RtpPacket;
use sightline_peer::vp8::{self, FrameAssembler};
use tokio::sync::mpsc;

use crate::files::{RecordingDir, StoredChunk};
use crate::now_ms;

/// How long a stalled recorder may try before the session ends.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(5);
/// Pause between attempts to write a chunk that failed.
const RETRY: Duration = Duration::from_millis(250);

const WRITING: u8 = 0;
const STALLED: u8 = 1;
const FAILED: u8 = 2;
const CLOSED: u8 = 3;

/// What the recorder reports to its session.
#[derive(Debug, Clone)]
pub enum RecorderNews {
    Chunk(StoredChunk),
    Stalled(String),
    Recovered,
    Failed(String),
    Closed { chunks: u64 },
}

enum Job {
    Chunk { index: u64, chunk: Chunk },
    Close { reason: String, ended_ms: u64 },
}

struct Pending {
    assembler: FrameAssembler,
    chunk: Chunk,
    chunk_started: Option<Instant>,
    next_index: u64,
    /// Input counted in the current second (`input_second`, Unix s).
    input: BTreeMap<String, u32>,
    input_second: u64,
    /// Until a keyframe starts, packets are refused (a recording and a viewer both need one).
    waiting_keyframe: bool,
    closed: bool,
    /// The next RTP sequence number due: a jump means packets were lost before they got here.
    expected_seq: Option<u16>,
    /// RTP time of the last frame recorded.
    last_recorded_ts: Option<u32>,
    /// Why frames were not recorded since the last one was: written as a gap record before the
    /// next recorded frame (or at the close), so that verification can tell the endpoint's
    /// sealed frames the relay accounts for from frames removed without a word.
    dropping: Option<&'static str>,
}

impl Pending {
    fn dropped(&mut self, why: &'static str) {
        self.dropping.get_or_insert(why);
    }

    /// The gap record for what was dropped since the last recorded frame, up to `before_ts`.
    fn account_for_drops(&mut self, before_ts: Option<u32>) {
        if let Some(reason) = self.dropping.take() {
            let entry = TimelineEntry::Gap {
                ts_ms: now_ms(),
                after_ts: self.last_recorded_ts,
                before_ts,
                reason: reason.into(),
            };
            self.chunk.items.push(ChunkItem::Entry(entry));
        }
    }
}

pub struct Recorder {
    pub id: String,
    pending: Mutex<Pending>,
    state: Arc<AtomicU8>,
    jobs: std::sync::mpsc::Sender<Job>,
    chunk_every: Duration,
}

impl Recorder {
    /// Starts recording into `dir` (already created with its opening line); news arrive on the
    /// returned channel.
    pub fn start(
        id: String,
        dir: RecordingDir,
        chunk_every: Duration,
        finished: Box<dyn FnOnce() + Send>,
    ) -> std::io::Result<(Arc<Recorder>, mpsc::UnboundedReceiver<RecorderNews>)> {
        let (jobs, rx) = std::sync::mpsc::channel();
        let (news_tx, news) = mpsc::unbounded_channel();
        let state = Arc::new(AtomicU8::new(WRITING));
        let thread_state = state.clone();
        std::thread::Builder::new().name(format!("recorder-{}", &id[..id.len().min(8)])).spawn(move || {
            write_loop(dir, rx, thread_state, news_tx);
            finished();
        })?;
        let recorder = Recorder {
            id,
            pending: Mutex::new(Pending {
                assembler: FrameAssembler::default(),
                chunk: Chunk::default(),
                chunk_started: None,
                next_index: 0,
                input: BTreeMap::new(),
                input_second: 0,
                waiting_keyframe: true,
                closed: false,
                expected_seq: None,
                last_recorded_ts: None,
                dropping: None,
            }),
            state,
            jobs,
            chunk_every,
        };
        Ok((Arc::new(recorder), news))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the recorder is writing (what the session bar shows, R9).
    pub fn writing(&self) -> bool {
        self.state.load(Ordering::Relaxed) == WRITING
    }

    /// Whether the recorder is taking the recording's track: writing, and past its first keyframe
    /// (the viewers' picture waits for this, see `sfu`).
    pub fn taking(&self) -> bool {
        let p = self.lock();
        !p.closed && !p.waiting_keyframe && self.writing()
    }

    /// Takes one RTP packet of the agent's recording track; `true` when the recorder needs a
    /// keyframe (it starts or resumes at one, or lost part of a frame).
    pub fn take(&self, packet: &RtpPacket) -> bool {
        let mut p = self.lock();
        let seq = packet.header.sequence_number;
        if p.expected_seq.is_some_and(|s| s != seq) {
            p.dropped("packets lost on the way to the relay");
        }
        p.expected_seq = Some(seq.wrapping_add(1));
        if p.closed {
            return false;
        }
        if self.state.load(Ordering::Relaxed) != WRITING {
            p.waiting_keyframe = true;
            p.dropped("the recorder could not write");
            return false;
        }
        if p.waiting_keyframe {
            if !vp8::starts_keyframe(&packet.payload) {
                p.dropped("waiting for a keyframe");
                return true;
            }
            p.waiting_keyframe = false;
            p.assembler = FrameAssembler::default();
        }
        let mut want_keyframe = false;
        if let Some(frame) = p.assembler.push(packet) {
            p.account_for_drops(Some(frame.timestamp));
            let now = now_ms();
            p.last_recorded_ts = Some(frame.timestamp);
            p.chunk.items.push(ChunkItem::Frame(RecordedFrame {
                ts: frame.timestamp,
                arrival_ms: now,
                keyframe: frame.keyframe,
                data: frame.data,
            }));
        } else if packet.header.marker {
            // A frame ended without coming out whole: the recording's picture is broken until
            // the next keyframe, so ask for one now rather than at the next periodic one.
            p.dropped("a frame arrived incomplete");
            want_keyframe = true;
        }
        self.rotate_if_due(&mut p);
        want_keyframe
    }

    /// Adds a timeline entry (kept even while writing is stalled; written when it recovers).
    pub fn note(&self, entry: TimelineEntry) {
        let mut p = self.lock();
        if p.closed {
            return;
        }
        p.chunk.items.push(ChunkItem::Entry(entry));
        p.chunk_started.get_or_insert_with(Instant::now);
    }

    /// Counts one input event of `kind` (never its contents: passwords must not end up here).
    pub fn count_input(&self, kind: &str) {
        let now = now_ms();
        let mut p = self.lock();
        if p.closed {
            return;
        }
        let second = now / 1000;
        if second != p.input_second {
            flush_input(&mut p);
            p.input_second = second;
        }
        *p.input.entry(kind.to_owned()).or_default() += 1;
    }

    /// Hands a due chunk to the writer even when no packets arrive (a paused session).
    pub fn tick(&self) {
        let mut p = self.lock();
        if !p.closed {
            if now_ms() / 1000 != p.input_second {
                flush_input(&mut p);
            }
            self.rotate_if_due(&mut p);
        }
    }

    fn rotate_if_due(&self, p: &mut Pending) {
        let Some(started) = p.chunk_started else {
            if !p.chunk.is_empty() {
                p.chunk_started = Some(Instant::now());
            }
            return;
        };
        if started.elapsed() >= self.chunk_every {
            self.hand_over(p);
        }
    }

    fn hand_over(&self, p: &mut Pending) {
        if p.chunk.is_empty() {
            p.chunk_started = None;
            return;
        }
        let chunk = std::mem::take(&mut p.chunk);
        let index = p.next_index;
        p.next_index += 1;
        p.chunk_started = None;
        let _ = self.jobs.send(Job::Chunk { index, chunk });
    }

    /// Writes what is pending and closes the manifest with the session's end.
    pub fn close(&self, reason: &str) {
        let mut p = self.lock();
        if p.closed {
            return;
        }
        flush_input(&mut p);
        p.account_for_drops(None);
        self.hand_over(&mut p);
        p.closed = true;
        let _ = self.jobs.send(Job::Close { reason: reason.to_owned(), ended_ms: now_ms() });
    }
}

fn flush_input(p: &mut Pending) {
    if p.input.is_empty() {
        return;
    }
    let counts = std::mem::take(&mut p.input);
    p.chunk.items.push(ChunkItem::Entry(TimelineEntry::Input { ts_ms: p.input_second * 1000, counts }));
    p.chunk_started.get_or_insert_with(Instant::now);
}

/// The writer thread: stores chunks in order, retrying a failed one until `RECOVERY_LIMIT`.
fn write_loop(
    mut dir: RecordingDir,
    jobs: std::sync::mpsc::Receiver<Job>,
    state: Arc<AtomicU8>,
    news: mpsc::UnboundedSender<RecorderNews>,
) {
    let mut chunks = 0u64;
    let mut stalled_since: Option<Instant> = None;
    // Runs `attempt` until it succeeds or the recorder has been stalled too long.
    let mut persist = |what: &mut dyn FnMut(&mut RecordingDir) -> std::io::Result<()>, dir: &mut RecordingDir| loop {
        match what(dir) {
            Ok(()) => {
                if stalled_since.take().is_some() {
                    state.store(WRITING, Ordering::Relaxed);
                    let _ = news.send(RecorderNews::Recovered);
                }
                return true;
            }
            Err(e) => {
                let why = format!("cannot write recording {}: {e}", dir.dir().display());
                let since = *stalled_since.get_or_insert_with(|| {
                    state.store(STALLED, Ordering::Relaxed);
                    let _ = news.send(RecorderNews::Stalled(why.clone()));
                    Instant::now()
                });
                if since.elapsed() >= RECOVERY_LIMIT {
                    state.store(FAILED, Ordering::Relaxed);
                    let _ = news.send(RecorderNews::Failed(why));
                    return false;
                }
                std::thread::sleep(RETRY);
            }
        }
    };
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Chunk { index, chunk } => {
                let plain = chunk.encode();
                let frames = chunk.frames().count() as u64;
                let mut stored = None;
                let ok = persist(
                    &mut |d: &mut RecordingDir| {
                        stored = Some(d.write_chunk(index, &plain, frames, now_ms())?);
                        Ok(())
                    },
                    &mut dir,
                );
                if !ok {
                    return;
                }
                chunks += 1;
                if let Some(stored) = stored {
                    let _ = news.send(RecorderNews::Chunk(stored));
                }
            }
            Job::Close { reason, ended_ms } => {
                let body = ManifestBody::Close { chunks, ended_ms, reason };
                if persist(&mut |d: &mut RecordingDir| d.close(body.clone()), &mut dir) {
                    state.store(CLOSED, Ordering::Relaxed);
                    let _ = news.send(RecorderNews::Closed { chunks });
                }
                return;
            }
        }
    }
}
