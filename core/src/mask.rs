//! Masks (R33, R35): which parts of a frame an audience must not see, from a segment's rules and
//! the windows on the screen, and the solid fill that hides them before encoding.
//!
//! Pure: the agent reads the windows from its X server and hands them in with the frame they
//! belong to, so the decision can be tested with plain values.

use sightline_proto::mask::FRACTION_UNITS;
pub use sightline_proto::mask::{Area, MaskAudience, MaskRule, MaskTarget, WindowMatch};
use wildmatch::WildMatch;

/// A part of the screen, already clipped to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// A top-level window as the X server describes it: its frame (title bar and border included)
/// in screen coordinates, which may reach past the screen's edges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Window {
    /// `WM_CLASS`: instance and class names.
    pub instance: String,
    pub class: String,
    pub title: String,
    pub x: i32,
    pub y: i32,
    pub w: u32,
    pub h: u32,
    /// Mapped and shown (an iconified or withdrawn window shows nothing but still "exists" for a
    /// while-window rule).
    pub viewable: bool,
}

/// Whose picture is being prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Operator,
    Recording,
}

/// Whether a rule with this audience hides something from `picture`.
fn hides_from(rule: MaskAudience, picture: Audience) -> bool {
    matches!(
        (rule, picture),
        (MaskAudience::Both, _)
            | (MaskAudience::Operator, Audience::Operator)
            | (MaskAudience::Recording, Audience::Recording)
    )
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error("mask {0:?}: a window selector needs a class or a title pattern")]
    EmptySelector(String),
    #[error("mask {0:?}: the area is empty")]
    EmptyArea(String),
    #[error("mask {0:?}: a fraction of the screen must lie within 0..1")]
    FractionOutOfRange(String),
    #[error("a mask has an empty name")]
    NoName,
}

/// A selector with its patterns compiled once per session.
#[derive(Debug, Clone)]
struct Selector {
    class: Option<WildMatch>,
    title: Option<WildMatch>,
}

impl Selector {
    fn new(name: &str, m: &WindowMatch) -> Result<Selector, MaskError> {
        let compile = |p: &Option<String>| p.as_deref().filter(|p| !p.is_empty()).map(WildMatch::new);
        let selector = Selector { class: compile(&m.class), title: compile(&m.title) };
        if selector.class.is_none() && selector.title.is_none() {
            return Err(MaskError::EmptySelector(name.to_owned()));
        }
        Ok(selector)
    }

    fn matches(&self, w: &Window) -> bool {
        self.class.as_ref().is_none_or(|c| c.matches(&w.instance) || c.matches(&w.class))
            && self.title.as_ref().is_none_or(|t| t.matches(&w.title))
    }
}

#[derive(Debug, Clone)]
enum Compiled {
    Area(Area),
    Window(Selector),
    WhileWindow(Selector, Option<Area>),
}

/// A session's mask rules, validated and compiled.
#[derive(Debug, Clone, Default)]
pub struct Masks {
    rules: Vec<(MaskRule, Compiled)>,
}

/// What to hide in one frame from one audience, and which rules caused it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub rects: Vec<Rect>,
    /// Indexes of the rules that hide something in this frame.
    pub active: Vec<usize>,
}

fn check_area(name: &str, area: &Area) -> Result<(), MaskError> {
    let (x, y, w, h) = match *area {
        Area::Pixels { x, y, w, h } | Area::Fraction { x, y, w, h } => (x, y, w, h),
    };
    if w == 0 || h == 0 {
        return Err(MaskError::EmptyArea(name.to_owned()));
    }
    if matches!(area, Area::Fraction { .. })
        && (u64::from(x) + u64::from(w) > u64::from(FRACTION_UNITS)
            || u64::from(y) + u64::from(h) > u64::from(FRACTION_UNITS))
    {
        return Err(MaskError::FractionOutOfRange(name.to_owned()));
    }
    Ok(())
}

impl Masks {
    pub fn new(rules: &[MaskRule]) -> Result<Masks, MaskError> {
        let mut compiled = Vec::with_capacity(rules.len());
        for rule in rules {
            let name = rule.name.as_str();
            if name.trim().is_empty() {
                return Err(MaskError::NoName);
            }
            let c = match &rule.target {
                MaskTarget::Area { area } => {
                    check_area(name, area)?;
                    Compiled::Area(*area)
                }
                MaskTarget::Window { window } => Compiled::Window(Selector::new(name, window)?),
                MaskTarget::WhileWindow { window, area } => {
                    if let Some(a) = area {
                        check_area(name, a)?;
                    }
                    Compiled::WhileWindow(Selector::new(name, window)?, *area)
                }
            };
            compiled.push((rule.clone(), c));
        }
        Ok(Masks { rules: compiled })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> impl Iterator<Item = &MaskRule> {
        self.rules.iter().map(|(r, _)| r)
    }

    /// Whether any rule depends on windows (a source without windows cannot apply these).
    pub fn needs_windows(&self) -> bool {
        self.rules.iter().any(|(_, c)| !matches!(c, Compiled::Area(_)))
    }

    /// Whether any window rule selects this window (its geometry or existence changes a plan).
    pub fn selects(&self, window: &Window) -> bool {
        self.rules.iter().any(|(_, c)| match c {
            Compiled::Area(_) => false,
            Compiled::Window(s) | Compiled::WhileWindow(s, _) => s.matches(window),
        })
    }

    /// Whether the operator's picture and the recording's differ (two tracks are then needed).
    pub fn audiences_differ(&self) -> bool {
        self.rules.iter().any(|(r, _)| r.audience != MaskAudience::Both)
    }

    /// What to hide from `audience` in a frame of `screen` size showing `windows` (bottom to top).
    ///
    /// A masked window is covered whole, even where other windows lie on top of it: hiding more
    /// than needed costs the operator a little picture, hiding less would leak.
    pub fn plan(&self, screen: (u32, u32), windows: &[Window], audience: Audience) -> Plan {
        let mut plan = Plan::default();
        for (i, (rule, compiled)) in self.rules.iter().enumerate() {
            if !hides_from(rule.audience, audience) {
                continue;
            }
            let before = plan.rects.len();
            match compiled {
                Compiled::Area(area) => plan.rects.extend(area_rect(area, screen)),
                Compiled::Window(selector) => plan.rects.extend(
                    windows
                        .iter()
                        .filter(|w| w.viewable && selector.matches(w))
                        .filter_map(|w| clip(i64::from(w.x), i64::from(w.y), w.w, w.h, screen)),
                ),
                Compiled::WhileWindow(selector, area) => {
                    if windows.iter().any(|w| selector.matches(w)) {
                        let whole = Area::Pixels { x: 0, y: 0, w: screen.0, h: screen.1 };
                        plan.rects.extend(area_rect(area.as_ref().unwrap_or(&whole), screen));
                    }
                }
            }
            if plan.rects.len() > before {
                plan.active.push(i);
            }
        }
        plan
    }
}

fn clip(x: i64, y: i64, w: u32, h: u32, screen: (u32, u32)) -> Option<Rect> {
    let x0 = x.clamp(0, i64::from(screen.0));
    let y0 = y.clamp(0, i64::from(screen.1));
    let x1 = (x + i64::from(w)).clamp(0, i64::from(screen.0));
    let y1 = (y + i64::from(h)).clamp(0, i64::from(screen.1));
    (x1 > x0 && y1 > y0).then(|| Rect { x: x0 as u32, y: y0 as u32, w: (x1 - x0) as u32, h: (y1 - y0) as u32 })
}

/// An area on a screen of this size. Fractions round outwards, so a mask never comes up a pixel
/// short.
pub fn area_rect(area: &Area, screen: (u32, u32)) -> Option<Rect> {
    match *area {
        Area::Pixels { x, y, w, h } => clip(i64::from(x), i64::from(y), w, h, screen),
        Area::Fraction { x, y, w, h } => {
            let units = u64::from(FRACTION_UNITS);
            let lo = |v: u32, size: u32| (u64::from(v) * u64::from(size) / units) as i64;
            let hi = |v: u32, size: u32| (u64::from(v) * u64::from(size)).div_ceil(units) as i64;
            let (x0, y0) = (lo(x, screen.0), lo(y, screen.1));
            let (x1, y1) = (hi(x + w, screen.0), hi(y + h, screen.1));
            clip(x0, y0, (x1 - x0) as u32, (y1 - y0) as u32, screen)
        }
    }
}

/// The fill of masked pixels (BGRA): a flat dark grey, which costs the encoder almost nothing.
pub const FILL: [u8; 4] = [0x3c, 0x3c, 0x3c, 0xff];

/// Paints `rects` of a BGRA frame (`stride` bytes per row) with `FILL`.
pub fn fill(bgra: &mut [u8], stride: usize, rects: &[Rect]) {
    let widest = rects.iter().map(|r| r.w as usize).max().unwrap_or(0);
    let row: Vec<u8> = FILL.iter().copied().cycle().take(widest * 4).collect();
    for r in rects {
        let (x, w) = (r.x as usize * 4, r.w as usize * 4);
        for y in r.y as usize..(r.y + r.h) as usize {
            let start = y * stride + x;
            if let Some(dst) = bgra.get_mut(start..start + w) {
                dst.copy_from_slice(&row[..w]);
            }
        }
    }
}

#[cfg(test)]
mod tests;
