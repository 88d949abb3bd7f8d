//! How an agent proves it holds its enrolled key: it signs a fresh relay challenge.

/// Domain separation: a signature made for this purpose is useless for any other.
pub const CONTEXT: &[u8] = b"sightline agent auth v1\0";

/// What an agent signs to open a maintenance window: the hello message plus the window, so
/// a signature for one window cannot be replayed for another.
pub fn window_message(challenge: &[u8], device_id: &str, start_ms: u64, end_ms: u64) -> Vec<u8> {
    let mut m = signed_message(challenge, device_id);
    m.extend_from_slice(b"\0window\0");
    m.extend_from_slice(&start_ms.to_be_bytes());
    m.extend_from_slice(&end_ms.to_be_bytes());
    m
}

/// The exact bytes of a consent receipt the device signs: every field, in a fixed order,
/// length-prefixed so no two receipts share their bytes.
pub fn consent_message(r: &crate::ConsentReceipt) -> Vec<u8> {
    let mut m = b"sightline consent receipt v2\0".to_vec();
    let kind = match r.kind {
        crate::ConsentKind::Session => "session",
        crate::ConsentKind::Elevation => "elevation",
        crate::ConsentKind::Unattended => "unattended",
    };
    let decision = match r.decision {
        crate::Decision::Allow => "allow",
        crate::Decision::Deny => "deny",
        crate::Decision::Closed => "closed",
        crate::Decision::TimedOut => "timed_out",
    };
    let levels = crate::levels_text(&r.levels);
    for field in [kind, &r.session_id, &r.device_id, &r.operator, &r.ticket, &r.endpoint_user, decision, &levels] {
        m.extend_from_slice(&(field.len() as u64).to_be_bytes());
        m.extend_from_slice(field.as_bytes());
    }
    m.extend_from_slice(&r.time_ms.to_be_bytes());
    m
}

/// The exact bytes of a media seal the device signs: session, position in the chain, the
/// previous link and every frame, length-prefixed.
pub fn media_seal_message(seal: &crate::channel::MediaSeal) -> Vec<u8> {
    let mut m = b"sightline media seal v1\0".to_vec();
    for field in [seal.session_id.as_str(), seal.prev.as_str()] {
        m.extend_from_slice(&(field.len() as u64).to_be_bytes());
        m.extend_from_slice(field.as_bytes());
    }
    m.extend_from_slice(&seal.seq.to_be_bytes());
    m.extend_from_slice(&(seal.frames.len() as u64).to_be_bytes());
    for frame in &seal.frames {
        m.extend_from_slice(&frame.ts.to_be_bytes());
        m.extend_from_slice(&(frame.sha256.len() as u64).to_be_bytes());
        m.extend_from_slice(frame.sha256.as_bytes());
    }
    m
}

/// What an agent signs to close its maintenance windows early: its own purpose, so no other
/// signature can end a window.
pub fn close_window_message(challenge: &[u8], device_id: &str) -> Vec<u8> {
    let mut m = signed_message(challenge, device_id);
    m.extend_from_slice(b"\0close-window\0");
    m
}

/// What an agent signs to ask for help: the hello message and the purpose, so a hello's
/// signature cannot open a help request, nor the other way round.
pub fn help_message(challenge: &[u8], device_id: &str) -> Vec<u8> {
    let mut m = signed_message(challenge, device_id);
    m.extend_from_slice(b"\0help\0");
    m
}

/// The exact bytes an agent signs: context, challenge, device id.
pub fn signed_message(challenge: &[u8], device_id: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + challenge.len() + device_id.len() + 1);
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(challenge);
    m.push(0);
    m.extend_from_slice(device_id.as_bytes());
    m
}
