//! The endpoint's window (`agent consent-ui`, a child process of `agent run`): first the consent
//! prompt, then the always-on-top session bar. It speaks the `prompt` line protocol on stdin and
//! stdout and decides nothing itself: every answer goes to the agent, which signs it.
//!
//! The window logs the screen rectangles of its buttons and check boxes, and of its whole content,
//! to stderr whenever they change (`consent-ui layout ...`): that is how the end-to-end tests find
//! the real Allow button to click with xdotool and measure the window against what it shows, and
//! how support staff can tell what the user had in front of them.

use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eframe::egui;
use sightline_proto::{ConsentRequest, Decision, Level, Party, levels_text};

use crate::prompt::{UiCommand, UiReport, consent_lines, level_label};

/// The window title; tests and window managers find the window by it.
pub const TITLE: &str = "Sightline remote support";
/// How long the bar stays up after the session ended, so the user can read why.
const ENDED_LINGER: Duration = Duration::from_secs(5);
const ALLOW_GREEN: egui::Color32 = egui::Color32::from_rgb(0x1b, 0x7a, 0x2e);
const DENY_RED: egui::Color32 = egui::Color32::from_rgb(0xb0, 0x1c, 0x1c);
/// The widest the prompt and the bar become (their text wraps there); they are as large as their
/// content.
const PROMPT_WIDTH: f32 = 480.0;
const BAR_WIDTH: f32 = 400.0;

/// Runs the window until the session is over or the agent goes away.
pub fn run() -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<Option<UiCommand>>();
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(TITLE)
            .with_inner_size([PROMPT_WIDTH, 420.0])
            .with_position([40.0, 40.0])
            .with_resizable(false)
            .with_window_level(egui::WindowLevel::AlwaysOnTop),
        ..Default::default()
    };
    eframe::run_native(
        "sightline-consent",
        options,
        Box::new(move |cc| {
            let ctx = cc.egui_ctx.clone();
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<UiCommand>(&line) {
                        Ok(cmd) => {
                            if tx.send(Some(cmd)).is_err() {
                                return;
                            }
                        }
                        Err(e) => eprintln!("consent-ui: ignoring a bad command: {e}"),
                    }
                    ctx.request_repaint();
                }
                // The agent is gone: nobody would receive an answer.
                let _ = tx.send(None);
                ctx.request_repaint();
            });
            Ok(Box::new(Window::new(rx)))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the consent window: {e}"))
}

/// Starts reporting whether the window can be seen (the agent pauses sessions under active
/// confirmation while it cannot). A window whose X id is unknown counts as hidden.
fn watch_visibility(frame: &eframe::Frame) {
    use raw_window_handle::{HasWindowHandle, RawWindowHandle};
    let window = match frame.window_handle().map(|h| h.as_raw()) {
        Ok(RawWindowHandle::Xlib(h)) => u32::try_from(h.window).ok(),
        Ok(RawWindowHandle::Xcb(h)) => Some(h.window.get()),
        _ => None,
    };
    match window {
        Some(window) => {
            eprintln!("consent-ui window {window:#x}");
            crate::bar_visibility::watch(window, |hidden| {
                eprintln!("consent-ui {}", if hidden { "hidden" } else { "visible" });
                report(&UiReport::Hidden { hidden });
            });
        }
        None => {
            eprintln!("consent-ui: the window is not an X11 window; counting it as hidden");
            report(&UiReport::Hidden { hidden: true });
        }
    }
}

fn report(report: &UiReport) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, report);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

enum Mode {
    Waiting,
    Asking { request: Box<ConsentRequest>, checked: Vec<(Level, bool)> },
    Running,
    Ended { reason: String, since: Instant },
}

struct Window {
    commands: mpsc::Receiver<Option<UiCommand>>,
    mode: Mode,
    operator: String,
    /// The session's masks, shown on the bar for as long as it runs.
    masked: Option<String>,
    /// When the session's hours or window end, once that is near.
    ending: Option<String>,
    granted: Vec<Level>,
    observers: Vec<String>,
    paused_by: Option<Party>,
    recording: bool,
    /// The relay node was lost; another is taking the session over (R43).
    reconnecting: bool,
    chat: Vec<(String, String)>,
    draft: String,
    elevation: Option<Vec<(Level, bool)>>,
    /// Whether the X watcher of the window's visibility runs (started on the first frame, when
    /// the window exists).
    watching: bool,
    /// Widgets drawn this frame, logged when the layout changes.
    rects: Vec<(String, egui::Rect)>,
    logged_layout: String,
    fit: crate::window_fit::FitToContent,
}

impl Window {
    fn new(commands: mpsc::Receiver<Option<UiCommand>>) -> Self {
        Window {
            commands,
            mode: Mode::Waiting,
            operator: String::new(),
            masked: None,
            ending: None,
            granted: Vec::new(),
            observers: Vec::new(),
            paused_by: None,
            recording: false,
            reconnecting: false,
            chat: Vec::new(),
            draft: String::new(),
            elevation: None,
            watching: false,
            rects: Vec::new(),
            logged_layout: String::new(),
            fit: Default::default(),
        }
    }

    fn apply(&mut self, ctx: &egui::Context, cmd: UiCommand) {
        match cmd {
            UiCommand::Ask { request } => {
                eprintln!("consent-ui prompt: {}", consent_lines(&request).join(" | "));
                self.operator =
                    format!("{} ({})", request.operator.display_name, request.operator.role.replace('_', " "));
                self.masked = (!request.masks.is_empty()).then(|| crate::prompt::masked_line(&request.masks));
                // R20: view and chat are ticked; anything more the user ticks on purpose.
                let checked = request.levels.iter().map(|l| (*l, l.on_by_default())).collect();
                self.mode = Mode::Asking { request, checked };
            }
            UiCommand::Elevate { levels } => {
                self.elevation = Some(levels.into_iter().map(|l| (l, true)).collect());
                ctx.send_viewport_cmd(egui::ViewportCommand::Focus);
            }
            UiCommand::ElevationClosed => self.elevation = None,
            UiCommand::Status { granted, observers, paused_by, recording, ending, reconnecting } => {
                if matches!(self.mode, Mode::Asking { .. } | Mode::Waiting) {
                    self.mode = Mode::Running;
                }
                if reconnecting != self.reconnecting {
                    eprintln!("consent-ui reconnecting: {reconnecting}");
                }
                self.reconnecting = reconnecting;
                self.granted = granted;
                self.observers = observers;
                self.paused_by = paused_by;
                self.recording = recording;
                let ending = ending.as_ref().map(crate::prompt::ending_line);
                if let Some(line) = ending.as_ref().filter(|l| self.ending.as_ref() != Some(*l)) {
                    // Logged like the prompt: the user was told, and when.
                    eprintln!("consent-ui ending: {line}");
                }
                self.ending = ending;
            }
            UiCommand::Chat { from, text } => {
                // Logged like the prompt: what the user was shown is on record at the endpoint.
                eprintln!("consent-ui chat {from}: {text}");
                self.chat.push((from, text));
            }
            UiCommand::Ended { reason } => {
                // Logged like the prompt: what the user was told about the end.
                eprintln!("consent-ui ended: {reason}");
                if matches!(self.mode, Mode::Asking { .. } | Mode::Waiting) {
                    // Nothing to read for a prompt that was answered or timed out: just go.
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                }
                self.elevation = None;
                self.mode = Mode::Ended { reason, since: Instant::now() };
            }
        }
    }

    fn log_layout(&mut self) {
        let layout = self
            .rects
            .iter()
            .map(|(name, r)| format!("{name}={}", crate::window_fit::logged(*r)))
            .collect::<Vec<_>>()
            .join(" ");
        if layout != self.logged_layout {
            eprintln!("consent-ui layout {layout}");
            self.logged_layout = layout;
        }
        self.rects.clear();
    }

    fn asking(&mut self, ui: &mut egui::Ui) {
        let Mode::Asking { request, checked } = &mut self.mode else { return };
        let mut answer = None;
        let mut rects = Vec::new();
        ui.heading("Remote support request");
        ui.label("Someone from IT support asks to connect to this computer.");
        ui.add_space(8.0);
        for line in consent_lines(request) {
            ui.label(line);
        }
        ui.add_space(8.0);
        ui.label("Allow the operator to:");
        for (level, on) in checked.iter_mut() {
            let r = ui.checkbox(on, level_label(*level));
            rects.push((format!("level:{}", level.as_str()), r.rect));
        }
        let left = request.deadline_ms.saturating_sub(crate::now_ms()) / 1000;
        ui.add_space(8.0);
        ui.label(format!("No answer within {left} s counts as Deny."));
        ui.add_space(8.0);
        ui.horizontal(|ui| {
            let size = egui::vec2(140.0, 36.0);
            let allow = ui.add(
                egui::Button::new(egui::RichText::new("Allow").color(egui::Color32::WHITE).strong())
                    .fill(ALLOW_GREEN)
                    .min_size(size),
            );
            let deny = ui.add(
                egui::Button::new(egui::RichText::new("Deny").color(egui::Color32::WHITE).strong())
                    .fill(DENY_RED)
                    .min_size(size),
            );
            rects.push(("allow".to_owned(), allow.rect));
            rects.push(("deny".to_owned(), deny.rect));
            if allow.clicked() {
                let levels: Vec<Level> = checked.iter().filter(|(_, on)| *on).map(|(l, _)| *l).collect();
                answer = Some(if levels.contains(&Level::View) {
                    (Decision::Allow, levels)
                } else {
                    // Nothing to see means no session: the same as Deny.
                    (Decision::Deny, Vec::new())
                });
            }
            if deny.clicked() {
                answer = Some((Decision::Deny, Vec::new()));
            }
        });
        self.rects.extend(rects);
        if let Some((decision, levels)) = answer {
            report(&UiReport::Decision { decision, levels });
            self.mode = Mode::Waiting;
        }
    }

    fn bar(&mut self, ui: &mut egui::Ui) {
        ui.heading("Remote support session");
        ui.label(format!("Connected: {}", self.operator));
        ui.label(format!("Granted: {}", levels_text(&self.granted)));
        let observers = if self.observers.is_empty() { "none".to_owned() } else { self.observers.join(", ") };
        ui.label(format!("Observers: {observers}"));
        ui.label(if self.recording { "Recording: on" } else { "Recording: off" });
        if let Some(masked) = &self.masked {
            ui.label(masked);
        }
        if let Some(ending) = &self.ending {
            ui.colored_label(DENY_RED, ending);
        }
        if self.reconnecting {
            let line = egui::RichText::new(crate::prompt::RECONNECTING_LINE).strong().color(DENY_RED);
            let r = ui.label(line);
            self.rects.push(("reconnecting".to_owned(), r.rect));
        }
        if let Some(by) = self.paused_by {
            // A pause is no alarm unless the relay had to stop the session itself.
            let line = egui::RichText::new(crate::prompt::paused_line(by)).strong();
            let line = if by == Party::System { line.color(DENY_RED) } else { line };
            let r = ui.label(line);
            self.rects.push(("paused".to_owned(), r.rect));
        }
        ui.horizontal(|ui| {
            let paused = self.paused_by.is_some();
            let toggle =
                ui.add(egui::Button::new(if paused { "Resume" } else { "Pause" }).min_size(egui::vec2(90.0, 28.0)));
            let end = ui.add(
                egui::Button::new(egui::RichText::new("End session").color(egui::Color32::WHITE))
                    .fill(DENY_RED)
                    .min_size(egui::vec2(110.0, 28.0)),
            );
            self.rects.push((if paused { "resume" } else { "pause" }.to_owned(), toggle.rect));
            self.rects.push(("end".to_owned(), end.rect));
            if toggle.clicked() {
                report(if paused { &UiReport::Resume } else { &UiReport::Pause });
            }
            if end.clicked() {
                report(&UiReport::End);
            }
        });
        if let Some(levels) = self.elevation.as_mut() {
            let mut answer = None;
            let mut rects = Vec::new();
            ui.add_space(8.0);
            ui.colored_label(egui::Color32::YELLOW, "The operator asks for more access:");
            for (level, on) in levels.iter_mut() {
                let r = ui.checkbox(on, level_label(*level));
                rects.push((format!("elevate:{}", level.as_str()), r.rect));
            }
            ui.horizontal(|ui| {
                let allow = ui.add(egui::Button::new("Allow").fill(ALLOW_GREEN).min_size(egui::vec2(90.0, 28.0)));
                let deny = ui.add(egui::Button::new("Deny").fill(DENY_RED).min_size(egui::vec2(90.0, 28.0)));
                rects.push(("elevate-allow".to_owned(), allow.rect));
                rects.push(("elevate-deny".to_owned(), deny.rect));
                if allow.clicked() {
                    let chosen: Vec<Level> = levels.iter().filter(|(_, on)| *on).map(|(l, _)| *l).collect();
                    answer = Some(if chosen.is_empty() { (Decision::Deny, chosen) } else { (Decision::Allow, chosen) });
                }
                if deny.clicked() {
                    answer = Some((Decision::Deny, Vec::new()));
                }
            });
            self.rects.extend(rects);
            if let Some((decision, levels)) = answer {
                report(&UiReport::ElevationDecision { decision, levels });
                self.elevation = None;
            }
        }
        // Spacing, not a separator: a separator spans all the width there is, so the bar could not
        // be as narrow as its text.
        ui.add_space(8.0);
        egui::ScrollArea::vertical().max_height(90.0).stick_to_bottom(true).show(ui, |ui| {
            for (from, text) in &self.chat {
                ui.label(format!("{from}: {text}"));
            }
        });
        if !self.granted.contains(&Level::Chat) {
            // R20: no chat box where chat is not granted (the agent would refuse the line anyway).
            ui.label("Chat is off in this session.");
            return;
        }
        ui.horizontal(|ui| {
            let edit = ui.add(egui::TextEdit::singleline(&mut self.draft).hint_text("Message to the operator"));
            let send = ui.button("Send");
            self.rects.push(("chat-input".to_owned(), edit.rect));
            self.rects.push(("chat-send".to_owned(), send.rect));
            let entered = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if (send.clicked() || entered) && !self.draft.trim().is_empty() {
                report(&UiReport::Chat { text: std::mem::take(&mut self.draft) });
            }
        });
    }
}

impl eframe::App for Window {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        if !self.watching {
            self.watching = true;
            watch_visibility(frame);
        }
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Some(cmd) => self.apply(&ctx, cmd),
                None => ctx.send_viewport_cmd(egui::ViewportCommand::Close),
            }
        }
        if ctx.input(|i| i.viewport().close_requested()) {
            match self.mode {
                Mode::Asking { .. } => report(&UiReport::Decision { decision: Decision::Closed, levels: Vec::new() }),
                // Closing the bar is the user ending the session.
                Mode::Running => report(&UiReport::End),
                Mode::Waiting | Mode::Ended { .. } => {}
            }
        }
        let width = if matches!(self.mode, Mode::Asking { .. } | Mode::Waiting) { PROMPT_WIDTH } else { BAR_WIDTH };
        // Out of `self` while the content borrows it.
        let mut fit = std::mem::take(&mut self.fit);
        let ((), content) = fit.show(ui, width, |ui| match &self.mode {
            Mode::Waiting => {
                ui.label("Waiting for the relay...");
            }
            Mode::Asking { .. } => self.asking(ui),
            Mode::Running => self.bar(ui),
            Mode::Ended { reason, since } => {
                ui.heading("Session ended");
                ui.label(reason);
                if since.elapsed() >= ENDED_LINGER {
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            }
        });
        self.fit = fit;
        self.rects.push(("content".to_owned(), content));
        self.log_layout();
        // Countdowns and the linger timer need frames even without input.
        ctx.request_repaint_after(Duration::from_millis(250));
    }
}
