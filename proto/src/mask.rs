//! Mask rules as they travel from the relay to the agent with a session request (R33, R34).
//!
//! The policy file is parsed and validated in `core::policy`; the agent matches the rules against
//! its windows with `core::mask`. These are only the shared shapes.

use serde::{Deserialize, Serialize};

/// Fractions of the screen are sent in these units (1/10 000), so the types stay `Eq` and a rule
/// hashes and compares the same on both sides.
pub const FRACTION_UNITS: u32 = 10_000;

/// One mask rule of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskRule {
    /// Shown to the user in the session bar and to the operator ("customer panel").
    pub name: String,
    pub audience: MaskAudience,
    pub target: MaskTarget,
}

/// Whose picture a rule hides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskAudience {
    /// The operator and observers.
    Operator,
    /// The recording.
    Recording,
    Both,
}

impl MaskAudience {
    pub fn as_str(self) -> &'static str {
        match self {
            MaskAudience::Operator => "operator",
            MaskAudience::Recording => "recording",
            MaskAudience::Both => "operator and recording",
        }
    }
}

/// What a rule covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum MaskTarget {
    /// A fixed part of the screen.
    Area { area: Area },
    /// Every window that matches, wherever it is (its frame, title bar included).
    Window { window: WindowMatch },
    /// While a matching window exists, `area` (the whole screen when none) is covered.
    WhileWindow { window: WindowMatch, area: Option<Area> },
}

/// A window selector: shell-style patterns (`*`, `?`) over `WM_CLASS` (instance or class) and the
/// title. At least one is set; both must match when both are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowMatch {
    pub class: Option<String>,
    pub title: Option<String>,
}

/// A rectangle on the screen, in pixels or in fractions of the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "unit")]
pub enum Area {
    Pixels {
        x: u32,
        y: u32,
        w: u32,
        h: u32,
    },
    /// In 1/`FRACTION_UNITS` of the screen's width (x, w) and height (y, h).
    Fraction {
        x: u32,
        y: u32,
        w: u32,
        h: u32,
    },
}

/// How the session bar and the prompt describe the rules: `customer panel (operator and recording)`.
pub fn masks_text(rules: &[MaskRule]) -> String {
    if rules.is_empty() {
        return "none".into();
    }
    rules.iter().map(|r| format!("{} ({})", r.name, r.audience.as_str())).collect::<Vec<_>>().join(", ")
}
