// Accessibility (issue 24): axe-core on every page and dialog of the viewer finds no serious or
// critical violation, and every control is labelled. The pages are the real ones, with the data
// a working relay shows: signed out, enrolment, the operator's console (help queue, request
// form, a live session), the admin's page, the audit log and the recordings.
import { expect, Page } from '@playwright/test';
import AxeBuilder from '@axe-core/playwright';
import { test } from './harness';
import { World, world, stopWorld, requestView, api, contextWithPasskeys, inviteAndEnrol } from './harness';
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
    .map((v) => `${where}: ${v.id} (${v.impact}): ${v.help}; ${v.nodes.map((n) => n.target.join(' ')).slice(0, 4).join(', ')}`));
}

test('every page of the viewer passes axe with no serious or critical violation and fits the window at 1280x800 and 1920x1080 @ux', async ({ browser }) => {
  test.setTimeout(180_000);
  w = await world(browser, { name: 'front-desk' });
  const found: string[] = [];

  // Signed out, and an enrolment link.
  const { page: stranger } = await contextWithPasskeys(browser);
  await stranger.goto(w.relay.url);
  await expect(stranger.locator('input[name="username"]')).toBeVisible();
  found.push(...await violations(stranger, 'sign-in'));
  await screenshot(stranger, 'sign-in');
  const invite = await api(w.admin, 'POST', '/api/admin/invitations', { name: 'carol', role: 'auditor' });
  await stranger.goto(invite.json.link);
  await expect(stranger.getByRole('button', { name: /passkey/i })).toBeVisible();
  found.push(...await violations(stranger, 'enrolment'));

  // The operator's console: the endpoints and the request form, then a live session.
  const operator = w.operator;
  await operator.goto(w.relay.url);
  await expect(operator.getByTestId('agent-row').first()).toBeVisible();
  found.push(...await violations(operator, 'sessions'));
  await requestView(operator, w.relay, 'front-desk', 'INC-4711', 'incident', false);
  found.push(...await violations(operator, 'awaiting consent'));
  await w.endpoint.click('allow');
  await expect(operator.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
  found.push(...await violations(operator, 'live session'));
  await screenshot(operator, 'live-session');
  await operator.getByTestId('end-session').click();
  await expect(operator.getByTestId('view-state')).toHaveAttribute('data-state', 'ended');
  found.push(...await violations(operator, 'ended session'));

  // The admin's page and the audit log.
  await w.admin.getByTestId('tab-admin').click();
  await expect(w.admin.getByTestId('command-approval-form')).toBeVisible();
  found.push(...await violations(w.admin, 'admin'));
  await screenshot(w.admin, 'admin');
  await w.admin.getByTestId('tab-audit').click();
  await expect(w.admin.getByTestId('audit-page')).toBeVisible();
  found.push(...await violations(w.admin, 'audit (no key pinned)'));
  await w.admin.locator('textarea[name="audit-keys"]').fill(fs.readFileSync(w.relay.pinnedKey(), 'utf8').trim());
  await w.admin.getByTestId('audit-pin').click();
  await expect.poll(async () => {
    await w!.admin.getByTestId('audit-search').click();
    return w!.admin.getByTestId('audit-verification').getAttribute('data-state');
  }, { timeout: 10_000 }).toBe('verified');
  found.push(...await violations(w.admin, 'audit'));
  await screenshot(w.admin, 'audit');

  // An auditor's recordings page.
  const auditor = await inviteAndEnrol(browser, w.admin, 'auditor1', 'auditor');
  await auditor.getByTestId('tab-recordings').click();
  await expect(auditor.getByTestId('recordings-page')).toBeVisible();
  found.push(...await violations(auditor, 'recordings (auditor)'));

  expect(found, found.join('\n')).toEqual([]);
});

test('the operator signs in and asks for a session with the keyboard alone, and always sees where the keyboard is @ux @R4', async ({ browser }) => {
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
  await tabTo('View', (e) => e.textContent === 'View');
  expect(await focusVisible()).toBe(true);
  await page.keyboard.press('Enter');
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'awaiting-consent');
});
