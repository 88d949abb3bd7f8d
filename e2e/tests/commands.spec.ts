// Commands on the relay's host (issue 23): where the node's policy gates them, they run only
// with the one-time code of an admin's approval given in the dashboard (a passkey step-up, a
// command.approved record) or with the node's break-glass credential; every refusal, approval
// used and break-glass is a record naming the OS account, and a command cannot pick a laxer
// policy than the one the node runs.
import { expect } from '@playwright/test';
import { test } from './harness';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Relay, RedisServer, relayCli, tempDir, SAMPLE_POLICY, contextWithPasskeys, enrolFromLink, AuditRecord } from './harness';

let relay: Relay | undefined;
let redis: RedisServer | undefined;

test.afterEach(async () => {
  await relay?.proc.kill();
  relay = undefined;
  await redis?.kill();
  redis = undefined;
});

test('a gated command on the relay host runs only with an admin approval from the dashboard or the break-glass credential, each on the record @R43 @R39 @R41', async ({ browser }) => {
  // The node's policy: the sample (unlock needs an approval) with a break-glass credential.
  const glass = relayCli(['break-glass', 'create']);
  expect(glass.status, glass.stderr).toBe(0);
  const secret = glass.stdout.trim();
  const hashLine = glass.stderr.split('\n').find((l) => l.startsWith('break_glass_sha256 = '))!;
  expect(hashLine).toBe(`break_glass_sha256 = "${crypto.createHash('sha256').update(secret).digest('hex')}"`);
  const dir = tempDir('commands');
  const policy = path.join(dir, 'policy.toml');
  const sample = fs.readFileSync(SAMPLE_POLICY, 'utf8');
  expect(sample).toContain('# break_glass_sha256 = "..."');
  fs.writeFileSync(policy, sample.replace('# break_glass_sha256 = "..."', hashLine));
  const secretFile = path.join(dir, 'break-glass');
  fs.writeFileSync(secretFile, `${secret}\n`);

  redis = await RedisServer.start();
  relay = await Relay.start({ redis: redis.url(), node: 'relay-host', policy });
  const { page: admin } = await contextWithPasskeys(browser);
  await enrolFromLink(admin, relay.bootstrapLink(), 'admin');
  const lock = (address: string) => execFileSync('redis-cli', ['-p', String(redis!.port), 'HSET', 'sightline:lockouts', `addr:${address}`, '{"failures":8,"last_failure_ms":0,"locked":true}']);
  const locked = (address: string) => execFileSync('redis-cli', ['-p', String(redis!.port), 'HEXISTS', 'sightline:lockouts', `addr:${address}`], { encoding: 'utf8' }).trim() === '1';
  const unlock = (address: string, extra: string[] = [], policyFile = policy) =>
    relayCli(['--redis', redis!.url(), '--data-dir', relay!.dataDir, '--node', 'relay-host', '--policy', policyFile, 'unlock', '--address', address, ...extra]);
  const records = (kind: string): AuditRecord[] => relay!.auditRecords().filter((r) => r.kind === kind);
  const cliActor = new RegExp(`^cli:\\S+\\(uid ${process.getuid!()}\\)@${os.hostname()}$`);

  // Without anything: refused, on the record, and the lock stays.
  lock('192.0.2.77');
  const bare = unlock('192.0.2.77');
  expect(bare.status).not.toBe(0);
  expect(bare.stderr).toContain("unlock needs an admin's approval");
  expect(locked('192.0.2.77')).toBe(true);
  const refused = records('command.refused');
  expect(refused).toHaveLength(1);
  expect(refused[0].actor).toMatch(cliActor);
  expect(refused[0].subject).toBe('command:unlock address:192.0.2.77');
  expect(records('auth.unlocked')).toHaveLength(0);

  // The admin approves in the dashboard: a passkey step-up, then the code, once.
  await admin.getByTestId('tab-admin').click();
  const form = admin.getByTestId('command-approval-form');
  await form.getByLabel('Command').selectOption('unlock');
  await form.getByLabel('Target').fill('address:192.0.2.77');
  await form.getByLabel('Reason').fill('INC-4711: the service desk locked itself out');
  await form.getByRole('button', { name: 'Approve (passkey)' }).click();
  const code = (await admin.getByTestId('command-approval-code').textContent())!.trim();
  expect(code).toMatch(/^[0-9a-f]{32}$/);
  const approvalId = await admin.getByTestId('command-approval').getAttribute('data-id');
  const [approved] = records('command.approved');
  expect(approved.actor).toBe('admin');
  const detail = JSON.parse(approved.detail);
  expect(detail).toMatchObject({ id: approvalId, command: 'unlock', target: 'address:192.0.2.77', reason: 'INC-4711: the service desk locked itself out' });
  expect(detail.code_sha256).toBe(crypto.createHash('sha256').update(code).digest('hex'));
  expect(fs.readFileSync(path.join(relay.auditDir, 'log.jsonl'), 'utf8')).not.toContain(code);
  // A step-up by the admin came before it.
  expect(relay.auditRecords().some((r) => r.kind === 'auth.step_up' && r.actor === 'admin' && r.seq < approved.seq)).toBe(true);

  // The code is for that target only.
  lock('192.0.2.78');
  const elsewhere = unlock('192.0.2.78', ['--approval', code]);
  expect(elsewhere.status).not.toBe(0);
  expect(elsewhere.stderr).toContain('is for unlock address:192.0.2.77, not for this command');
  expect(locked('192.0.2.78')).toBe(true);
  // A command that names another policy than the node's own (here: one without break-glass) is refused.
  const otherPolicy = unlock('192.0.2.77', ['--approval', code], SAMPLE_POLICY);
  expect(otherPolicy.status).not.toBe(0);
  expect(otherPolicy.stderr).toContain('is not the one the node runs');

  // With the code, for its target: it runs, consuming the approval, named in the record.
  const approvedRun = unlock('192.0.2.77', ['--approval', code]);
  expect(approvedRun.status, approvedRun.stderr).toBe(0);
  expect(locked('192.0.2.77')).toBe(false);
  const [used] = records('command.approval_used');
  expect(used.subject).toBe(`approval:${approvalId}`);
  expect(used.actor).toMatch(cliActor);
  expect(used.detail).toContain(`approved by admin (record ${approved.seq})`);
  const [unlocked] = records('auth.unlocked');
  expect(unlocked.subject).toBe('addr:192.0.2.77');
  expect(unlocked.seq).toBeGreaterThan(used.seq);
  // Once.
  lock('192.0.2.77');
  const again = unlock('192.0.2.77', ['--approval', code]);
  expect(again.status).not.toBe(0);
  expect(again.stderr).toContain(`approval ${approvalId} was used already (record ${used.seq})`);
  expect(locked('192.0.2.77')).toBe(true);

  // Break-glass: a wrong credential is refused; the right one runs, loudly.
  const wrongFile = path.join(dir, 'wrong');
  fs.writeFileSync(wrongFile, 'not the credential\n');
  const wrong = unlock('192.0.2.78', ['--break-glass', wrongFile]);
  expect(wrong.status).not.toBe(0);
  expect(wrong.stderr).toContain('does not match');
  expect(locked('192.0.2.78')).toBe(true);
  const broken = unlock('192.0.2.78', ['--break-glass', secretFile]);
  expect(broken.status, broken.stderr).toBe(0);
  expect(locked('192.0.2.78')).toBe(false);
  const [glassRecord] = records('command.break_glass');
  expect(glassRecord.actor).toMatch(cliActor);
  expect(glassRecord.subject).toBe('command:unlock address:192.0.2.78');
  expect(records('command.refused').map((r) => r.subject)).toEqual([
    'command:unlock address:192.0.2.77', 'command:unlock address:192.0.2.78', 'command:unlock address:192.0.2.77',
    'command:unlock address:192.0.2.77', 'command:unlock address:192.0.2.78',
  ]);
  // Which policy the node runs is on its record, and it is the one these commands were judged by.
  const [started] = records('node.started');
  expect(JSON.parse(started.detail).policy_sha256).toBe(crypto.createHash('sha256').update(fs.readFileSync(policy)).digest('hex'));
});
