//! The operator's identity burned into the operator's picture (R36): a photo or a screenshot of
//! the operator's screen names the operator, the session and the time it shows.
//!
//! The stamp is a line of text in a bitmap font, lightened into the frame (with a darkened shadow
//! so it reads on light and dark screens alike), tiled over the whole picture so that a cropped
//! photo still carries it. Faint by design: the operator must still read the user's screen.
//!
//! Pure: the agent hands in the text and the time; the clock stays at the edge.

use font8x8::legacy::{BASIC_LEGACY, LATIN_LEGACY};

/// Each font pixel becomes a square of this many screen pixels.
pub const SCALE: usize = 2;
/// The height of one line of text on screen.
pub const LINE_HEIGHT: usize = 8 * SCALE;
/// How much a glyph pixel is lightened towards white, and its shadow darkened towards black, in
/// 1/256ths: faint, but legible on any background VP8 keeps.
pub const STRENGTH: u16 = 80;
/// Vertical distance between rows of stamps, and the horizontal gap between stamps in a row.
pub const ROW_SPACING: usize = 160;
pub const GAP: usize = 96;
/// Where the first stamp starts (top left).
pub const MARGIN: usize = 24;

/// The text stamped on one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    glyphs: Vec<[u8; 8]>,
}

/// The line a session's operator picture carries: who watches, which session, and when (UTC, to
/// the minute).
pub fn line(operator: &str, session_id: &str, unix_ms: u64) -> String {
    let when = i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| "time unknown".to_owned(), |t| t.strftime("%Y-%m-%d %H:%M UTC").to_string());
    format!("{operator} | session {session_id} | {when}")
}

/// The 8x8 bitmap of `c`: ASCII and Latin-1 as themselves, anything else as `?` (the font has
/// nothing for it, and a blank would hide that a character was there).
pub fn glyph(c: char) -> [u8; 8] {
    let code = c as u32;
    match code {
        0x20..=0x7e => BASIC_LEGACY[code as usize],
        0xa0..=0xff => LATIN_LEGACY[(code - 0xa0) as usize],
        _ => BASIC_LEGACY[b'?' as usize],
    }
}

impl Watermark {
    pub fn new(text: &str) -> Watermark {
        Watermark { glyphs: text.chars().map(glyph).collect() }
    }

    /// The width of one stamp on screen.
    pub fn width(&self) -> usize {
        self.glyphs.len() * 8 * SCALE
    }

    /// The top-left corners of every stamp on a `width` x `height` frame. Each row starts a third
    /// of a stamp further left than the one above (cut at the frame's edge), so no column of the
    /// screen goes unmarked.
    pub fn origins(&self, width: u32, height: u32) -> Vec<(isize, usize)> {
        let mut out = Vec::new();
        if self.glyphs.is_empty() {
            return out;
        }
        let step = self.width() + GAP;
        let (mut y, mut row) = (MARGIN, 0);
        while y + LINE_HEIGHT + SCALE <= height as usize {
            let mut x = MARGIN as isize - ((row % 3) * step / 3) as isize;
            while x < width as isize {
                out.push((x, y));
                x += step as isize;
            }
            y += ROW_SPACING;
            row += 1;
        }
        out
    }

    /// Stamps the text over a BGRA frame (`stride` bytes per row) of `width` x `height`.
    pub fn stamp(&self, bgra: &mut [u8], stride: usize, width: u32, height: u32) {
        for (x, y) in self.origins(width, height) {
            self.stamp_at(bgra, stride, (width as usize, height as usize), x, y);
        }
    }

    /// One stamp with its left edge at `x` (which may lie left of the frame: that part is cut).
    fn stamp_at(&self, bgra: &mut [u8], stride: usize, size: (usize, usize), x: isize, y: usize) {
        for (i, rows) in self.glyphs.iter().enumerate() {
            let gx = x + (i * 8 * SCALE) as isize;
            for (r, bits) in rows.iter().enumerate() {
                for c in 0..8 {
                    if bits & (1 << c) == 0 {
                        continue;
                    }
                    let px = gx + (c * SCALE) as isize;
                    let py = y + r * SCALE;
                    // The shadow first, one font pixel down and right, then the glyph over it.
                    blend_square(bgra, stride, size, px + SCALE as isize, py + SCALE, 0);
                    blend_square(bgra, stride, size, px, py, 255);
                }
            }
        }
    }
}

/// Moves a SCALE x SCALE square towards `towards` (0 or 255) by `STRENGTH`.
fn blend_square(bgra: &mut [u8], stride: usize, size: (usize, usize), x: isize, y: usize, towards: u16) {
    for dy in 0..SCALE {
        let row = y + dy;
        if row >= size.1 {
            return;
        }
        for dx in 0..SCALE {
            let col = x + dx as isize;
            if col < 0 || col as usize >= size.0 {
                continue;
            }
            let at = row * stride + col as usize * 4;
            if let Some(px) = bgra.get_mut(at..at + 3) {
                for v in px {
                    *v = ((u16::from(*v) * (256 - STRENGTH) + towards * STRENGTH) >> 8) as u8;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREY: u8 = 0x80;

    fn frame(w: u32, h: u32) -> Vec<u8> {
        vec![GREY; (w * h * 4) as usize]
    }

    fn px(bgra: &[u8], w: u32, x: usize, y: usize) -> u8 {
        bgra[(y * w as usize + x) * 4]
    }

    /// Reads the text back from the first stamp: every font pixel set is lighter than the
    /// background, every one clear (and not in a neighbour's shadow) is untouched.
    fn read_back(bgra: &[u8], w: u32, origin: (usize, usize), len: usize) -> String {
        let mut out = String::new();
        for i in 0..len {
            let mut rows = [0u8; 8];
            for (r, row) in rows.iter_mut().enumerate() {
                for c in 0..8 {
                    let v = px(bgra, w, origin.0 + (i * 8 + c) * SCALE, origin.1 + r * SCALE);
                    if v > GREY {
                        *row |= 1 << c;
                    }
                }
            }
            let found = (0x20u8..0x7f).map(char::from).find(|&c| glyph(c) == rows).unwrap_or('\u{fffd}');
            out.push(found);
        }
        out
    }

    #[test]
    fn the_stamp_spells_the_operator_session_and_time() {
        let text = line("Olga Operator (olga)", "5f2c9a", 1_796_219_700_000);
        assert_eq!(text, "Olga Operator (olga) | session 5f2c9a | 2026-12-02 13:55 UTC");
        let (w, h) = (1280, 720);
        let mut bgra = frame(w, h);
        let mark = Watermark::new(&text);
        mark.stamp(&mut bgra, w as usize * 4, w, h);
        let origins = mark.origins(w, h);
        assert_eq!(origins[0], (MARGIN as isize, MARGIN));
        assert_eq!(read_back(&bgra, w, (MARGIN, MARGIN), text.chars().count()), text);
    }

    #[test]
    fn the_stamp_is_faint_and_covers_every_part_of_the_screen() {
        let (w, h) = (1920, 1080);
        let mut bgra = frame(w, h);
        let mark = Watermark::new(&line("Olga Operator (olga)", "5f2c9a", 0));
        mark.stamp(&mut bgra, w as usize * 4, w, h);
        let changed: Vec<u8> = bgra.chunks(4).map(|p| p[0]).filter(|&v| v != GREY).collect();
        // Faint: no pixel moves more than STRENGTH/256 of the way to white or black.
        let max_step = (u16::from(255 - GREY) * STRENGTH).div_ceil(256) as u8;
        assert!(changed.iter().all(|&v| v.abs_diff(GREY) <= max_step), "a pixel moved too far");
        // A minority of pixels, yet a mark in every quarter of the screen (a cropped photo keeps one).
        let share = changed.len() as f64 / f64::from(w * h);
        assert!(share > 0.005 && share < 0.15, "{share}");
        for (qx, qy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let (x0, y0) = (qx * w as usize / 2, qy * h as usize / 2);
            let marked =
                (y0..y0 + h as usize / 2).any(|y| (x0..x0 + w as usize / 2).any(|x| px(&bgra, w, x, y) != GREY));
            assert!(marked, "quarter {qx},{qy} carries no mark");
        }
    }

    #[test]
    fn edges_and_odd_text_are_safe() {
        // A frame smaller than one stamp, a stride with padding, text the font lacks.
        let (w, h) = (40, 30);
        let stride = w as usize * 4 + 16;
        let mut bgra = vec![GREY; stride * h as usize];
        Watermark::new("Łukasz ✓ Zoë").stamp(&mut bgra, stride, w, h);
        assert!(bgra.chunks(stride).all(|row| row[w as usize * 4..].iter().all(|&v| v == GREY)), "padding touched");
        assert_eq!(glyph('Ł'), glyph('?'));
        assert_eq!(glyph('ë'), LATIN_LEGACY[0xeb - 0xa0]);
        Watermark::new("").stamp(&mut bgra, stride, w, h);
        assert!(Watermark::new("").origins(w, h).is_empty());
    }
}
