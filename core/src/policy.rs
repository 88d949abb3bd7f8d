//! Session policy as data (R3, R4, R16, R20, R23): segments of devices, and per segment who may
//! connect, from where, when, with which levels, and the obligations that follow (consent
//! timeout, grant expiry, maximum duration, idle timeout, observer and recording requirements).
//!
//! `Policy::from_toml` validates a whole file up front (the relay refuses to start with an invalid
//! one); `Policy::decide` is a pure function of the policy and one request, with the time given.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Deserialize;

use crate::mask::{Area, MaskAudience, MaskRule, MaskTarget, WindowMatch};
use crate::roles::Role;
use sightline_proto::mask::FRACTION_UNITS;

/// What an operator may do in a session; defined with the wire types, so the prompt, the receipt
/// and the policy speak of the same levels.
pub use sightline_proto::Level;

/// Longest consent timeout a policy may set (R5: a dialog nobody answers is a deny).
pub const MAX_CONSENT_TIMEOUT_S: u32 = 120;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    /// Who runs this relay, shown to the user in the consent prompt.
    #[serde(default = "default_organisation")]
    organisation: String,
    reasons: Vec<String>,
    segments: BTreeMap<String, SegmentFile>,
    /// Which commands on the node's host need an admin's approval (`command_approval`).
    #[serde(default)]
    command_line: crate::command_approval::CommandLineFile,
    /// Who may sign in with a sealed one-time code when the store or the IdP is down (R43).
    #[serde(default)]
    break_glass: crate::break_glass::BreakGlassFile,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentFile {
    roles: Vec<Role>,
    operator_cidrs: Vec<String>,
    hours: Option<HoursFile>,
    levels: Vec<Level>,
    #[serde(default)]
    unattended: bool,
    /// Sessions need an open maintenance window for the device (R3). On unless the segment says
    /// `maintenance_window = false`: remote support is off by default.
    #[serde(default = "required")]
    maintenance_window: bool,
    #[serde(default = "default_consent_timeout")]
    consent_timeout_s: u32,
    grant_expiry_s: u32,
    max_duration_s: u32,
    idle_timeout_s: u32,
    #[serde(default)]
    observer_required_for_control: bool,
    /// Whether sessions are recorded (R26): `"required"` (the default) or `"off"`. The operator
    /// has no say.
    #[serde(default)]
    recording: RecordingRule,
    /// Days a recording is kept before the retention job deletes it (R31); none: kept until
    /// someone changes this.
    recording_retention_days: Option<u32>,
    #[serde(default)]
    elevation_needs_senior: bool,
    #[serde(default)]
    active_confirmation: bool,
    /// What the agent hides before encoding (R33).
    #[serde(default)]
    masks: Vec<MaskFile>,
    /// How long before the end of the support hours or the maintenance window both sides are
    /// warned that the session will end.
    #[serde(default = "default_end_warning")]
    end_warning_s: u32,
}

fn required() -> bool {
    true
}

fn default_end_warning() -> u32 {
    300
}

/// One `[[segments.NAME.masks]]` table: a name, an audience, and exactly one of `area_px`,
/// `area_fraction`, `window`, or `while_window` (which may add an area; the whole screen without).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaskFile {
    name: String,
    audience: MaskAudience,
    area_px: Option<PixelsFile>,
    area_fraction: Option<FractionFile>,
    window: Option<WindowFile>,
    while_window: Option<WindowFile>,
}

/// A window selector as written in the file. (The wire type leaves unknown keys to the strict
/// wire decoder; a file is refused by serde here.)
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowFile {
    class: Option<String>,
    title: Option<String>,
}

impl From<WindowFile> for WindowMatch {
    fn from(w: WindowFile) -> WindowMatch {
        WindowMatch { class: w.class, title: w.title }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct PixelsFile {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct FractionFile {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl MaskFile {
    fn area(&self) -> Result<Option<Area>, String> {
        match (self.area_px, self.area_fraction) {
            (Some(_), Some(_)) => Err("set area_px or area_fraction, not both".into()),
            (Some(p), None) => Ok(Some(Area::Pixels { x: p.x, y: p.y, w: p.w, h: p.h })),
            (None, Some(f)) => {
                let units = |v: f64| {
                    (0.0..=1.0)
                        .contains(&v)
                        .then(|| (v * f64::from(FRACTION_UNITS)).round() as u32)
                        .ok_or_else(|| format!("area_fraction: {v} is not within 0..1"))
                };
                Ok(Some(Area::Fraction { x: units(f.x)?, y: units(f.y)?, w: units(f.w)?, h: units(f.h)? }))
            }
            (None, None) => Ok(None),
        }
    }

    fn rule(self) -> Result<MaskRule, String> {
        let area = self.area()?;
        let target = match (self.window, self.while_window, area) {
            (None, None, Some(area)) => MaskTarget::Area { area },
            (Some(window), None, None) => MaskTarget::Window { window: window.into() },
            (None, Some(window), area) => MaskTarget::WhileWindow { window: window.into(), area },
            (Some(_), None, Some(_)) => {
                return Err("a window mask follows the window; it takes no area (use while_window)".into());
            }
            (Some(_), Some(_), _) => return Err("set window or while_window, not both".into()),
            (None, None, None) => {
                return Err("nothing to mask: set area_px, area_fraction, window or while_window".into());
            }
        };
        Ok(MaskRule { name: self.name, audience: self.audience, target })
    }
}

fn default_organisation() -> String {
    "IT support".into()
}

fn default_consent_timeout() -> u32 {
    60
}

/// A segment's recording rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RecordingRule {
    #[default]
    Required,
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HoursFile {
    tz: String,
    days: Vec<String>,
    from: String,
    to: String,
}

/// Working hours in a time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Hours {
    pub tz: jiff::tz::TimeZone,
    pub days: Vec<jiff::civil::Weekday>,
    pub from: jiff::civil::Time,
    pub to: jiff::civil::Time,
}

/// One segment's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub roles: BTreeSet<Role>,
    pub operator_cidrs: Vec<ipnet::IpNet>,
    pub hours: Option<Hours>,
    pub levels: BTreeSet<Level>,
    pub unattended: bool,
    pub maintenance_window: bool,
    /// What an allowed session in this segment must respect.
    pub terms: Obligations,
    /// Days recordings of this segment are kept (R31); `None`: no automatic deletion.
    pub recording_retention_days: Option<u32>,
    /// Mask rules, validated (R33).
    pub masks: Vec<MaskRule>,
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub organisation: String,
    pub reasons: BTreeSet<String>,
    pub segments: BTreeMap<String, Segment>,
    /// Commands on the node's host that need an admin's approval or the break-glass credential.
    pub command_line: crate::command_approval::CommandRules,
    pub break_glass: crate::break_glass::BreakGlassRules,
}

/// Why a policy file was refused; the message names the place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

fn weekday(s: &str) -> Option<jiff::civil::Weekday> {
    use jiff::civil::Weekday::*;
    Some(match s {
        "mon" => Monday,
        "tue" => Tuesday,
        "wed" => Wednesday,
        "thu" => Thursday,
        "fri" => Friday,
        "sat" => Saturday,
        "sun" => Sunday,
        _ => return None,
    })
}

impl Policy {
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError(format!("policy file: {e}")))?;
        let reasons: BTreeSet<String> =
            file.reasons.into_iter().map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()).collect();
        if reasons.is_empty() {
            return Err(PolicyError("policy file: the reason catalog is empty".into()));
        }
        if file.segments.is_empty() {
            return Err(PolicyError("policy file: no segments".into()));
        }
        let mut segments = BTreeMap::new();
        for (name, s) in file.segments {
            let at = |what: &str| PolicyError(format!("segment {name}: {what}"));
            let operator_cidrs = s
                .operator_cidrs
                .iter()
                .map(|c| c.parse::<ipnet::IpNet>().map_err(|_| at(&format!("operator_cidrs: {c:?} is not a CIDR"))))
                .collect::<Result<Vec<_>, _>>()?;
            let hours = match s.hours {
                None => None,
                Some(h) => {
                    let tz = jiff::tz::TimeZone::get(&h.tz)
                        .map_err(|_| at(&format!("hours.tz: unknown time zone {:?}", h.tz)))?;
                    let days = h
                        .days
                        .iter()
                        .map(|d| weekday(d).ok_or_else(|| at(&format!("hours.days: {d:?} (use mon..sun)"))))
                        .collect::<Result<Vec<_>, _>>()?;
                    let from: jiff::civil::Time =
                        h.from.parse().map_err(|_| at(&format!("hours.from: {:?} is not HH:MM", h.from)))?;
                    let to: jiff::civil::Time =
                        h.to.parse().map_err(|_| at(&format!("hours.to: {:?} is not HH:MM", h.to)))?;
                    if from >= to || days.is_empty() {
                        return Err(at("hours: need at least one day and from < to"));
                    }
                    Some(Hours { tz, days, from, to })
                }
            };
            let levels: BTreeSet<Level> = s.levels.into_iter().collect();
            if !levels.contains(&Level::View) {
                return Err(at("levels must include view"));
            }
            if s.roles.is_empty() {
                return Err(at("roles is empty: nobody could connect"));
            }
            if s.consent_timeout_s == 0 || s.consent_timeout_s > MAX_CONSENT_TIMEOUT_S {
                return Err(at(&format!("consent_timeout_s must be 1-{MAX_CONSENT_TIMEOUT_S}")));
            }
            for (field, v) in [
                ("grant_expiry_s", s.grant_expiry_s),
                ("max_duration_s", s.max_duration_s),
                ("idle_timeout_s", s.idle_timeout_s),
            ] {
                if v == 0 {
                    return Err(at(&format!("{field} must be positive")));
                }
            }
            let masks = s
                .masks
                .into_iter()
                .enumerate()
                .map(|(i, m)| {
                    let name = m.name.clone();
                    m.rule().map_err(|e| at(&format!("masks[{i}] ({name:?}): {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            crate::mask::Masks::new(&masks).map_err(|e| at(&e.to_string()))?;
            if s.recording == RecordingRule::Off
                && let Some(m) = masks.iter().find(|m| m.audience == MaskAudience::Recording)
            {
                // It would hide nothing from nobody; a rule that cannot act is refused, not ignored.
                return Err(at(&format!("mask {:?} is for the recording, but the segment records nothing", m.name)));
            }
            if s.unattended && s.recording == RecordingRule::Off {
                return Err(at("unattended access requires recording (R2)"));
            }
            if s.unattended && s.active_confirmation {
                // Nobody is at the screen to keep the session bar in view: every unattended
                // session would pause at once. Refused rather than half-enforced.
                return Err(at(
                    "unattended access and active_confirmation exclude each other: nobody is there to confirm",
                ));
            }
            segments.insert(
                name,
                Segment {
                    roles: s.roles.into_iter().collect(),
                    operator_cidrs,
                    hours,
                    levels,
                    unattended: s.unattended,
                    maintenance_window: s.maintenance_window,
                    terms: Obligations {
                        consent_timeout_s: s.consent_timeout_s,
                        grant_expiry_s: s.grant_expiry_s,
                        max_duration_s: s.max_duration_s,
                        idle_timeout_s: s.idle_timeout_s,
                        observer_required_for_control: s.observer_required_for_control,
                        recording_required: s.recording == RecordingRule::Required,
                        elevation_needs_senior: s.elevation_needs_senior,
                        active_confirmation: s.active_confirmation,
                        ends_at: None,
                        end_warning_s: s.end_warning_s,
                        unattended: false,
                    },
                    recording_retention_days: s.recording_retention_days,
                    masks,
                },
            );
        }
        let command_line = crate::command_approval::CommandRules::from_file(file.command_line).map_err(PolicyError)?;
        let break_glass = crate::break_glass::BreakGlassRules::from_file(file.break_glass).map_err(PolicyError)?;
        Ok(Policy { organisation: file.organisation, reasons, segments, command_line, break_glass })
    }
}

/// An operator's request to start a session, as plain facts.
#[derive(Debug, Clone)]
pub struct AccessRequest<'a> {
    pub roles: &'a BTreeSet<Role>,
    /// The segments the operator's directory groups reach (R12); `None`: not narrowed.
    pub segments: Option<&'a BTreeSet<String>>,
    pub source: IpAddr,
    pub segment: &'a str,
    pub levels: &'a BTreeSet<Level>,
    pub ticket: &'a str,
    pub reason: &'a str,
    pub now: jiff::Timestamp,
    /// When the maintenance window open for this device now ends (Unix ms); `None`: none is
    /// open (R3).
    pub maintenance_window_until: Option<u64>,
    /// Nobody is at the endpoint to consent (R2).
    pub unattended: bool,
    /// The operator signed in with a break-glass code (R43): view and chat, attended only.
    pub break_glass: bool,
}

/// Why a request is refused; shown to the operator and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    UnknownSegment,
    RoleNotAllowed,
    /// The operator's directory groups do not reach the device's segment (R12).
    SegmentNotReached,
    AddressNotAllowed,
    OutsideHours,
    LevelNotAllowed(Level),
    NoTicket,
    UnknownReason,
    MaintenanceWindowClosed,
    UnattendedNotAllowed,
    NoLevels,
    /// What a break-glass sign-in may not do (`break_glass::session_refusal`).
    BreakGlass(String),
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denial::UnknownSegment => f.write_str("the device's segment has no policy"),
            Denial::RoleNotAllowed => f.write_str("your roles may not connect to this segment"),
            Denial::SegmentNotReached => f.write_str("your directory groups do not reach this segment"),
            Denial::AddressNotAllowed => f.write_str("your network address is not allowed for this segment"),
            Denial::OutsideHours => f.write_str("outside the support hours of this segment"),
            Denial::LevelNotAllowed(l) => write!(f, "level {} is not allowed in this segment", l.as_str()),
            Denial::NoTicket => f.write_str("a request/ticket ID is required"),
            Denial::UnknownReason => f.write_str("the reason must be chosen from the catalog"),
            Denial::MaintenanceWindowClosed => {
                f.write_str("remote support is off for this device: no maintenance window is open")
            }
            Denial::UnattendedNotAllowed => f.write_str("unattended access is not allowed in this segment"),
            Denial::NoLevels => f.write_str("no levels requested"),
            Denial::BreakGlass(why) => f.write_str(why),
        }
    }
}

/// What an allowed session must respect. The same struct travels to the agent (as the wire's
/// `SessionTerms`), so both sides run the session machine under the same rules.
pub use sightline_proto::SessionTerms as Obligations;
pub use sightline_proto::{Deadline, EndsAt};

impl Policy {
    /// The levels a request asks for once those that are only on by default (chat) and that the
    /// segment switches off are taken out (R20): a viewer asks for chat unless the operator
    /// unticks it, and a segment without chat runs its sessions without it instead of refusing
    /// every default request. Anything else the segment does not allow stays in, for `decide` to
    /// refuse by name.
    pub fn without_switched_off_defaults(&self, segment: &str, levels: &BTreeSet<Level>) -> BTreeSet<Level> {
        let Some(seg) = self.segments.get(segment) else { return levels.clone() };
        levels.iter().copied().filter(|l| *l == Level::View || !l.on_by_default() || seg.levels.contains(l)).collect()
    }

    /// Decides a session request. Checks run in a fixed order so the reason is stable.
    pub fn decide(&self, req: &AccessRequest<'_>) -> Result<Obligations, Denial> {
        let seg = self.segments.get(req.segment).ok_or(Denial::UnknownSegment)?;
        if req.ticket.trim().is_empty() {
            return Err(Denial::NoTicket);
        }
        if !self.reasons.contains(req.reason.trim()) {
            return Err(Denial::UnknownReason);
        }
        if !req.roles.iter().any(|r| seg.roles.contains(r)) {
            return Err(Denial::RoleNotAllowed);
        }
        if req.segments.is_some_and(|reached| !reached.contains(req.segment)) {
            return Err(Denial::SegmentNotReached);
        }
        if !seg.operator_cidrs.iter().any(|net| net.contains(&req.source)) {
            return Err(Denial::AddressNotAllowed);
        }
        let mut ends: Vec<EndsAt> = Vec::new();
        if let Some(hours) = &seg.hours {
            let local = req.now.to_zoned(hours.tz.clone());
            let t = local.time();
            if !hours.days.contains(&local.weekday()) || t < hours.from || t >= hours.to {
                return Err(Denial::OutsideHours);
            }
            // Today's closing time in the segment's zone. Where the clock skips or repeats it (a
            // gap or fold of daylight saving time), the earlier instant: a session may end up to
            // the gap's length early, never after the door has closed.
            let close = hours.tz.to_ambiguous_zoned(local.date().to_datetime(hours.to)).earlier();
            match close {
                Ok(close) => ends.push(EndsAt { at_ms: unix_ms(close.timestamp()), because: Deadline::SupportHours }),
                // Out of jiff's range: the hours cannot be held, so the session is not allowed.
                Err(_) => return Err(Denial::OutsideHours),
            }
        }
        if req.levels.is_empty() {
            return Err(Denial::NoLevels);
        }
        if let Some(level) = req.levels.iter().find(|l| !seg.levels.contains(l)) {
            return Err(Denial::LevelNotAllowed(*level));
        }
        if req.break_glass
            && let Some(why) = crate::break_glass::session_refusal(req.levels, req.unattended)
        {
            return Err(Denial::BreakGlass(why));
        }
        if req.unattended && !seg.unattended {
            return Err(Denial::UnattendedNotAllowed);
        }
        // Unattended access needs the recorder (load refuses it otherwise; checked again here so
        // no other path can serve one unrecorded) and an open window even where attended support
        // is always on: nobody at the screen can notice, so somebody must have opened it (R2).
        if req.unattended && !seg.terms.recording_required {
            return Err(Denial::UnattendedNotAllowed);
        }
        if seg.maintenance_window || req.unattended {
            let until = req.maintenance_window_until.ok_or(Denial::MaintenanceWindowClosed)?;
            ends.push(EndsAt { at_ms: until, because: Deadline::MaintenanceWindow });
        }
        // The earlier end holds; on a tie, the hours (the segment's rule) are named.
        let ends_at = ends.into_iter().min_by_key(|e| e.at_ms);
        Ok(Obligations { ends_at, unattended: req.unattended, ..seg.terms })
    }
}

fn unix_ms(t: jiff::Timestamp) -> u64 {
    u64::try_from(t.as_millisecond()).unwrap_or(0)
}

#[cfg(test)]
mod tests;
