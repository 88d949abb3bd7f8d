//! Where the user is asked: the window (`agent consent-ui` child process) when there is a display,
//! the terminal when the agent runs on one, and nobody otherwise - in which case every request is
//! refused, because consent that nobody gave is a deny.

use std::io::IsTerminal;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use sightline_proto::{Decision, Level};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::prompt::{PlainAllow, UiCommand, UiReport, consent_lines, parse_tty_answer};

/// What a front end tells the session.
#[derive(Debug, Clone, PartialEq)]
pub enum FrontendEvent {
    Report(UiReport),
    /// The window closed or crashed, or the terminal hung up.
    Gone,
}

/// Where front ends send their events, each with the id of the session it belongs to: a window
/// that lingers after its session (or dies late) must not act on the next one.
pub type FrontendEvents = mpsc::Sender<(String, FrontendEvent)>;

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("no display (DISPLAY is unset) and no terminal: nobody at this endpoint can be asked")]
    NobodyToAsk,
    #[error("cannot start the consent window: {0}")]
    Spawn(std::io::Error),
}

/// The front end of one session.
pub enum Frontend {
    Window { stdin: Option<tokio::process::ChildStdin>, child: Box<tokio::process::Child> },
    Terminal { terminal: Arc<Mutex<Terminal>> },
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Frontend::Window { .. } => "Frontend::Window",
            Frontend::Terminal { .. } => "Frontend::Terminal",
        })
    }
}

/// What the terminal is waiting for.
#[derive(Debug, Default)]
pub struct TtyState {
    asking: Option<Vec<Level>>,
    elevation: Option<Vec<Level>>,
    running: bool,
}

/// The agent's terminal. One thread reads it for the agent's whole life and hands each line to
/// the session that holds the prompt now (a reader per session would leave old readers stealing
/// the user's answers).
#[derive(Debug, Default)]
pub struct Terminal {
    state: TtyState,
    session: Option<(String, FrontendEvents)>,
}

static TERMINAL: std::sync::OnceLock<Arc<Mutex<Terminal>>> = std::sync::OnceLock::new();

/// The window of the last ended session, still showing why it ended. There is at most one: the
/// next window closes it at once, so however many requests arrive, the agent holds at most the
/// current window and one lingering one (issue 13: X client slots are the user's, not ours).
static LINGERING: Mutex<Option<Lingering>> = Mutex::new(None);
static LINGERING_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A window kept only to be closed: dropping it kills the process (`kill_on_drop`).
struct Lingering {
    id: u64,
    _stdin: Option<tokio::process::ChildStdin>,
    _child: Box<tokio::process::Child>,
}

fn lingering() -> std::sync::MutexGuard<'static, Option<Lingering>> {
    LINGERING.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock(terminal: &Mutex<Terminal>) -> std::sync::MutexGuard<'_, Terminal> {
    terminal.lock().unwrap_or_else(|e| e.into_inner())
}

impl Frontend {
    /// Opens the window (with a display) or the terminal prompt for session `session_id`; its
    /// events arrive on `events`, tagged with that id.
    pub fn open(events: FrontendEvents, session_id: &str) -> Result<Frontend, FrontendError> {
        #[cfg(feature = "test-consent")]
        if let Some(answer) = scripted::answer() {
            return Ok(scripted::open(events, session_id.to_owned(), answer));
        }
        if std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty()) {
            return Self::window(events, session_id.to_owned());
        }
        if std::io::stdin().is_terminal() {
            return Ok(Self::terminal(events, session_id.to_owned()));
        }
        Err(FrontendError::NobodyToAsk)
    }

    fn window(events: FrontendEvents, session_id: String) -> Result<Frontend, FrontendError> {
        // The new prompt matters more than the last one's farewell.
        let closed = lingering().take();
        drop(closed);
        let exe = std::env::current_exe().map_err(FrontendError::Spawn)?;
        let mut child = tokio::process::Command::new(exe)
            .arg("consent-ui")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(FrontendError::Spawn)?;
        let stdin = child.stdin.take();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<UiReport>(&line) {
                        Ok(report) => {
                            if events.send((session_id.clone(), FrontendEvent::Report(report))).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "bad line from the consent window"),
                    }
                }
                let _ = events.send((session_id, FrontendEvent::Gone)).await;
            });
        }
        Ok(Frontend::Window { stdin, child: Box::new(child) })
    }

    fn terminal(events: FrontendEvents, session_id: String) -> Frontend {
        let terminal = TERMINAL
            .get_or_init(|| {
                let terminal = Arc::new(Mutex::new(Terminal::default()));
                let reader = terminal.clone();
                std::thread::spawn(move || read_terminal(&reader));
                terminal
            })
            .clone();
        *lock(&terminal) = Terminal { state: TtyState::default(), session: Some((session_id, events)) };
        Frontend::Terminal { terminal }
    }

    /// Whether the user answers on a terminal (no window to watch).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Frontend::Terminal { .. })
    }

    /// Shows something to the user. A window that cannot be written to is reported as gone by
    /// its reader, so errors are only logged here.
    pub async fn send(&mut self, cmd: &UiCommand) {
        match self {
            Frontend::Window { stdin: Some(stdin), .. } => {
                let mut line = serde_json::to_vec(cmd).unwrap_or_default();
                line.push(b'\n');
                if let Err(e) = stdin.write_all(&line).await {
                    tracing::warn!(error = %e, "cannot write to the consent window");
                }
            }
            Frontend::Window { stdin: None, .. } => {}
            Frontend::Terminal { terminal } => print_tty(&mut lock(terminal).state, cmd),
        }
    }

    /// Lets the front end show its last words for a moment (until the next window opens, at
    /// most 6 s), then closes it.
    pub fn finish(self) {
        if let Frontend::Window { stdin, child } = self {
            let id = LINGERING_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let previous = lingering().replace(Lingering { id, _stdin: stdin, _child: child });
            drop(previous);
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(6)).await;
                let mut slot = lingering();
                if slot.as_ref().is_some_and(|l| l.id == id) {
                    let closed = slot.take();
                    drop(slot);
                    drop(closed);
                }
            });
        }
    }
}

/// Reads the terminal until it hangs up, passing each answer to the session holding the prompt.
fn read_terminal(terminal: &Mutex<Terminal>) {
    for line in std::io::stdin().lines() {
        let Ok(line) = line else { break };
        let (report, session) = {
            let mut t = lock(terminal);
            (tty_report(&mut t.state, &line), t.session.clone())
        };
        match (report, session) {
            (Some(report), Some((id, events))) => {
                let _ = events.blocking_send((id, FrontendEvent::Report(report)));
            }
            (Some(_), None) => {}
            (None, _) => {
                println!(
                    "? answer allow, deny, or levels (view,chat,control); in a session: pause, resume, end, chat TEXT"
                )
            }
        }
    }
    let session = lock(terminal).session.take();
    if let Some((id, events)) = session {
        let _ = events.blocking_send((id, FrontendEvent::Gone));
    }
}

fn print_tty(st: &mut TtyState, cmd: &UiCommand) {
    match cmd {
        UiCommand::Ask { request } => {
            println!("\n=== Remote support request ===");
            for line in consent_lines(request) {
                println!("  {line}");
            }
            // R20: a plain allow grants what is on by default (view and chat) of what was asked.
            let defaults: Vec<Level> = request.levels.iter().copied().filter(|l| l.on_by_default()).collect();
            println!(
                "Allow? [allow ({}) / deny / levels, e.g. view,chat,control] (no answer = deny)",
                sightline_proto::levels_text(&defaults)
            );
            st.asking = Some(request.levels.clone());
        }
        UiCommand::Elevate { levels } => {
            println!("The operator asks for more access: {}. [allow / deny]", sightline_proto::levels_text(levels));
            st.elevation = Some(levels.clone());
        }
        UiCommand::ElevationClosed => {
            if st.elevation.take().is_some() {
                println!("The request for more access lapsed.");
            }
        }
        UiCommand::Status { granted, observers, paused_by, recording, ending, reconnecting } => {
            st.asking = None;
            st.running = true;
            if *reconnecting {
                println!("[session] {}", crate::prompt::RECONNECTING_LINE);
            }
            println!(
                "[session] granted: {}; observers: {}; {}recording {}",
                sightline_proto::levels_text(granted),
                if observers.is_empty() { "none".to_owned() } else { observers.join(", ") },
                paused_by.map_or(String::new(), |by| format!("{}; ", crate::prompt::paused_line(by))),
                if *recording { "on" } else { "off" },
            );
            if let Some(ends) = ending {
                println!("[session] {}", crate::prompt::ending_line(ends));
            }
        }
        UiCommand::Chat { from, text } => println!("[chat] {from}: {text}"),
        UiCommand::Ended { reason } => {
            println!("[session ended] {reason}");
            *st = TtyState::default();
        }
    }
}

fn tty_report(st: &mut TtyState, line: &str) -> Option<UiReport> {
    if let Some(asked) = st.asking.clone() {
        let (decision, levels) = parse_tty_answer(line, &asked, PlainAllow::Defaults)?;
        st.asking = None;
        return Some(UiReport::Decision { decision, levels });
    }
    if let Some(levels) = st.elevation.clone() {
        let (decision, levels) = parse_tty_answer(line, &levels, PlainAllow::Asked)?;
        st.elevation = None;
        let levels = if decision == Decision::Allow { levels } else { Vec::new() };
        return Some(UiReport::ElevationDecision { decision, levels });
    }
    if !st.running {
        return None;
    }
    let line = line.trim();
    match line {
        "pause" => Some(UiReport::Pause),
        "resume" => Some(UiReport::Resume),
        "end" => Some(UiReport::End),
        _ => line.strip_prefix("chat ").map(|text| UiReport::Chat { text: text.to_owned() }),
    }
}

/// A consent driver for in-process integration tests only: it exists solely with the
/// `test-consent` cargo feature, which no binary, demo or package enables (the tests that need it
/// declare `required-features`).
#[cfg(feature = "test-consent")]
pub mod scripted {
    use super::*;

    static ANSWER: std::sync::OnceLock<(Decision, Vec<Level>)> = std::sync::OnceLock::new();

    /// Every later consent request in this process is answered with `decision` and `levels`.
    pub fn answer_every_request(decision: Decision, levels: Vec<Level>) {
        let _ = ANSWER.set((decision, levels));
    }

    pub(super) fn answer() -> Option<(Decision, Vec<Level>)> {
        ANSWER.get().cloned()
    }

    pub(super) fn open(
        events: FrontendEvents,
        session_id: String,
        (decision, levels): (Decision, Vec<Level>),
    ) -> Frontend {
        tokio::spawn(async move {
            let _ = events.send((session_id, FrontendEvent::Report(UiReport::Decision { decision, levels }))).await;
        });
        Frontend::Terminal { terminal: Arc::new(Mutex::new(Terminal::default())) }
    }
}
