// Masks (R33, R35): what a segment's rules hide is painted over on the endpoint, in the raw
// frame, before it is encoded. A real X display with a window manager; the windows are xterms in
// a colour nothing else on the screen has, and every frame the browser decodes is searched for it.
import { expect, Page } from '@playwright/test';
import { test } from './harness';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, execFileSync, ChildProcess } from 'node:child_process';
import { World, world, worldOn, stopWorld, Xvfb, openView, tempDir, SAMPLE_POLICY, waitFor, Proc, Endpoint, dominantColour, recordMeasurement, auditorKeys, approveCommand, Relay, ProxyNamespace, freePort } from './harness';

let w: World | undefined;
let xvfb: Xvfb | undefined;
let wm: Proc | undefined;
let ns: ProxyNamespace | undefined;
const windows: ChildProcess[] = [];

test.afterEach(async () => {
  for (const x of windows.splice(0)) x.kill('SIGKILL');
  await stopWorld(w);
  w = undefined;
  await ns?.stop();
  ns = undefined;
  await wm?.kill();
  await xvfb?.proc.kill();
});

/** The sample policy with mask tables added to the office segment. */
function policyWithMasks(masks: string): string {
  const file = path.join(tempDir('policy'), 'policy.toml');
  fs.writeFileSync(file, `${fs.readFileSync(SAMPLE_POLICY, 'utf8')}\n${masks}\n`);
  return file;
}

const MAGENTA = '#ff00ff';

/** An xterm filled with one colour (text and cursor too), titled `title`, at `geometry`. */
function colourWindow(display: string, title: string, colour: string, geometry: string): ChildProcess {
  const x = spawn('xterm', ['-bg', colour, '-fg', colour, '-cr', colour, '-title', title, '-geometry', geometry, '-e', 'sleep', '600'], {
    env: { ...process.env, DISPLAY: display }, stdio: 'ignore',
  });
  windows.push(x);
  return x;
}

function xdo(display: string, args: string[]): string {
  return execFileSync('xdotool', args, { env: { ...process.env, DISPLAY: display }, encoding: 'utf8' }).trim();
}

/** The id of the visible window titled `title`, once it is mapped. */
async function windowId(display: string, title: string): Promise<string> {
  let id = '';
  await waitFor(`window ${title}`, async () => {
    try { id = xdo(display, ['search', '--onlyvisible', '--name', title]).split('\n')[0]; } catch { id = ''; }
    return id !== '';
  });
  return id;
}

/** Per decoded frame: how many pixels are `rgb` (within a tolerance VP8 keeps) and the colour at (x, y). */
interface Counted { count: number; probe: number[]; total: number }

/** Counts, for every frame the video presents during `durationMs`, the pixels close to `rgb`
 * (per channel, within `tolerance`) from row `fromRow` down. */
function countColour(page: Page, rgb: number[], durationMs: number, probe = [0, 0], tolerance = 60, fromRow = 0): Promise<Counted[]> {
  return page.evaluate(async ({ rgb, durationMs, probe, tolerance, fromRow }) => {
    const video = document.querySelector('video') as HTMLVideoElement;
    const canvas = document.createElement('canvas');
    const ctx = canvas.getContext('2d', { willReadFrequently: true })!;
    const out: { count: number; region: number[]; at: number[]; total: number }[] = [];
    await new Promise<void>((resolve) => {
      const end = performance.now() + durationMs;
      const onFrame = () => {
        canvas.width = video.videoWidth; canvas.height = video.videoHeight;
        ctx.drawImage(video, 0, 0);
        const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let i = fromRow * canvas.width * 4; i < px.length; i += 4) {
          if (Math.abs(px[i] - rgb[0]) < tolerance && Math.abs(px[i + 1] - rgb[1]) < tolerance && Math.abs(px[i + 2] - rgb[2]) < tolerance) count++;
        }

        // Around the probe: the caller takes the colour most of these pixels have.
        const [x0, y0] = [Math.max(0, probe[0] - 16), Math.max(0, probe[1] - 16)];
        out.push({ count, region: Array.from(ctx.getImageData(x0, y0, 33, 33).data), at: [probe[0] - x0, probe[1] - y0], total: px.length / 4 });
        if (performance.now() < end) video.requestVideoFrameCallback(onFrame); else resolve();
      };
      video.requestVideoFrameCallback(onFrame);
    });
    return out;
  }, { rgb, durationMs, probe, tolerance, fromRow }).then((frames) => frames.map((f) => ({
    count: f.count,
    // The screen's colour there, whatever fine print (the operator's watermark) runs across it.
    probe: dominantColour(f.region, 33, 33, f.at[0], f.at[1]),
    total: f.total,
  })));
}

/** The most magenta pixels any frame shows in the next 300 ms. */
async function mostMagenta(page: Page): Promise<number> {
  return Math.max(...(await countColour(page, [255, 0, 255], 300)).map((f) => f.count));
}

/** The fill of masked pixels (sightline_core::mask::FILL). */
const FILL = [0x3c, 0x3c, 0x3c];
const near = (a: number[], b: number[]) => a.every((v, i) => Math.abs(v - b[i]) <= 24);

/** A masked endpoint; `proxied`: in a network namespace whose only way out is an authenticating
 * proxy, so its media takes ICE-TCP through the proxy's tunnel (R1). */
async function maskedWorld(browser: import('@playwright/test').Browser, name: string, masks: string, proxied = false): Promise<World> {
  xvfb = await Xvfb.start(1280, 720);
  xvfb.setRootColour('#3070b0');
  wm = new Endpoint(xvfb.display, () => '').startWindowManager();
  const agent = { name, source: 'x11' as const, display: xvfb.display };
  if (proxied) {
    const mediaTcp = await freePort();
    const relay = await Relay.start({ policy: policyWithMasks(masks), args: ['--media-tcp-port', String(mediaTcp)] });
    ns = await ProxyNamespace.start([relay.port, mediaTcp]);
    w = await worldOn(browser, relay, { ...agent, behindProxy: ns });
  } else {
    w = await world(browser, agent, { policy: policyWithMasks(masks) });
  }
  await openView(w.operator, w.relay, name, w.endpoint);
  return w;
}

test('a window matching a mask rule never shows, however it moves, resizes or is restacked @R33 @R35', async ({ browser }) => {
  const world = await maskedWorld(browser, 'teller-1', `
[[segments.office.masks]]
name = "account statement"
audience = "both"
window = { title = "*Kontoauszug*" }
`);
  const display = xvfb!.display;
  // The user is told: the prompt named the mask.
  expect(world.endpoint.promptText()).toContain('Hidden: account statement (operator and recording)');

  // The control: a window of the same colour that no rule matches is seen (so the probe works).
  const control = colourWindow(display, 'Notizen', MAGENTA, '30x8+500+300');
  await expect.poll(() => mostMagenta(world.operator), { message: 'the unmasked window reaches the browser' }).toBeGreaterThan(5000);
  control.kill('SIGKILL');
  await expect.poll(() => mostMagenta(world.operator)).toBe(0);

  // A green window to restack the masked one against.
  colourWindow(display, 'Gruen', '#00c000', '40x20+600+100');
  await windowId(display, 'Gruen');

  // Every frame from before the masked window appears until after it stops moving.
  const sampling = countColour(world.operator, [255, 0, 255], 9000);
  await new Promise((r) => setTimeout(r, 500));
  colourWindow(display, 'Kontoauszug 4711 Meier', MAGENTA, '40x12+100+100');
  const id = await windowId(display, 'Kontoauszug');
  // Steps closer together than the agent's frames (33 ms), paced so the sampling spans many frames.
  const step = () => new Promise((r) => setTimeout(r, 20));
  for (let i = 0; i < 25; i++) { xdo(display, ['windowmove', id, String(100 + i * 30), String(100 + i * 12)]); await step(); }
  for (let i = 0; i < 10; i++) { xdo(display, ['windowsize', id, String(300 + i * 40), String(200 + i * 20)]); await step(); }
  xdo(display, ['windowraise', id]);
  xdo(display, ['windowraise', await windowId(display, 'Gruen')]);
  xdo(display, ['windowmove', id, '620', '150']);
  xdo(display, ['windowraise', id]);
  const frames = await sampling;
  expect(frames.length, 'frames decoded while the window moved').toBeGreaterThan(10);
  const leaked = frames.filter((f) => f.count > 0);
  expect(leaked.map((f) => f.count), 'frames showing the masked colour').toEqual([]);

  // The rest of the screen is visible, and the mask covers the window where it now is.
  const green = await countColour(world.operator, [0, 192, 0], 300);
  expect(Math.max(...green.map((f) => f.count)), 'the other window is visible').toBeGreaterThan(1000);
  const info = execFileSync('xwininfo', ['-id', id], { env: { ...process.env, DISPLAY: display }, encoding: 'utf8' });
  const at = (k: string) => Number(info.match(new RegExp(`${k}:\\s+(-?\\d+)`))![1]);
  const centre = [at('Absolute upper-left X') + Math.floor(at('Width') / 2), at('Absolute upper-left Y') + Math.floor(at('Height') / 2)];
  await expect.poll(async () => near((await countColour(world.operator, [255, 0, 255], 200, centre)).at(-1)!.probe, FILL), { message: 'the fill is where the window is' }).toBe(true);
});

test('a while-window rule hides the whole screen from the first frame that has the window until it closes @R33 @R35', async ({ browser }) => {
  const world = await maskedWorld(browser, 'teller-2', `
[[segments.office.masks]]
name = "statements open"
audience = "both"
while_window = { title = "*Vertraulich*" }
`);
  const display = xvfb!.display;
  const root = [0x30, 0x70, 0xb0];
  // Before: the desktop is seen.
  await expect.poll(async () => near((await countColour(world.operator, root, 200, [5, 700])).at(-1)!.probe, root)).toBe(true);

  const sampling = countColour(world.operator, [255, 0, 255], 5000, [5, 700]);
  await new Promise((r) => setTimeout(r, 500));
  const secret = colourWindow(display, 'Vertraulich 1', MAGENTA, '40x12+300+200');
  await windowId(display, 'Vertraulich');
  // The whole screen is the fill while the window exists.
  await expect.poll(async () => near((await countColour(world.operator, root, 200, [5, 700])).at(-1)!.probe, FILL)).toBe(true);
  const frames = await sampling;
  expect(frames.filter((f) => f.count > 0).map((f) => f.count), 'frames showing the window').toEqual([]);
  expect(frames.some((f) => near(f.probe, FILL)), 'the screen was hidden').toBe(true);

  // After it closes the desktop is seen again.
  secret.kill('SIGKILL');
  await expect.poll(async () => near((await countColour(world.operator, root, 200, [5, 700])).at(-1)!.probe, root), { message: 'the mask lifts' }).toBe(true);
});

/** The desktop's colour in these tests, and the same colour under a stroke of the operator's
 * watermark (lightened 80/256 of the way to white: sightline_core::watermark::STRENGTH). */
const ROOT = [0x30, 0x70, 0xb0];
const MARKED_ROOT = ROOT.map((v) => Math.round(v + ((255 - v) * 80) / 256));
/** Below this row the test's windows never go: only the desktop (and the watermark) is there. */
const DESKTOP_ONLY = 500;

/** Ends the session from the endpoint and exports its recording; returns the WebM's path. */
async function endAndExport(world: World): Promise<string> {
  await world.endpoint.click('end');
  await expect(world.operator.getByTestId('view-state')).toContainText('the user ended the session');
  let id = '';
  await expect.poll(() => {
    const r = world.relay.recordingCli(['list']);
    const rows = r.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l));
    id = rows.find((row) => row.complete)?.id ?? '';
    return id;
  }, { message: 'the recording is closed' }).not.toBe('');
  const out = tempDir('export');
  const approval = await approveCommand(world.admin, 'recording.export', id);
  const exported = world.relay.recordingCli(['export', id, '--out', out, '--key', world.relay.pinnedKey(), '--identity', auditorKeys().identity, '--approval', approval]);
  expect(exported.status, exported.stderr).toBe(0);
  return path.join(out, 'recording.webm');
}

/** Every frame of a recording as ffmpeg decodes it: per frame, how many pixels from row `fromRow`
 * down are near each of `colours` (per channel, within `tolerance`). */
async function recordedCounts(file: string, width: number, height: number, colours: number[][], tolerance: number[], fromRow = 0): Promise<number[][]> {
  const size = width * height * 3;
  const ffmpeg = spawn('ffmpeg', ['-v', 'error', '-i', file, '-fps_mode', 'passthrough', '-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:1'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const frames: number[][] = [];
  const frame = Buffer.allocUnsafe(size);
  let filled = 0;
  for await (const chunk of ffmpeg.stdout as AsyncIterable<Buffer>) {
    let at = 0;
    while (at < chunk.length) {
      const n = Math.min(size - filled, chunk.length - at);
      chunk.copy(frame, filled, at, at + n);
      filled += n;
      at += n;
      if (filled < size) break;
      filled = 0;
      frames.push(colours.map((rgb, c) => {
        let count = 0;
        for (let i = fromRow * width * 3; i < size; i += 3) {
          if (Math.abs(frame[i] - rgb[0]) < tolerance[c] && Math.abs(frame[i + 1] - rgb[1]) < tolerance[c] && Math.abs(frame[i + 2] - rgb[2]) < tolerance[c]) count++;
        }
        return count;
      }));
    }
  }
  const code = await new Promise<number | null>((resolve) => (ffmpeg.exitCode !== null ? resolve(ffmpeg.exitCode) : ffmpeg.on('exit', resolve)));
  expect(code, 'ffmpeg decodes the recording').toBe(0);
  expect(filled, 'no partial frame').toBe(0);
  return frames;
}

test('a recording-only rule: the operator sees the window and the watermark naming them; the recording has neither, in any frame @R34 @R36', async ({ browser }) => {
  const world = await maskedWorld(browser, 'teller-3', `
[[segments.office.masks]]
name = "customer file"
audience = "recording"
window = { title = "*Kundenakte*" }
`);
  const display = xvfb!.display;
  expect(world.endpoint.promptText()).toContain('Hidden: customer file (recording)');
  const file = colourWindow(display, 'Kundenakte Meier', MAGENTA, '40x12+100+100');
  const id = await windowId(display, 'Kundenakte');

  // The operator's picture: the window, and the watermark over the desktop in every frame.
  await expect.poll(() => mostMagenta(world.operator), { message: 'the operator sees the window' }).toBeGreaterThan(5000);
  // Sampled while the window moves (an unchanged screen sends few frames).
  const marking = countColour(world.operator, MARKED_ROOT, 3000, [0, 0], 16, DESKTOP_ONLY);
  for (let i = 0; i < 20; i++) {
    xdo(display, ['windowmove', id, String(100 + i * 20), String(100 + i * 10)]);
    await new Promise((r) => setTimeout(r, 100));
  }
  const seen = await marking;
  expect(seen.length).toBeGreaterThan(10);
  expect(Math.min(...seen.map((f) => f.count)), 'watermark pixels in the least marked frame').toBeGreaterThan(1000);
  file.kill('SIGKILL');
  await expect.poll(() => mostMagenta(world.operator)).toBe(0);

  // The recording, decoded frame by frame: the desktop (so the decoding works), never the
  // window, never the watermark.
  const webm = await endAndExport(world);
  const frames = await recordedCounts(webm, 1280, 720, [ROOT, [255, 0, 255]], [24, 60]);
  expect(frames.length, 'recorded frames').toBeGreaterThan(20);
  expect(Math.min(...frames.map((f) => f[0])), 'the desktop in every recorded frame').toBeGreaterThan(100_000);
  expect(frames.filter((f) => f[1] > 0).map((f) => f[1]), 'recorded frames showing the window').toEqual([]);
  const marks = await recordedCounts(webm, 1280, 720, [MARKED_ROOT], [16], DESKTOP_ONLY);
  expect(Math.max(...marks.map((f) => f[0])), 'watermark pixels in the most marked recorded frame').toBeLessThan(50);
});

const operatorOnly = [
  { proxied: false, title: 'an operator-only rule: the operator never sees the window, the recording keeps it @R34 @R35' },
  { proxied: true, title: 'an operator-only rule over a proxied endpoint (media over ICE-TCP): the operator never sees the window, the recording keeps it @R1 @R34 @R35' },
];
for (const { proxied, title } of operatorOnly) {
  test(title, async ({ browser }) => {
    const world = await maskedWorld(browser, proxied ? 'teller-5' : 'teller-4', `
[[segments.office.masks]]
name = "identity card"
audience = "operator"
window = { title = "*Ausweis*" }
`, proxied);
    const display = xvfb!.display;
    expect(world.endpoint.promptText()).toContain('Hidden: identity card (operator)');
    // Sampled from before the window appears until after it stopped moving. It moves in steps a
    // frame apart, so the sampling holds frames of it wherever it went (an unchanged screen sends
    // one frame a second), and the fill is seen over it meanwhile: the window was there to hide.
    const sampling = countColour(world.operator, [255, 0, 255], 8000);
    await new Promise((r) => setTimeout(r, 500));
    colourWindow(display, 'Ausweis Meier', MAGENTA, '40x12+100+100');
    const id = await windowId(display, 'Ausweis');
    const masking = countColour(world.operator, FILL, 1500, [0, 0], 24);
    for (let i = 0; i < 20; i++) {
      xdo(display, ['windowmove', id, String(100 + i * 20), String(100 + i * 10)]);
      await new Promise((r) => setTimeout(r, 100));
    }
    const masked = await masking;
    const frames = await sampling;
    expect(Math.max(...masked.map((f) => f.count)), 'the mask over the window, during the sampling').toBeGreaterThan(5000);
    expect(frames.length).toBeGreaterThan(10);
    expect(frames.filter((f) => f.count > 0).map((f) => f.count), 'operator frames showing the window').toEqual([]);

    const recorded = await recordedCounts(await endAndExport(world), 1280, 720, [[255, 0, 255]], [60]);
    expect(Math.max(...recorded.map((f) => f[0])), 'the recording shows the window').toBeGreaterThan(5000);
    if (proxied) {
      const paths = world.relay.auditRecords().filter((r) => r.kind === 'session.media_path');
      expect(paths.map((r) => r.detail.split(' ')[3])).toEqual(['tcp']);
    }
  });
}

test('masking delay: frames that show a masked window as it appears, over every frame the agent encoded @bench', async ({ browser }) => {
  const world = await maskedWorld(browser, 'teller-bench', `
[[segments.office.masks]]
name = "account statement"
audience = "both"
window = { title = "*Kontoauszug*" }
`);
  const display = xvfb!.display;
  const appearances = 20;
  for (let i = 0; i < appearances; i++) {
    const title = `Kontoauszug ${i}`;
    const x = colourWindow(display, title, MAGENTA, `30x8+${100 + (i % 5) * 200}+${60 + Math.floor(i / 5) * 100}`);
    await windowId(display, title);
    await new Promise((r) => setTimeout(r, 250));
    x.kill('SIGKILL');
    await waitFor(`${title} gone`, async () => {
      try { xdo(display, ['search', '--onlyvisible', '--name', title]); return false; } catch { return true; }
    });
  }
  // The control, below the masked windows' rows: the same colour, no rule, so the probe works.
  colourWindow(display, 'Notizen', MAGENTA, `30x8+800+${DESKTOP_ONLY + 20}`);
  await windowId(display, 'Notizen');
  await expect.poll(() => mostMagenta(world.operator)).toBeGreaterThan(5000);

  const webm = await endAndExport(world);
  const whole = await recordedCounts(webm, 1280, 720, [[255, 0, 255]], [60]);
  const below = await recordedCounts(webm, 1280, 720, [[255, 0, 255]], [60], DESKTOP_ONLY);
  const leaked = whole.filter((f, i) => f[0] > below[i][0]).length;
  expect(Math.max(...below.map((f) => f[0])), 'the control window is in the recording').toBeGreaterThan(5000);
  recordMeasurement('mask-delay', `masking delay: ${leaked} of ${whole.length} recorded frames showed any of ${appearances} masked windows as they appeared (goal: 0)`, {
    appearances, frames: whole.length, leaked_frames: leaked,
  });
});
