//! Plays a recording's frames in the browser with WebCodecs, onto a canvas: the frames come
//! decrypted and verified from the recordings page, never as a file the relay made (R32: the relay
//! cannot read them). Seeking decodes from the keyframe before the target. The canvas says where
//! it is (`data-current-ms`, `data-duration-ms`) and announces each frame it draws (`frame`).

use wasm_bindgen::prelude::*;

#[wasm_bindgen(inline_js = r#"
export class FramePlayer {
  constructor(canvas, width, height) {
    this.canvas = canvas;
    canvas.width = width;
    canvas.height = height;
    this.ctx = canvas.getContext('2d');
    this.width = width;
    this.height = height;
    this.frames = [];
    this.next = 0;
    this.decoder = null;
    // A flushed decoder takes only a keyframe next: playing on starts a fresh one.
    this.flushed = false;
    // Frames before this time (ms) are decoded to rebuild the picture, not shown again.
    this.hideBefore = -1;
    this.playing = false;
  }
  push(ms, key, data) {
    // A view into wasm memory would not survive its growth: keep a copy.
    this.frames.push({ ms, key, data: data.slice() });
    this.canvas.dataset.durationMs = String(ms);
  }
  fresh() {
    if (this.decoder && this.decoder.state !== 'closed') this.decoder.close();
    this.decoder = new VideoDecoder({
      output: (frame) => {
        const ms = Math.round(frame.timestamp / 1000);
        if (ms >= this.hideBefore) {
          this.ctx.drawImage(frame, 0, 0, this.width, this.height);
          this.canvas.dataset.currentMs = String(ms);
          this.canvas.dispatchEvent(new CustomEvent('frame', { detail: ms }));
        }
        frame.close();
      },
      error: (e) => { this.canvas.dataset.error = String(e); },
    });
    this.decoder.configure({ codec: 'vp8', codedWidth: this.width, codedHeight: this.height, optimizeForLatency: true });
    this.flushed = false;
  }
  decode(i) {
    const f = this.frames[i];
    this.decoder.decode(new EncodedVideoChunk({ type: f.key ? 'key' : 'delta', timestamp: f.ms * 1000, data: f.data }));
  }
  keyBefore(i) {
    while (i > 0 && !this.frames[i].key) i--;
    return i;
  }
  // Shows the frame at `ms` (the last at or before it): decoded from the keyframe before it.
  async seek(ms) {
    const resume = this.playing;
    this.pause();
    let target = 0;
    for (let i = 0; i < this.frames.length && this.frames[i].ms <= ms; i++) target = i;
    this.fresh();
    this.hideBefore = this.frames[target].ms;
    for (let i = this.keyBefore(target); i <= target; i++) this.decode(i);
    this.next = target + 1;
    await this.decoder.flush();
    this.flushed = true;
    if (resume) this.play();
  }
  play() {
    if (this.playing || this.frames.length === 0) return;
    if (this.next >= this.frames.length) this.next = 0;
    if (this.decoder === null || this.flushed || this.next === 0) {
      this.fresh();
      // Rebuild the picture up to the frame shown, without showing those frames again.
      if (this.next > 0) {
        this.hideBefore = this.frames[this.next - 1].ms + 1;
        for (let i = this.keyBefore(this.next - 1); i < this.next; i++) this.decode(i);
      } else {
        this.hideBefore = -1;
      }
    }
    this.playing = true;
    this.canvas.dataset.playing = 'true';
    const wall0 = performance.now();
    const ms0 = this.frames[this.next].ms;
    const tick = () => {
      if (!this.playing) return;
      while (this.next < this.frames.length && this.frames[this.next].ms - ms0 <= performance.now() - wall0) {
        this.decode(this.next);
        this.next += 1;
      }
      if (this.next >= this.frames.length) {
        this.pause();
        this.canvas.dataset.ended = 'true';
        return;
      }
      this.timer = setTimeout(tick, 5);
    };
    tick();
  }
  pause() {
    this.playing = false;
    this.canvas.dataset.playing = 'false';
    clearTimeout(this.timer);
  }
}
"#)]
extern "C" {
    /// A canvas player of VP8 frames (WebCodecs).
    pub type FramePlayer;

    #[wasm_bindgen(constructor)]
    pub fn new(canvas: &web_sys::HtmlCanvasElement, width: u32, height: u32) -> FramePlayer;

    /// Appends a frame: its time in the video (ms), whether it is a keyframe, its bytes.
    #[wasm_bindgen(method)]
    pub fn push(this: &FramePlayer, ms: f64, key: bool, data: &[u8]);

    #[wasm_bindgen(method)]
    pub fn play(this: &FramePlayer);

    #[wasm_bindgen(method)]
    pub fn pause(this: &FramePlayer);

    /// Shows the frame at `ms` (the last one at or before it); playing goes on from there.
    #[wasm_bindgen(method)]
    pub fn seek(this: &FramePlayer, ms: f64) -> js_sys::Promise;
}
