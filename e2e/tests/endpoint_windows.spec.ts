// The endpoint's own windows, measured on its X server (issue 24, item 12): the consent prompt,
// the always-on-top session bar and the help window are as large as what they show (the bar sits
// over the user's work), and a pause the operator made reads as news, not as an alarm.
import { expect } from '@playwright/test';
import { test } from './harness';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { World, world, stopWorld, requestView, BIN, Endpoint, Rect, parseLayout, waitFor } from './harness';

let w: World | undefined;

test.afterEach(async () => {
  await stopWorld(w);
  w = undefined;
});

/** How far below its lowest widget a window may end: the frame's margin and a little spacing. */
const BELOW_LAST = 24;

/** The window `id` against the layout it logged: its size is its content's, and nothing it shows
 * is cut off. `last` is the lowest widget, measured by itself (not by the content's rectangle). */
function expectSizedToContent(endpoint: Endpoint, id: string, layout: Map<string, Rect>, last: string, what: string): void {
  const size = endpoint.windowSize(id);
  const content = layout.get('content')!;
  const bottom = layout.get(last)!;
  expect(content, `${what}: the window logs its content`).toBeDefined();
  expect(Math.abs(size.w - (content.x + content.w)), `${what}: width ${size.w} against content ${JSON.stringify(content)}`).toBeLessThanOrEqual(2);
  expect(Math.abs(size.h - (content.y + content.h)), `${what}: height ${size.h} against content ${JSON.stringify(content)}`).toBeLessThanOrEqual(2);
  expect(bottom.y + bottom.h, `${what}: ${last} is inside the window`).toBeLessThanOrEqual(size.h);
  expect(size.h - (bottom.y + bottom.h), `${what}: room below ${last} in a window ${size.h} high`).toBeLessThanOrEqual(BELOW_LAST);
}

/** Pixels close to the bar's alarm red (the End session button's fill, #b01c1c). */
const alarmRed = (px: number[][]) => px.filter(([r, g, b]) => Math.abs(r - 0xb0) < 24 && g < 0x40 && b < 0x40).length;

test('the consent prompt, the session bar and the help window are as large as what they show; a pause by the operator is no alarm @ux @R8', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  const page = w.operator;
  const endpoint = w.endpoint;
  const wm = endpoint.startWindowManager();

  // The prompt: its lowest widgets are Allow and Deny.
  await requestView(page, w.relay, 'front-desk');
  const prompt = await endpoint.window();
  await expect.poll(() => endpoint.layout().has('allow')).toBe(true);
  await expect.poll(() => endpoint.windowSize(prompt).h, { message: 'the prompt settles on its content' }).toBe(endpoint.layout().get('content')!.h);
  expectSizedToContent(endpoint, prompt, endpoint.layout(), 'deny', 'the consent prompt');

  // The bar: with chat granted, its lowest widget is the message box.
  await endpoint.click('level:control');
  await endpoint.click('allow');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  await expect.poll(() => endpoint.layout().has('chat-input')).toBe(true);
  const bar = await endpoint.window();
  await expect.poll(() => endpoint.windowSize(bar).h, { message: 'the bar settles on its content' }).toBe(endpoint.layout().get('content')!.h);
  expectSizedToContent(endpoint, bar, endpoint.layout(), 'chat-input', 'the session bar');

  // The operator pauses: the bar says so, and grows by that line only.
  await page.getByTestId('pause').click();
  await expect.poll(() => endpoint.layout().has('paused')).toBe(true);
  await expect.poll(() => endpoint.windowSize(bar).h).toBe(endpoint.layout().get('content')!.h);
  expectSizedToContent(endpoint, bar, endpoint.layout(), 'chat-input', 'the paused bar');
  const origin = endpoint.windowOrigin(bar);
  const onScreen = (r: Rect): Rect => ({ x: origin.x + r.x, y: origin.y + r.y, w: r.w, h: r.h });
  // The probe: the End session button is alarm red on the same screen.
  expect(alarmRed(endpoint.grab(onScreen(endpoint.layout().get('end')!))), 'the End button is red').toBeGreaterThan(500);
  expect(alarmRed(endpoint.grab(onScreen(endpoint.layout().get('paused')!))), '"Paused by the operator" in red').toBe(0);
  await page.getByTestId('resume').click();
  await expect.poll(() => endpoint.layout().has('paused')).toBe(false);
  await page.getByTestId('end-session').click();
  await endpoint.windowGone();

  // The help window, before and after it shows a code.
  const win = spawn(path.join(BIN, 'agent'), ['help', '--window', '--relay-url', `ws://127.0.0.1:${w.relay.port}`, '--data-dir', w.agentDir], {
    env: { ...process.env, DISPLAY: endpoint.display }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  win.stderr.on('data', (d) => { log += d; });
  const told = (prefix: string) => (log.split('\n').filter((l) => l.startsWith(prefix)).at(-1) ?? '').slice(prefix.length);
  const layout = () => parseLayout(told('help-ui layout '));
  try {
    let id = '';
    await waitFor('the help window', async () => {
      try { id = endpoint.xdo(['search', '--onlyvisible', '--name', 'Sightline: ask for help']).split('\n')[0]; } catch { id = ''; }
      return id !== '';
    });
    await expect.poll(() => layout().has('request')).toBe(true);
    await expect.poll(() => endpoint.windowSize(id).h, { message: 'the help window settles on its content' }).toBe(layout().get('content')!.h);
    expectSizedToContent(endpoint, id, layout(), 'request', 'the help window');
    const { x, y, w: bw, h: bh } = layout().get('request')!;
    const origin = endpoint.windowOrigin(id);
    endpoint.xdo(['mousemove', String(origin.x + Math.round(x + bw / 2)), String(origin.y + Math.round(y + bh / 2)), 'sleep', '0.2', 'click', '1']);
    await expect.poll(() => told('help-ui code: ')).toMatch(/^\d{3} \d{3} /);
    // Now the code and its expiry sit below the button: the window grew to show them.
    await expect.poll(() => endpoint.windowSize(id).h).toBe(layout().get('content')!.h);
    const grown = endpoint.windowSize(id);
    expect(grown.h - (layout().get('request')!.y + layout().get('request')!.h), 'the code shows below the button').toBeGreaterThan(60);
  } finally {
    win.kill('SIGKILL');
  }
  await wm.kill();
});
