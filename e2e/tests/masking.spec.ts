// Masks (R33, R35): what a segment's rules hide is painted over on the endpoint, in the raw
// frame, before it is encoded. A real X display with a window manager; the windows are xterms in
// a colour nothing else on the screen has, and every frame the browser decodes is searched for it.
import { expect, Page } from '@playwright/test';
import { test } from './harness';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, execFileSync, ChildProcess } from 'node:child_process';
import { World, world, stopWorld, Xvfb, openView, tempDir, SAMPLE_POLICY, waitFor, Proc, Endpoint } from './harness';

let w: World | undefined;
let xvfb: Xvfb | undefined;
let wm: Proc | undefined;
const windows: ChildProcess[] = [];

test.afterEach(async () => {
  for (const x of windows.splice(0)) x.kill('SIGKILL');
  await stopWorld(w);
  w = undefined;
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

/** Counts, for every frame the video presents during `durationMs`, the pixels close to `rgb`. */
function countColour(page: Page, rgb: number[], durationMs: number, probe = [0, 0]): Promise<Counted[]> {
  return page.evaluate(async ({ rgb, durationMs, probe }) => {
    const video = document.querySelector('video') as HTMLVideoElement;
    const canvas = document.createElement('canvas');
    const ctx = canvas.getContext('2d', { willReadFrequently: true })!;
    const out: { count: number; probe: number[]; total: number }[] = [];
    await new Promise<void>((resolve) => {
      const end = performance.now() + durationMs;
      const onFrame = () => {
        canvas.width = video.videoWidth; canvas.height = video.videoHeight;
        ctx.drawImage(video, 0, 0);
        const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let i = 0; i < px.length; i += 4) {
          if (Math.abs(px[i] - rgb[0]) < 60 && Math.abs(px[i + 1] - rgb[1]) < 60 && Math.abs(px[i + 2] - rgb[2]) < 60) count++;
        }

        const o = (probe[1] * canvas.width + probe[0]) * 4;
        out.push({ count, probe: [px[o], px[o + 1], px[o + 2]], total: px.length / 4 });
        if (performance.now() < end) video.requestVideoFrameCallback(onFrame); else resolve();
      };
      video.requestVideoFrameCallback(onFrame);
    });
    return out;
  }, { rgb, durationMs, probe });
}

/** The fill of masked pixels (sightline_core::mask::FILL). */
const FILL = [0x3c, 0x3c, 0x3c];
const near = (a: number[], b: number[]) => a.every((v, i) => Math.abs(v - b[i]) <= 24);

async function maskedWorld(browser: import('@playwright/test').Browser, name: string, masks: string): Promise<World> {
  xvfb = await Xvfb.start(1280, 720);
  xvfb.setRootColour('#3070b0');
  wm = new Endpoint(xvfb.display, () => '').startWindowManager();
  w = await world(browser, { name, source: 'x11', display: xvfb.display }, { policy: policyWithMasks(masks) });
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
  await expect.poll(async () => Math.max(...(await countColour(world.operator, [255, 0, 255], 300)).map((f) => f.count)), { message: 'the unmasked window reaches the browser' }).toBeGreaterThan(5000);
  control.kill('SIGKILL');
  await expect.poll(async () => Math.max(...(await countColour(world.operator, [255, 0, 255], 300)).map((f) => f.count))).toBe(0);

  // A green window to restack the masked one against.
  colourWindow(display, 'Gruen', '#00c000', '40x20+600+100');
  await windowId(display, 'Gruen');

  // Every frame from before the masked window appears until after it stops moving.
  const sampling = countColour(world.operator, [255, 0, 255], 9000);
  await new Promise((r) => setTimeout(r, 500));
  colourWindow(display, 'Kontoauszug 4711 Meier', MAGENTA, '40x12+100+100');
  const id = await windowId(display, 'Kontoauszug');
  for (let i = 0; i < 25; i++) xdo(display, ['windowmove', id, String(100 + i * 30), String(100 + i * 12)]);
  for (let i = 0; i < 10; i++) xdo(display, ['windowsize', id, String(300 + i * 40), String(200 + i * 20)]);
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
