//! What a recording needs to know of VP8 itself: a keyframe's picture size (RFC 6386 §9.1).

/// Width and height from a keyframe's uncompressed header; `None` for inter frames or bytes
/// that are not a VP8 keyframe.
pub fn keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    if frame.len() < 10 || frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u32::from(u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff);
    let height = u32::from(u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff);
    (width > 0 && height > 0).then_some((width, height))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_size_of_a_keyframe_only() {
        // A 1280x720 keyframe header (scale bits set high to show they are masked off).
        let key = [0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x45, 0xd0, 0x42];
        assert_eq!(super::keyframe_size(&key), Some((1280, 720)));
        let mut inter = key;
        inter[0] |= 1;
        assert_eq!(super::keyframe_size(&inter), None);
        assert_eq!(super::keyframe_size(&key[..9]), None);
        let mut foreign = key;
        foreign[4] = 0;
        assert_eq!(super::keyframe_size(&foreign), None);
    }
}
