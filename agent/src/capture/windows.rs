//! The X server's top-level windows, kept current for the frame being captured (R35).
//!
//! The tracker listens to structure changes on the root window (windows created, mapped, moved,
//! resized, restacked, reparented, destroyed) and to title and class changes on each client. The
//! X server handles one connection's requests in order and sends events before the reply of a
//! later request, so every change that happened before a `GetImage` was executed is in our queue
//! when its reply arrives. After each capture the queue is read again:
//! - moves and resizes carry the new geometry, so each position a selected window had while the
//!   image was taken is known exactly and all of them are masked: where it was when the layout
//!   was read, where it went before the image was taken, and every place in between;
//! - anything else (a window appearing, vanishing or being renamed) makes the layout unknown, the
//!   image is thrown away and the layout read again before the next try.

use x11rb::connection::Connection;
use x11rb::protocol::Event;
use x11rb::protocol::xproto::{
    Atom, AtomEnum, ChangeWindowAttributesAux, ConnectionExt, EventMask, MapState, Window as XWindow, WindowClass,
};
use x11rb::rust_connection::RustConnection;

use sightline_core::mask::{Masks, Window};

use super::CaptureError;

fn x11<E: std::fmt::Display>(e: E) -> CaptureError {
    CaptureError::X11(e.to_string())
}

#[derive(Debug, Clone)]
struct Tracked {
    /// The root's child: the window manager's frame, or the client itself without one.
    frame: XWindow,
    window: Window,
    /// A rule selects it: its every position matters.
    selected: bool,
}

/// Top-level windows, bottom to top, as of the last event read.
pub struct WindowTracker {
    root: XWindow,
    masks: Masks,
    net_wm_name: Atom,
    utf8_string: Atom,
    windows: Vec<Tracked>,
    /// The layout is unknown until read again.
    dirty: bool,
    /// Bumped on every change, so an unchanged image with a changed layout is still encoded.
    pub generation: u64,
    /// Places selected windows left lately. Measured under Xvfb with openbox: right after a move
    /// the framebuffer can still show a window at its previous position although the server
    /// already reports the new one, so a place a selected window left stays covered a while,
    /// counted from when it left (a recording decoded frame by frame showed a window that had
    /// stood still for seconds at the place it had just left, when this counted from its arrival).
    recent: std::collections::VecDeque<(std::time::Instant, Window)>,
}

/// How long a place a selected window left stays masked.
const LEFT_BEHIND: std::time::Duration = std::time::Duration::from_millis(300);

impl std::fmt::Debug for WindowTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowTracker").field("windows", &self.windows.len()).finish_non_exhaustive()
    }
}

impl WindowTracker {
    pub fn new(conn: &RustConnection, root: XWindow, masks: Masks) -> Result<WindowTracker, CaptureError> {
        let events = EventMask::SUBSTRUCTURE_NOTIFY | EventMask::PROPERTY_CHANGE;
        conn.change_window_attributes(root, &ChangeWindowAttributesAux::new().event_mask(events))
            .map_err(x11)?
            .check()
            .map_err(x11)?;
        let atom = |name: &[u8]| -> Result<Atom, CaptureError> {
            Ok(conn.intern_atom(false, name).map_err(x11)?.reply().map_err(x11)?.atom)
        };
        Ok(WindowTracker {
            root,
            net_wm_name: atom(b"_NET_WM_NAME")?,
            utf8_string: atom(b"UTF8_STRING")?,
            masks,
            windows: Vec::new(),
            dirty: true,
            generation: 0,
            recent: std::collections::VecDeque::new(),
        })
    }

    /// Whether the layout must be read again before it can be trusted.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// The windows as of the last event read, bottom to top.
    pub fn windows(&self) -> impl Iterator<Item = &Window> {
        self.windows.iter().map(|t| &t.window)
    }

    /// Reads the queued events: moves and resizes are applied (each position of a selected
    /// window noted in `recent`), anything else marks the layout dirty.
    pub fn absorb(&mut self, conn: &RustConnection) -> Result<(), CaptureError> {
        while let Some(event) = conn.poll_for_event().map_err(x11)? {
            match event {
                Event::ConfigureNotify(e) if e.event == self.root => {
                    match self.windows.iter_mut().find(|t| t.frame == e.window) {
                        Some(t) => {
                            if t.selected {
                                // The place it leaves, from now on: however long the window
                                // stood there, the framebuffer may show it there a while longer.
                                self.recent.push_back((std::time::Instant::now(), t.window.clone()));
                            }
                            let border = u32::from(e.border_width) * 2;
                            t.window.x = i32::from(e.x);
                            t.window.y = i32::from(e.y);
                            t.window.w = u32::from(e.width) + border;
                            t.window.h = u32::from(e.height) + border;
                        }
                        None => self.dirty = true,
                    }
                    self.generation += 1;
                }
                Event::PropertyNotify(e) => {
                    let naming = [AtomEnum::WM_NAME.into(), AtomEnum::WM_CLASS.into(), self.net_wm_name];
                    if naming.contains(&e.atom) {
                        self.dirty = true;
                        self.generation += 1;
                    }
                }
                // A request on a window that vanished meanwhile; its DestroyNotify says the rest.
                Event::Error(_) => {}
                Event::CreateNotify(_)
                | Event::DestroyNotify(_)
                | Event::MapNotify(_)
                | Event::UnmapNotify(_)
                | Event::ReparentNotify(_)
                | Event::GravityNotify(_)
                | Event::CirculateNotify(_)
                | Event::ConfigureNotify(_) => {
                    self.dirty = true;
                    self.generation += 1;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads the whole layout from the server if it is dirty.
    pub fn refresh(&mut self, conn: &RustConnection) -> Result<(), CaptureError> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        self.generation += 1;
        let children = conn.query_tree(self.root).map_err(x11)?.reply().map_err(x11)?.children;
        let mut windows = Vec::with_capacity(children.len());
        for frame in children {
            // A window that vanishes while we read is skipped; its DestroyNotify follows.
            let Ok(attrs) = conn.get_window_attributes(frame).map_err(x11)?.reply() else { continue };
            if attrs.class == WindowClass::INPUT_ONLY {
                continue;
            }
            let Ok(geometry) = conn.get_geometry(frame).map_err(x11)?.reply() else { continue };
            let border = u32::from(geometry.border_width) * 2;
            let mut window = Window {
                x: i32::from(geometry.x),
                y: i32::from(geometry.y),
                w: u32::from(geometry.width) + border,
                h: u32::from(geometry.height) + border,
                viewable: attrs.map_state == MapState::VIEWABLE,
                ..Window::default()
            };
            if let Some(client) = self.client_of(conn, frame)? {
                // Listen before reading, so a rename after the read is an event.
                let _ = conn.change_window_attributes(
                    client,
                    &ChangeWindowAttributesAux::new().event_mask(EventMask::PROPERTY_CHANGE),
                );
                (window.instance, window.class) = self.class_of(conn, client)?;
                window.title = self.title_of(conn, client)?;
            }
            let selected = self.masks.selects(&window);
            windows.push(Tracked { frame, window, selected });
        }
        // Where selected windows were until now may still show for a while (see `recent`).
        let now = std::time::Instant::now();
        self.recent.extend(self.windows.iter().filter(|t| t.selected).map(|t| (now, t.window.clone())));
        self.windows = windows;
        Ok(())
    }

    /// The windows to mask in an image taken after `before` was read from this tracker and
    /// before the last `absorb`: the layout as read, every selected window where it is now (a
    /// move absorbed after the image may have happened before it was taken: the image then shows
    /// the window at the new place, which `before` does not know), and the places selected
    /// windows left lately.
    pub fn image_layout(&mut self, mut before: Vec<Window>) -> Vec<Window> {
        let now: Vec<Window> = self
            .windows
            .iter()
            .filter(|t| t.selected && !before.contains(&t.window))
            .map(|t| t.window.clone())
            .collect();
        before.extend(now);
        before.extend(self.lately().cloned());
        before
    }

    /// Selected windows where they were in the last moments (see `recent`).
    fn lately(&mut self) -> impl Iterator<Item = &Window> {
        let now = std::time::Instant::now();
        while self.recent.front().is_some_and(|(at, _)| now.duration_since(*at) > LEFT_BEHIND) {
            self.recent.pop_front();
            // The mask shrinks: the next image differs even if its pixels do not.
            self.generation += 1;
        }
        self.recent.iter().map(|(_, w)| w)
    }

    fn has_class(&self, conn: &RustConnection, w: XWindow) -> Result<bool, CaptureError> {
        let cookie = conn.get_property(false, w, AtomEnum::WM_CLASS, AtomEnum::ANY, 0, 0).map_err(x11)?;
        Ok(cookie.reply().is_ok_and(|r| r.type_ != u32::from(AtomEnum::NONE)))
    }

    /// The client window of a frame: the first window at most two levels down that names its
    /// class (a window manager puts the client into its frame, sometimes inside one more window).
    fn client_of(&self, conn: &RustConnection, frame: XWindow) -> Result<Option<XWindow>, CaptureError> {
        if self.has_class(conn, frame)? {
            return Ok(Some(frame));
        }
        let mut level = vec![frame];
        for _ in 0..2 {
            let mut next = Vec::new();
            for w in level {
                let Ok(tree) = conn.query_tree(w).map_err(x11)?.reply() else { continue };
                for child in tree.children {
                    if self.has_class(conn, child)? {
                        return Ok(Some(child));
                    }
                    next.push(child);
                }
            }
            level = next;
        }
        Ok(None)
    }

    fn class_of(&self, conn: &RustConnection, w: XWindow) -> Result<(String, String), CaptureError> {
        let cookie = conn.get_property(false, w, AtomEnum::WM_CLASS, AtomEnum::STRING, 0, 256).map_err(x11)?;
        let value = cookie.reply().map(|r| r.value).unwrap_or_default();
        let mut parts = value.split(|&b| b == 0).map(|p| String::from_utf8_lossy(p).into_owned());
        Ok((parts.next().unwrap_or_default(), parts.next().unwrap_or_default()))
    }

    fn title_of(&self, conn: &RustConnection, w: XWindow) -> Result<String, CaptureError> {
        let utf8 = conn.get_property(false, w, self.net_wm_name, self.utf8_string, 0, 1024).map_err(x11)?;
        if let Ok(r) = utf8.reply()
            && !r.value.is_empty()
        {
            return Ok(String::from_utf8_lossy(&r.value).into_owned());
        }
        let legacy = conn.get_property(false, w, AtomEnum::WM_NAME, AtomEnum::ANY, 0, 1024).map_err(x11)?;
        // WM_NAME is Latin-1 (STRING) or compound text; each byte as a char is right for the first.
        Ok(legacy.reply().map(|r| r.value.iter().map(|&b| char::from(b)).collect()).unwrap_or_default())
    }
}
