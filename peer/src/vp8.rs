//! Reading VP8 out of RTP (RFC 7741): where keyframes start, and whole frames from packets.
//!
//! The relay needs the first to hold a new viewer's stream until a picture it can decode, and
//! a recorder or a test needs the second to get frames back out of a track.
//!
//! The payload descriptor is parsed here rather than with rtc's `Vp8Packet`: that depacketizer
//! refuses payloads under four bytes, which rtc's own payloader emits as the last fragment of a
//! frame one or two bytes past a packet boundary, and it keeps optional fields from the previous
//! packet when the next one omits them.

use bytes::Bytes;

use crate::RtpPacket;

/// The parts of an RFC 7741 payload descriptor we act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Descriptor {
    /// S=1 and PID=0: this packet starts a frame.
    starts_frame: bool,
    /// Where the VP8 data begins.
    header_len: usize,
}

fn descriptor(payload: &[u8]) -> Option<Descriptor> {
    let first = *payload.first()?;
    let mut len = 1;
    if first & 0x80 != 0 {
        let extension = *payload.get(1)?;
        len += 1;
        if extension & 0x80 != 0 {
            // PictureID: 7 bits, or 15 when its M bit is set.
            let picture_id = *payload.get(len)?;
            len += if picture_id & 0x80 != 0 { 2 } else { 1 };
        }
        if extension & 0x40 != 0 {
            len += 1; // TL0PICIDX
        }
        if extension & 0x30 != 0 {
            len += 1; // TID/Y/KEYIDX
        }
    }
    (payload.len() > len)
        .then_some(Descriptor { starts_frame: first & 0x10 != 0 && first & 0x07 == 0, header_len: len })
}

/// Whether `payload` (an RTP payload, descriptor included) is the first packet of a keyframe:
/// the start of partition 0 (S=1, PID=0) whose VP8 frame header has the P bit clear.
pub fn starts_keyframe(payload: &Bytes) -> bool {
    descriptor(payload).is_some_and(|d| d.starts_frame && payload[d.header_len] & 0x01 == 0)
}

/// One VP8 frame reassembled from its packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// RTP timestamp (90 kHz) shared by the frame's packets.
    pub timestamp: u32,
    pub keyframe: bool,
    pub data: Vec<u8>,
}

/// Assembles RTP packets into VP8 frames: payloads from a partition start up to the marker bit.
/// A sequence gap spoils the frame being built; it is dropped rather than handed to a decoder
/// or a file as if whole.
#[derive(Debug, Default)]
pub struct FrameAssembler {
    current: Option<Frame>,
    expected_seq: Option<u16>,
    broken: bool,
}

impl FrameAssembler {
    /// Adds a packet; returns a frame when this packet completed one.
    pub fn push(&mut self, packet: &RtpPacket) -> Option<Frame> {
        let seq = packet.header.sequence_number;
        if self.expected_seq.is_some_and(|s| s != seq) {
            self.broken = true;
        }
        self.expected_seq = Some(seq.wrapping_add(1));
        let Some(descriptor) = descriptor(&packet.payload) else {
            self.broken = true;
            return None;
        };
        let payload = &packet.payload[descriptor.header_len..];
        if descriptor.starts_frame {
            self.current = Some(Frame {
                timestamp: packet.header.timestamp,
                keyframe: payload[0] & 0x01 == 0,
                data: Vec::with_capacity(payload.len() * 4),
            });
            self.broken = false;
        }
        let frame = self.current.as_mut()?;
        if frame.timestamp != packet.header.timestamp {
            // A packet of another frame without that frame's start: the start was lost.
            self.current = None;
            return None;
        }
        frame.data.extend_from_slice(payload);
        if !packet.header.marker {
            return None;
        }
        let frame = self.current.take()?;
        if std::mem::take(&mut self.broken) { None } else { Some(frame) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::codec::vp8::Vp8Payloader;
    use rtc::rtp::packetizer::Payloader;

    /// A keyframe header starts with the P bit clear; an inter frame's has it set.
    const KEY: [u8; 10] = [0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02];
    const DELTA: [u8; 4] = [0x51, 0x02, 0x00, 0x07];

    fn packets(frame: &[u8], mtu: usize, timestamp: u32, first_seq: u16) -> Vec<RtpPacket> {
        let payloads = Vp8Payloader::default().payload(mtu, &Bytes::copy_from_slice(frame)).unwrap();
        let last = payloads.len() - 1;
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let mut p = RtpPacket { payload, ..Default::default() };
                p.header.timestamp = timestamp;
                p.header.sequence_number = first_seq.wrapping_add(i as u16);
                p.header.marker = i == last;
                p
            })
            .collect()
    }

    #[test]
    fn only_the_first_packet_of_a_keyframe_starts_one() {
        let key = packets(&KEY.repeat(3), 8, 0, 0);
        assert!(key.len() > 2);
        assert!(starts_keyframe(&key[0].payload));
        assert!(key[1..].iter().all(|p| !starts_keyframe(&p.payload)), "continuations do not start a frame");
        let delta = packets(&DELTA, 1200, 0, 0);
        assert!(!starts_keyframe(&delta[0].payload));
        assert!(!starts_keyframe(&Bytes::new()));
    }

    #[test]
    fn optional_descriptor_fields_are_skipped() {
        // X=1 with I (15-bit PictureID), L and T/K present, then a keyframe header.
        let payload = Bytes::from_static(&[0x90, 0xf0, 0x81, 0x23, 0x05, 0x40, 0x50, 0x2a]);
        assert_eq!(descriptor(&payload), Some(Descriptor { starts_frame: true, header_len: 6 }));
        assert!(starts_keyframe(&payload));
        // The same with a 7-bit PictureID and an inter-frame header.
        let payload = Bytes::from_static(&[0x90, 0x80, 0x23, 0x51]);
        assert_eq!(descriptor(&payload), Some(Descriptor { starts_frame: true, header_len: 3 }));
        assert!(!starts_keyframe(&payload));
        // Truncated inside the descriptor: no frame data at all.
        assert_eq!(descriptor(&[0x90, 0x80]), None);
        // A two-byte packet (the last sliver of a frame) is valid.
        assert_eq!(descriptor(&[0x00, 0x07]), Some(Descriptor { starts_frame: false, header_len: 1 }));
    }

    #[test]
    fn frames_come_back_whole_and_a_gap_spoils_only_its_frame() {
        let mut assembler = FrameAssembler::default();
        let mut stream = packets(&KEY.repeat(3), 8, 3000, 65_534); // wraps the sequence number
        let next = stream.last().unwrap().header.sequence_number.wrapping_add(1);
        stream.extend(packets(&DELTA.repeat(4), 6, 6000, next));
        let after_delta = stream.last().unwrap().header.sequence_number.wrapping_add(1);
        let frames: Vec<Frame> = stream.iter().filter_map(|p| assembler.push(p)).collect();
        assert_eq!(frames.len(), 2);
        assert_eq!((frames[0].timestamp, frames[0].keyframe, frames[0].data.clone()), (3000, true, KEY.repeat(3)));
        assert_eq!((frames[1].timestamp, frames[1].keyframe, frames[1].data.clone()), (6000, false, DELTA.repeat(4)));

        let mut lossy = packets(&DELTA.repeat(4), 6, 9000, after_delta);
        lossy.remove(1);
        let then = lossy.last().unwrap().header.sequence_number.wrapping_add(1);
        assert!(lossy.iter().all(|p| assembler.push(p).is_none()), "a frame with a hole is dropped");
        let recovered: Vec<Frame> =
            packets(&DELTA, 1200, 12_000, then).iter().filter_map(|p| assembler.push(p)).collect();
        assert_eq!(recovered.len(), 1, "the next whole frame comes through");
    }

    #[test]
    fn packets_before_the_first_frame_start_are_ignored() {
        let mut assembler = FrameAssembler::default();
        let stream = packets(&KEY.repeat(3), 8, 0, 10);
        assert!(stream[1..].iter().all(|p| assembler.push(p).is_none()));
        let next = packets(&DELTA, 1200, 3000, 10 + stream.len() as u16);
        assert_eq!(next.iter().filter_map(|p| assembler.push(p)).count(), 1);
    }
}
