// Accessibility (issue 24): axe-core on every page and dialog of the viewer finds no serious or
// critical violation, every control is labelled, and the keyboard reaches every control with a
// visible focus. The pages are the real ones, with the data
// a working relay shows: signed out, enrolment, the operator's console (help queue, request
// form, a live session), the admin's page, the audit log and the recordings.
import { expect, Page } from '@playwright/test';
import AxeBuilder from '@axe-core/playwright';
import { test } from './harness';
import { World, world, stopWorld, requestView, api, contextWithPasskeys, inviteAndEnrol, auditorKeys, held, keycodeOf } from './harness';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Where the README's screenshots are kept: each run of this test takes them again. */
const SCREENSHOTS = path.resolve(__dirname, '../../docs/screenshots');

/** The page as a person sees it at 1280x800, for the README. */
async function screenshot(page: Page, name: string): Promise<void> {
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`) });
}

let w: World | undefined;

test.afterEach(async () => {
  await stopWorld(w);
  w = undefined;
});

/** The serious and critical violations axe finds on `page` now, one line each; and, measured at
 * 1280x800 and 1920x1080, whether the page is wider than the window. */
async function violations(page: Page, where: string): Promise<string[]> {
  const wide: string[] = [];
  for (const size of [{ width: 1280, height: 800 }, { width: 1920, height: 1080 }]) {
    await page.setViewportSize(size);
    const widths = await page.evaluate(() => ({ page: document.documentElement.scrollWidth, window: window.innerWidth }));
    if (widths.page > widths.window) {
      // Name the outermost elements that stick out, so the failure says where to look.
      const culprits = await page.evaluate(() => [...document.querySelectorAll('body *')]
        .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1 && !(e.parentElement && e.parentElement.getBoundingClientRect().right > window.innerWidth + 1))
        .slice(0, 3)
        .map((e) => `${e.tagName.toLowerCase()}${e.className ? `.${String(e.className).split(' ').join('.')}` : ''}${e.getAttribute('data-testid') ? `[${e.getAttribute('data-testid')}]` : ''}`));
      wide.push(`${where}: ${widths.page} px wide in a ${size.width}x${size.height} window (${culprits.join(', ')})`);
    }
  }
  const result = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']).analyze();
  expect(result.passes.length, `axe ran on ${where}`).toBeGreaterThan(0);
  return wide.concat(result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${where}: ${v.id} (${v.impact}): ${v.help}; ${v.nodes.map((n) => n.target.join(' ')).slice(0, 4).join(', ')} (${v.nodes[0]?.failureSummary?.replace(/\s+/g, ' ')})`));
}

/**
 * Every control on `page` now is reached by Tab and shows where the keyboard is; nothing answers a
 * click that the keyboard cannot reach (an element with a pointer cursor that is not a control).
 * Native controls then work from the keyboard by themselves (Enter, Space, arrows).
 */
async function keyboardProblems(page: Page, where: string): Promise<string[]> {
  await page.setViewportSize({ width: 1280, height: 800 });
  const controls = await page.evaluate(() => {
    const shown = (e: Element) => {
      const r = e.getBoundingClientRect();
      return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== 'hidden' && !e.closest('details:not([open]) > :not(summary)');
    };
    const all = [...document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea, summary, video[tabindex], [tabindex]:not([tabindex="-1"])')]
      .filter((e) => shown(e) && !(e as HTMLButtonElement).disabled);
    document.querySelectorAll('[data-kb]').forEach((e) => e.removeAttribute('data-kb'));
    all.forEach((e, i) => e.setAttribute('data-kb', String(i)));
    // Tab from the top of the page, whatever was focused or clicked before.
    const start = document.createElement('span');
    start.tabIndex = 0;
    start.id = 'kb-start';
    document.body.prepend(start);
    start.focus();
    const name = (e: Element) => `${e.tagName.toLowerCase()}${e.getAttribute('name') ? `[name=${e.getAttribute('name')}]` : ''}${e.getAttribute('data-testid') ? `[${e.getAttribute('data-testid')}]` : ''} "${(e.textContent ?? '').trim().slice(0, 30)}"`;
    const clickable = [...document.querySelectorAll('body *')]
      .filter((e) => shown(e) && getComputedStyle(e).cursor === 'pointer' && !e.hasAttribute('data-kb') && !e.closest('[data-kb], label'))
      .map(name);
    return { names: all.map(name), clickable };
  });
  const reached = new Map<number, boolean>();
  // Date and time fields take a Tab per part: room for those.
  for (let i = 0; i < controls.names.length * 4 + 10 && reached.size < controls.names.length; i++) {
    await page.keyboard.press('Tab');
    const at = await page.evaluate(() => {
      const e = document.activeElement;
      if (!e || !e.hasAttribute('data-kb')) return null;
      const style = getComputedStyle(e);
      return { i: Number(e.getAttribute('data-kb')), shown: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2 };
    });
    if (at) reached.set(at.i, (reached.get(at.i) ?? false) || at.shown);
  }
  await page.evaluate(() => document.getElementById('kb-start')?.remove());
  expect(controls.names.length, `controls on ${where}`).toBeGreaterThan(0);
  return [
    ...controls.names.filter((_, i) => !reached.has(i)).map((n) => `${where}: Tab never reaches ${n}`),
    ...controls.names.filter((_, i) => reached.get(i) === false).map((n) => `${where}: no visible focus on ${n}`),
    ...controls.clickable.map((n) => `${where}: ${n} answers the mouse but is no control`),
  ];
}

/** Both checks: axe and the window's width, then the keyboard. */
async function problems(page: Page, where: string): Promise<string[]> {
  return [...await violations(page, where), ...await keyboardProblems(page, where)];
}

test('every page of the viewer passes axe with no serious or critical violation and fits the window at 1280x800 and 1920x1080 @ux', async ({ browser }) => {
  test.setTimeout(300_000);
  w = await world(browser, { name: 'front-desk' });
  const found: string[] = [];

  // Signed out, and an enrolment link.
  const { page: stranger } = await contextWithPasskeys(browser);
  await stranger.goto(w.relay.url);
  await expect(stranger.locator('input[name="username"]')).toBeVisible();
  found.push(...await problems(stranger, 'sign-in'));
  await screenshot(stranger, 'sign-in');
  const invite = await api(w.admin, 'POST', '/api/admin/invitations', { name: 'carol', role: 'auditor' });
  await stranger.goto(invite.json.link);
  await expect(stranger.getByRole('button', { name: /passkey/i })).toBeVisible();
  found.push(...await problems(stranger, 'enrolment'));

  // The operator's console: the endpoints and the request form, then a live session.
  const operator = w.operator;
  await operator.goto(w.relay.url);
  await expect(operator.getByTestId('agent-row').first()).toBeVisible();
  found.push(...await problems(operator, 'sessions'));
  await requestView(operator, w.relay, 'front-desk', 'INC-4711', 'incident', false);
  found.push(...await problems(operator, 'awaiting consent'));
  await w.endpoint.click('allow');
  await expect(operator.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  found.push(...await problems(operator, 'live session'));
  await screenshot(operator, 'live-session');
  await operator.getByTestId('end-session').click();
  await expect(operator.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  found.push(...await problems(operator, 'ended session'));

  // The admin's page and the audit log.
  await w.admin.getByTestId('tab-admin').click();
  await expect(w.admin.getByTestId('command-approval-form')).toBeVisible();
  found.push(...await problems(w.admin, 'admin'));
  await screenshot(w.admin, 'admin');
  await w.admin.getByTestId('tab-audit').click();
  await expect(w.admin.getByTestId('audit-page')).toBeVisible();
  found.push(...await problems(w.admin, 'audit (no key pinned)'));
  await w.admin.locator('textarea[name="audit-keys"]').fill(fs.readFileSync(w.relay.pinnedKey(), 'utf8').trim());
  await w.admin.getByTestId('audit-pin').click();
  await expect.poll(async () => {
    await w!.admin.getByTestId('audit-search').click();
    return w!.admin.getByTestId('audit-verification').getAttribute('data-state');
  }, { timeout: 10_000 }).toBe('verified');
  found.push(...await problems(w.admin, 'audit'));
  await screenshot(w.admin, 'audit');

  // An auditor's recordings page.
  const auditor = await inviteAndEnrol(browser, w.admin, 'auditor1', 'auditor');
  await auditor.getByTestId('tab-recordings').click();
  await expect(auditor.getByTestId('recordings-page')).toBeVisible();
  found.push(...await problems(auditor, 'recordings (auditor)'));
  // The player, with the session above open: decrypted and verified in the page.
  await auditor.locator('input[name="recording-identity"]').fill(auditorKeys().secret);
  await auditor.locator('textarea[name="recording-keys"]').fill(fs.readFileSync(w.relay.pinnedKey(), 'utf8'));
  await auditor.getByTestId('recording-pin').click();
  await auditor.locator('input[name="recording-ticket"]').fill('INC-4711');
  await expect.poll(async () => {
    await auditor.getByTestId('recordings-search').click();
    return auditor.getByTestId('recording-row').count();
  }, { timeout: 20_000 }).toBe(1);
  await auditor.getByTestId('recording-row').getByTestId('recording-open').click();
  await expect(auditor.getByTestId('recording-verification')).toHaveAttribute('data-state', 'complete');
  await expect(auditor.getByTestId('timeline-entry').first()).toBeVisible();
  found.push(...await problems(auditor, 'recording player'));
  await screenshot(auditor, 'recording-player');
  // Seeking from the keyboard: the session's end, reached by Tab and taken with Enter.
  const end = auditor.getByTestId('timeline-entry').filter({ has: auditor.locator('b', { hasText: /^session\.ended$/ }) });
  const endAt = Number(await end.getAttribute('data-video-ms'));
  expect(endAt).toBeGreaterThan(1_000);
  const canvas = auditor.getByTestId('recording-canvas');
  await expect.poll(async () => Number(await canvas.getAttribute('data-duration-ms'))).toBeGreaterThan(1_000);
  // The end may come after the last frame: the player shows the last one there is.
  const target = Math.min(endAt, Number(await canvas.getAttribute('data-duration-ms')));
  expect(Number(await canvas.getAttribute('data-current-ms'))).toBeLessThan(target - 500);
  await end.getByRole('button').focus();
  await auditor.keyboard.press('Enter');
  // The player shows the last frame at or before the end; the encoder may have skipped a frame or
  // two there, so that frame can be some way before it, but never after it.
  await expect.poll(async () => Number(await canvas.getAttribute('data-current-ms'))).toBeGreaterThan(target - 500);
  expect(Number(await canvas.getAttribute('data-current-ms'))).toBeLessThanOrEqual(target);

  expect(found, found.join('\n')).toEqual([]);
});

test('the operator signs in, asks for a session and leaves the remote screen with the keyboard alone, and always sees where the keyboard is @ux @R4 @R19', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' });
  const page = w.operator;
  await page.getByTestId('logout').click();
  await expect(page.locator('input[name="username"]')).toBeVisible();
  /** Presses Tab until `matches` holds for the focused element (at most 30 times). */
  const tabTo = async (what: string, matches: (e: Element) => boolean) => {
    for (let i = 0; i < 30; i++) {
      await page.keyboard.press('Tab');
      const found = await page.evaluate(`(${matches.toString()})(document.activeElement)`);
      if (found) return;
    }
    throw new Error(`Tab never reached ${what}`);
  };
  const focusVisible = () => page.evaluate(() => {
    const style = getComputedStyle(document.activeElement!);
    return style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2;
  });

  await tabTo('the user name', (e) => e.getAttribute('name') === 'username');
  expect(await focusVisible()).toBe(true);
  await page.keyboard.type('operator');
  await tabTo('the sign-in button', (e) => e.textContent === 'Sign in with passkey');
  expect(await focusVisible()).toBe(true);
  await page.keyboard.press('Enter');
  await expect(page.getByTestId('signed-in-as')).toContainText('operator');

  // The request: ticket, reason, then the endpoint's View button, all from the keyboard.
  await expect(page.getByTestId('agent-row').filter({ hasText: 'front-desk' })).toBeVisible();
  await tabTo('the ticket', (e) => e.getAttribute('name') === 'ticket');
  await page.keyboard.type('INC-4711');
  await tabTo('the reason', (e) => e.getAttribute('name') === 'reason');
  await page.keyboard.press('ArrowDown');
  await tabTo('control', (e) => e.getAttribute('name') === 'level-control');
  await page.keyboard.press('Space');
  await tabTo('View', (e) => e.textContent === 'View');
  expect(await focusVisible()).toBe(true);
  await page.keyboard.press('Enter');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');

  // With control, the picture takes every key, Tab included, and says how to leave it.
  await w.endpoint.click('level:control');
  await w.endpoint.click('allow');
  await expect(page.getByTestId('granted')).toHaveText('granted: view, chat, control');
  await expect(page.getByTestId('keyboard-hint')).toContainText('Shift+Esc');
  await expect.poll(() => page.evaluate(() => (document.querySelector('video') as HTMLVideoElement).videoWidth)).toBe(1280);
  await tabTo('the picture', (e) => e.id === 'remote-video');
  expect(await focusVisible()).toBe(true);
  await page.keyboard.press('Tab');
  expect(await page.evaluate(() => document.activeElement?.id), 'Tab went to the remote screen').toBe('remote-video');
  // The probe: Shift held in the page is held on the endpoint.
  const display = w.endpoint.display;
  await page.keyboard.down('Shift');
  await expect.poll(() => held(display).keys, { message: 'Shift held on the endpoint' }).toEqual([keycodeOf(display, 'Shift_L')]);
  // Shift+Esc leaves for the chat box, and lets go of Shift on the endpoint.
  await page.keyboard.press('Escape');
  expect(await page.evaluate(() => document.activeElement?.getAttribute('name'))).toBe('chat');
  await expect.poll(() => held(display).keys, { message: 'nothing held on the endpoint once the picture let go' }).toEqual([]);
  await page.keyboard.up('Shift');
});
