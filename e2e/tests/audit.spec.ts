// The audit log (R39, R41, R10, R38): what a real session leaves in it, checked field by field;
// the relay's own verifier on the log and on a tampered copy; security events that no setting
// can switch off; a CLI command beside a running relay; a full audit disk fails closed.
import { expect, Page, request as playwrightRequest } from '@playwright/test';
import { test } from './harness';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import {
  World, world, stopWorld, openView, tempDir, relayCli, AuditRecord, RedisServer, Relay, worldOn, requestView,
  freePort, contextWithPasskeys, enrolFromLink, SAMPLE_POLICY, approveCommand,
} from './harness';

let w: World | undefined;
let redis: RedisServer | undefined;
let mounted: string | undefined;
const others: Relay[] = [];

test.afterEach(async () => {
  for (const relay of others.splice(0)) await relay.proc.kill();
  await stopWorld(w);
  w = undefined;
  await redis?.kill();
  redis = undefined;
  if (mounted) {
    try { execFileSync('umount', [mounted]); } catch { /* already gone */ }
    mounted = undefined;
  }
});

/** Waits until the audit log holds a record matching `pred` (records are durable when the
 * action they record is acknowledged, so this is only about the test reading at the right time). */
async function record(relay: Relay, pred: (r: AuditRecord) => boolean): Promise<AuditRecord> {
  let found: AuditRecord | undefined;
  await expect.poll(() => { found = relay.auditRecords().find(pred); return found !== undefined; }).toBe(true);
  return found!;
}

test('a session leaves asked, allowed with levels, paused, resumed and ended in the audit log with every fact; the log verifies and a tampered copy does not @R39 @R10 @R38', async ({ browser }) => {
  w = await world(browser, { name: 'front-desk' }, { node: 'relay-e2e' });
  const page = w.operator;
  await openView(page, w.relay, 'front-desk', w.endpoint);
  await w.endpoint.click('pause');
  await expect(page.getByTestId('session-phase')).toHaveAttribute('data-phase', 'paused');
  await w.endpoint.click('resume');
  await expect(page.getByTestId('session-phase')).toHaveAttribute('data-phase', 'active');
  await w.endpoint.click('end');
  await expect(page.getByTestId('view-state')).toContainText('the user ended the session');

  const relay = w.relay;
  const login = await record(relay, (r) => r.kind === 'auth.login' || (r.kind === 'user.enrolled' && r.actor === 'operator'));
  expect(login.node).toBe('relay-e2e');
  const started = await record(relay, (r) => r.kind === 'session.start');
  const session = started.session!;
  expect(session.ticket).toBe('INC-4711');
  expect(session.reason).toBe('incident');
  expect(session.device).toBe('front-desk');
  expect(session.operator).toBe('operator');
  expect(session.endpoint_user).not.toBe('');
  expect(started.actor).toBe('operator');
  expect(started.source).toBe('127.0.0.1');
  const ofSession = (kind: string) => record(relay, (r) => r.kind === kind && r.session?.session_id === session.session_id);
  const asked = await ofSession('consent.asked');
  expect(asked.session!.levels).toContain('view');
  const allowed = await ofSession('consent.allowed');
  expect(allowed.outcome).toBe('success');
  expect(allowed.actor).toBe('user@front-desk');
  expect(allowed.session!.levels).toContain('view');
  expect(allowed.detail).toContain('receipt signed at');
  const paused = await ofSession('session.paused');
  expect(paused.actor).toBe('user@front-desk');
  const resumed = await ofSession('session.resumed');
  const ended = await ofSession('session.ended');
  expect(ended.detail).toContain('the user ended the session');
  for (const r of [started, asked, allowed, paused, resumed, ended]) {
    expect(r.node).toBe('relay-e2e');
    expect(r.session!.device_id).toBe(session.device_id);
    expect(r.session!.endpoint_user).toBe(session.endpoint_user);
    expect(r.session!.ticket).toBe('INC-4711');
  }
  // Sequence numbers follow the order things happened.
  const seqs = [started, asked, allowed, paused, resumed, ended].map((r) => r.seq);
  expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);

  // The relay's verifier, on the live directory (a checkpoint comes within a second).
  // Until then the records after the newest checkpoint are signed by nothing, and verify says so.
  const pinned = relay.pinnedKey();
  await expect.poll(() => relayCli(['audit', 'verify', '--dir', relay.auditDir, '--key', pinned]).status, { timeout: 10_000 }).toBe(0);
  const ok = relayCli(['audit', 'verify', '--dir', relay.auditDir, '--key', pinned, '--receipts']);
  expect(ok.stdout).toMatch(/^OK .*node relay-e2e, \d+ records/);
  // The user's signed consent checks out against the key the device enrolled with, on the record.
  expect(ok.stdout).toMatch(/OK receipts: [1-9]\d* signed receipts of 1 devices/);

  // A copy with one byte of the allowed record changed (still valid JSON) fails and names it.
  const copy = tempDir('audit-copy');
  for (const f of ['log.jsonl', 'checkpoints.jsonl', 'audit.pub']) fs.copyFileSync(path.join(relay.auditDir, f), path.join(copy, f));
  const lines = fs.readFileSync(path.join(copy, 'log.jsonl'), 'utf8').split('\n');
  lines[allowed.seq] = lines[allowed.seq].replace('"user@front-desk"', '"user@front-dest"');
  fs.writeFileSync(path.join(copy, 'log.jsonl'), lines.join('\n'));
  const bad = relayCli(['audit', 'verify', '--dir', copy, '--key', pinned]);
  expect(bad.status).not.toBe(0);
  expect(bad.stderr).toContain(`record ${allowed.seq}: altered`);
});

test('security events are written whatever the human log filter says, and CLI commands (agent-token create, unlock) beside a running relay land in its log @R41 @R39', async ({ browser }) => {
  redis = await RedisServer.start();
  const relay = await Relay.start({ redis: redis.url(), node: 'relay-quiet', env: { RUST_LOG: 'off' } });
  w = await worldOn(browser, relay, { name: 'desk-quiet' });
  expect(relay.proc.log()).not.toContain('auth.login');
  await record(relay, (r) => r.kind === 'user.enrolled' && r.actor === 'admin');
  await record(relay, (r) => r.kind === 'user.enrolled' && r.actor === 'operator');
  await record(relay, (r) => r.kind === 'device.enrolled');

  // The embedded store would be held by the relay; with Redis the CLI runs beside it, and its
  // event goes into the running relay's log (not a second file), before the token is printed.
  const cli = relayCli(['--redis', redis.url(), '--data-dir', relay.dataDir, '--node', 'relay-quiet', '--policy', SAMPLE_POLICY, 'agent-token', 'create', '--segment', 'office']);
  expect(cli.status, cli.stderr).toBe(0);
  expect(cli.stdout.trim()).not.toBe('');
  // The record names who ran it: the OS account (its uid, which an environment variable cannot
  // change) and the host.
  const cliActor = new RegExp(`^cli:\\S+\\(uid ${process.getuid!()}\\)@${os.hostname()}$`);
  const created = relay.auditRecords().filter((r) => r.kind === 'device.token_created' && cliActor.test(r.actor));
  expect(created).toHaveLength(1);
  expect(created[0].node).toBe('relay-quiet');
  // Break-glass unlock beside the running relay: an address locked after failed sign-ins (the
  // lock record as the relay stores it) is lifted from the command line, and the running relay's
  // log has the event.
  execFileSync('redis-cli', ['-p', String(redis.port), 'HSET', 'sightline:lockouts', 'addr:192.0.2.77', '{"failures":8,"last_failure_ms":0,"locked":true}']);
  // The sample policy puts unlock under an admin's approval.
  const approval = await approveCommand(w.admin, 'unlock', 'address:192.0.2.77');
  const unlock = relayCli(['--redis', redis.url(), '--data-dir', relay.dataDir, '--node', 'relay-quiet', '--policy', SAMPLE_POLICY, 'unlock', '--address', '192.0.2.77', '--approval', approval]);
  expect(unlock.status, unlock.stderr).toBe(0);
  const unlocked = relay.auditRecords().filter((r) => r.kind === 'auth.unlocked');
  expect(unlocked).toHaveLength(1);
  expect(unlocked[0].actor).toMatch(cliActor);
  expect(unlocked[0].subject).toBe('addr:192.0.2.77');
  expect(fs.readdirSync(relay.auditDir).filter((f) => f.endsWith('.jsonl')).sort()).toEqual(['checkpoints.jsonl', 'log.jsonl']);
});

/** Mounts a small tmpfs (the honest full disk: root ignores permission bits). */
function smallDisk(): string {
  const dir = tempDir('small-disk');
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', dir]);
  mounted = dir;
  return dir;
}

/** Signs the admin out and in again (their passkey lives in that page's authenticator): '' when
 * signed in, else the error shown. */
async function signInOutcome(page: Page, relay: Relay): Promise<string> {
  await page.goto(relay.url);
  const signedIn = page.getByTestId('signed-in-as');
  const form = page.locator('input[name="username"]');
  await expect(signedIn.or(form)).toBeVisible();
  if (await signedIn.isVisible()) {
    await page.getByTestId('logout').click();
    await expect(form).toBeVisible();
  }
  await form.fill('admin');
  await page.getByRole('button', { name: 'Sign in with passkey' }).click();
  const error = page.getByTestId('login-error');
  await expect(signedIn.or(error)).toBeVisible();
  return (await error.isVisible()) ? (await error.textContent()) ?? 'error' : '';
}

async function fill(dir: string): Promise<void> {
  try { fs.writeFileSync(path.join(dir, 'filler'), Buffer.alloc(1024 * 1024)); } catch { /* full: that is the point */ }
}

test('with the audit disk full, the running session ends, sign-in and session requests are refused with the reason and /readyz reports it while /healthz stays alive; freeing space restores service @R41 @R46', async ({ browser }) => {
  const disk = smallDisk();
  w = await world(browser, { name: 'desk-full' }, { auditDir: path.join(disk, 'audit'), args: ['--log-format', 'json'] });
  const relay = w.relay;
  // A session runs when the disk fills up.
  await openView(w.operator, relay, 'desk-full', w.endpoint);
  await fill(disk);
  // The relay learns the disk is full from its next write; writes that still fit in a file's
  // last page succeed. Sign-ins go on until one cannot be recorded: that one is refused.
  let refusal = '';
  for (let attempt = 0; attempt < 40 && refusal === ''; attempt++) refusal = await signInOutcome(w.admin, relay);
  expect(refusal).toContain('audit log cannot be written');
  // The cause (the log's path, the OS error) stays in the relay's own log: an anonymous caller
  // learns only that security actions are refused (ASVS 16.5.1).
  expect(refusal).not.toContain(disk);
  expect(refusal).not.toMatch(/No space|os error|ENOSPC/i);
  // The running session ended, on both sides, with the reason.
  await expect(w.operator.getByTestId('view-state')).toContainText("the relay's audit log could not be written");
  await w.endpoint.windowGone();

  // Not ready (a balancer sends it no new work), yet alive (an orchestrator does not restart it).
  // Anyone can ask either, so neither names a reason, path or count; the node's log does.
  const ready = await fetch(`http://127.0.0.1:${relay.port}/readyz`);
  expect(ready.status).toBe(503);
  expect(await ready.json()).toEqual({ status: 'not_ready' });
  const alive = await fetch(`http://127.0.0.1:${relay.port}/healthz`);
  expect([alive.status, await alive.json()]).toEqual([200, { status: 'ok' }]);
  const notReady = () => relay.proc.log().replace(/\u0000/g, '').split('\n').filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { message: string; failing?: string }).filter((l) => l.message === 'not ready to take sessions');
  await expect.poll(() => notReady().map((l) => l.failing?.startsWith('audit log:'))).toEqual([true]);

  // The signed-in operator asks for a session: refused before the endpoint is asked.
  const prompts = () => w!.agent.log().split('consent-ui prompt').length;
  const before = prompts();
  await requestView(w.operator, relay, 'desk-full');
  await expect(w.operator.getByTestId('view-state')).toContainText('audit log cannot be written');
  // The endpoint was not asked (its agent logs every prompt it shows).
  expect(prompts()).toBe(before);

  // Space returns: the relay writes what it held and serves again.
  fs.rmSync(path.join(disk, 'filler'));
  await expect.poll(async () => (await fetch(`http://127.0.0.1:${relay.port}/readyz`)).status, { timeout: 15_000 }).toBe(200);
  expect(await (await fetch(`http://127.0.0.1:${relay.port}/readyz`)).json()).toEqual({ status: 'ready' });
  await expect.poll(() => signInOutcome(w!.admin, relay), { timeout: 20_000 }).toBe('');
  await relay.proc.kill();
  const verify = relayCli(['audit', 'verify', '--dir', relay.auditDir, '--key', relay.pinnedKey()]);
  expect(verify.status, verify.stderr).toBe(0);
});

test('two relays on Redis: a node killed with SIGKILL loses none of its acknowledged events; both logs verify and export merged @R43 @R39', async ({ browser }) => {
  redis = await RedisServer.start();
  const portA = await freePort();
  const publicUrl = `http://localhost:${portA}/`;
  const nodeA = await Relay.start({ port: portA, redis: redis.url(), publicUrl, node: 'node-a' });
  const nodeB = await Relay.start({ redis: redis.url(), publicUrl, node: 'node-b' });
  others.push(nodeA, nodeB);
  const { page: admin } = await contextWithPasskeys(browser);
  await enrolFromLink(admin, nodeB.bootstrapLink(), 'admin');
  const cookie = (await admin.context().cookies()).find((c) => c.name === 'sightline_session')!;
  const asAdmin = await playwrightRequest.newContext({ extraHTTPHeaders: { cookie: `sightline_session=${cookie.value}` } });
  // Each 200 means the node had the event on disk before it answered.
  const tokens = async (relay: Relay, n: number) => {
    for (let i = 0; i < n; i++) {
      const res = await asAdmin.post(`http://127.0.0.1:${relay.port}/api/admin/agent-tokens`, { data: { segment: 'office' } });
      expect(res.status()).toBe(200);
    }
  };
  await tokens(nodeA, 12);
  await tokens(nodeB, 7);
  await nodeA.proc.kill('SIGKILL');
  const created = (relay: Relay) => relay.auditRecords().filter((r) => r.kind === 'device.token_created');
  expect(created(nodeA)).toHaveLength(12);
  // The node comes back on its own log (verified before it appends) and goes on.
  const again = await Relay.start({ port: portA, redis: redis.url(), publicUrl, node: 'node-a', dataDir: nodeA.dataDir });
  others.push(again);
  await tokens(again, 1);
  await asAdmin.dispose();
  expect(created(again)).toHaveLength(13);
  // Both nodes run on: each signs a checkpoint over its newest records within a second.
  const keys = ['--key', nodeA.pinnedKey(), '--key', nodeB.pinnedKey()];
  const verifyBoth = () => relayCli(['audit', 'verify', '--dir', nodeA.auditDir, '--dir', nodeB.auditDir, ...keys]);
  await expect.poll(() => verifyBoth().status, { timeout: 10_000 }).toBe(0);
  const verify = verifyBoth();
  expect(verify.status, verify.stderr).toBe(0);
  expect(verify.stdout).toContain('node node-a');
  expect(verify.stdout).toContain('node node-b');
  const exported = relayCli(['audit', 'export', '--dir', nodeA.auditDir, '--dir', nodeB.auditDir, ...keys, '--accept-tail', '--kind', 'device.token_created']);
  expect(exported.status, exported.stderr).toBe(0);
  const merged = exported.stdout.trim().split('\n').map((l) => JSON.parse(l) as AuditRecord);
  expect(merged).toHaveLength(20);
  expect(merged.map((r) => r.ts_ms)).toEqual([...merged.map((r) => r.ts_ms)].sort((a, b) => a - b));
  expect(new Set(merged.map((r) => r.node))).toEqual(new Set(['node-a', 'node-b']));
});

test('the Audit page verifies what the relay serves, in the browser, against the signed checkpoint and the node key, and shows a failure when a served record does not match its proof @R39 @R45', async ({ browser }) => {
  w = await world(browser, { name: 'desk-audit' }, { node: 'relay-page' });
  const admin = w.admin;
  await admin.getByTestId('tab-audit').click();
  const verdict = admin.getByTestId('audit-verification');
  const enrolled = admin.getByTestId('audit-row').and(admin.locator('[data-kind="user.enrolled"]'));
  // Nothing is verified against the key the relay sends with the page; the auditor pins theirs.
  const key = fs.readFileSync(w.relay.pinnedKey(), 'utf8').trim();
  await expect(verdict).toHaveAttribute('data-state', 'unpinned');
  await expect(verdict).toContainText(key);
  await admin.locator('textarea[name="audit-keys"]').fill(key);
  await admin.getByTestId('audit-pin').click();
  // A checkpoint covers new records within a second; until then they show as not yet covered.
  await expect.poll(async () => {
    await admin.getByTestId('audit-search').click();
    await expect(enrolled.first()).toBeVisible();
    return `${await verdict.getAttribute('data-state')} ${await enrolled.first().getAttribute('data-proof')}`;
  }, { timeout: 10_000 }).toBe('verified verified');
  await expect(verdict).toContainText(key);
  await expect(verdict).toContainText('node relay-page');
  await expect(enrolled.last()).toHaveAttribute('data-proof', 'verified');

  // Filters narrow the list.
  await admin.locator('select[name="audit-kind"]').selectOption('device.enrolled');
  await admin.getByTestId('audit-search').click();
  await expect(admin.getByTestId('audit-row').first()).toHaveAttribute('data-kind', 'device.enrolled');
  await expect(admin.getByTestId('audit-row').and(admin.locator('[data-kind="user.enrolled"]'))).toHaveCount(0);
  await admin.locator('select[name="audit-kind"]').selectOption('');

  // Whoever serves the page drops the proof of a record the checkpoint covers (so an altered
  // record would pass as "not yet checkpointed"): the browser fails it. The control is the
  // verified answer above, served untouched.
  await admin.route('**/api/audit/records*', async (route) => {
    const served = await (await route.fetch()).json();
    const covered = served.records.find((r: { line: string; proof: string[] | null }) => r.proof !== null);
    covered.proof = null;
    await route.fulfill({ json: served });
  });
  await admin.getByTestId('audit-search').click();
  await expect(verdict).toHaveAttribute('data-state', 'failed');
  await expect(verdict).toContainText('no proof, though the checkpoint covers');
  await admin.unroute('**/api/audit/records*');

  // Someone edits a record on the relay's disk (same length, still valid JSON): the relay serves
  // the edited line with the proof of the original, and the browser says so.
  const logFile = path.join(w.relay.auditDir, 'log.jsonl');
  const lines = fs.readFileSync(logFile, 'utf8').split('\n');
  const target = lines.findIndex((l) => l.includes('"kind":"user.enrolled"') && l.includes('"actor":"operator"'));
  expect(target).toBeGreaterThanOrEqual(0);
  lines[target] = lines[target].replace('"actor":"operator"', '"actor":"operatos"');
  fs.writeFileSync(logFile, lines.join('\n'));
  await admin.getByTestId('audit-search').click();
  await expect(verdict).toHaveAttribute('data-state', 'failed');
  await expect(verdict).toContainText(`record ${target}`);
  const row = admin.getByTestId('audit-row').filter({ hasText: 'operatos' });
  await expect(row).toHaveAttribute('data-proof', 'failed');
});
