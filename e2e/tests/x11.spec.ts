import { expect } from '@playwright/test';
import { test } from './harness';
import { World, world, stopWorld, Xvfb, openView, centrePixel } from './harness';

let w: World;
let xvfb: Xvfb;

test.afterEach(async () => {
  await stopWorld(w);
  await xvfb?.proc.kill();
});

test('agent captures a real X display: the browser shows the root window colour, and its change @x11', async ({ browser }) => {
  xvfb = await Xvfb.start(1280, 720);
  xvfb.setRootColour('#d02020');
  w = await world(browser, { name: 'x11-desk', source: 'x11', display: xvfb.display });
  const page = w.operator;
  await openView(page, w.relay, 'x11-desk', w.endpoint);
  await expect.poll(() => page.evaluate(() => (document.querySelector('video') as HTMLVideoElement).videoWidth)).toBe(1280);

  const close = (want: number[]) => async () => {
    const got = await centrePixel(page);
    return got.every((v, i) => Math.abs(v - want[i]) <= 24);
  };
  await expect.poll(close([0xd0, 0x20, 0x20]), { message: 'red root window reaches the browser' }).toBe(true);

  // A change on the display reaches the browser too: capture is live, not a single snapshot.
  xvfb.setRootColour('#2040c0');
  await expect.poll(close([0x20, 0x40, 0xc0]), { message: 'blue root window reaches the browser' }).toBe(true);
});
