// Benchmarks, run by `cargo xtask bench` (never by `cargo xtask test`): time from opening a view
// to the first decoded frame, glass-to-glass latency from the synthetic source, agent CPU time per
// frame, passkey login round trip, and authenticated requests per second on one core. Results go
// to bench-results/*.json; nothing here asserts a timing.
import { expect, Page } from '@playwright/test';
import { test } from './harness';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { World, world, worldOn, stopWorld, sampleFrames, latencyMs, requestView, Relay, RedisServer, openView, SAMPLE_POLICY, tempDir, inviteAndEnrol, auditorKeys, OidcProvider, contextWithPasskeys, freePort, signInThroughProvider, api } from './harness';
import { spawnSync } from 'node:child_process';

const OUT = path.resolve(__dirname, '../../bench-results');

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function cpuSeconds(pid: number): number {
  // utime + stime, fields 14 and 15 of /proc/PID/stat, in clock ticks (100 Hz on Linux).
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * From the user's Allow to the first decoded frame in the operator's browser: the agent logs the
 * moment the window reported Allow (UTC, microseconds); the browser's frame callback gives the
 * wall-clock presentation time. Same machine, same clock.
 */
async function allowToFirstFrame(w: World, agentName: string): Promise<number> {
  const page = w.operator;
  await page.evaluate(() => {
    const win = window as any;
    win.__firstFrame = undefined;
    const video = document.querySelector('video') as HTMLVideoElement;
    video.requestVideoFrameCallback((_now, meta) => { win.__firstFrame = performance.timeOrigin + meta.presentationTime; });
  });
  const decidedBefore = decidedTimes(w).length;
  await requestView(page, w.relay, agentName, 'BENCH-1');
  await w.endpoint.click('level:control');
  await w.endpoint.click('allow');
  await page.waitForFunction(() => (window as any).__firstFrame !== undefined, undefined, { timeout: 15_000 });
  await expect.poll(() => decidedTimes(w).length).toBeGreaterThan(decidedBefore);
  const decided = decidedTimes(w)[decidedBefore];
  return (await page.evaluate(() => (window as any).__firstFrame)) - decided;
}

/** Wall-clock ms of every "user decided" line in the agent's log. */
function decidedTimes(w: World): number[] {
  return w.agent.log().split('\n').filter((l) => l.includes('user decided')).map((l) => {
    const m = l.replace(/\x1b\[[0-9;]*m/g, '').match(/^(\S+Z)/);
    return m ? Date.parse(m[1]) + Number((m[1].match(/\.\d{3}(\d{3})/) ?? ['', '0'])[1]) / 1000 : NaN;
  });
}

/** Browser click to XTEST injection, observed as the X pointer arriving (polled with xdotool). */
async function inputLatency(w: World, x: number, y: number): Promise<number> {
  const page = w.operator;
  const p = await page.evaluate(([rx, ry]) => {
    const v = document.querySelector('video') as HTMLVideoElement;
    const r = v.getBoundingClientRect();
    const scale = Math.min(r.width / v.videoWidth, r.height / v.videoHeight);
    return { x: r.left + (r.width - v.videoWidth * scale) / 2 + (rx + 0.5) * scale, y: r.top + (r.height - v.videoHeight * scale) / 2 + (ry + 0.5) * scale };
  }, [x, y]);
  const t0 = Date.now();
  await page.mouse.move(p.x, p.y);
  for (;;) {
    const g = w.endpoint.pointer();
    if (Math.abs(g.x - x) <= 2 && Math.abs(g.y - y) <= 2) return Date.now() - t0;
    if (Date.now() - t0 > 5000) throw new Error('input never arrived');
  }
}

async function closeView(page: Page) {
  await page.getByRole('button', { name: 'Close view' }).click();
  await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'idle');
  // Let the agent stop publishing so the next open is a cold start, as an operator sees it.
  await page.waitForTimeout(500);
}

test('view latency and agent cost @bench', async ({ browser }) => {
  test.setTimeout(240_000);
  fs.mkdirSync(OUT, { recursive: true });
  const results: Record<string, unknown> = { date: new Date().toISOString(), machine: '2 cores, loopback, Debian chromium 156, debug build (deps opt-level 2, workspace opt-level 1)' };
  for (const size of ['1280x720', '1920x1080']) {
    const name = `bench-${size}`;
    const w = await world(browser, { name, size });
    const agent = w.agent;
    const page = w.operator;
    try {
      await expect(page.getByTestId('agent-row').filter({ hasText: name })).toBeVisible();
      const firstFrame: number[] = [];
      for (let i = 0; i < 10; i++) {
        firstFrame.push(await allowToFirstFrame(w, name));
        if (i < 9) {
          await closeView(page);
          await w.endpoint.windowGone();
        }
      }
      await expect(page.getByTestId('view-state')).toHaveAttribute('data-state', 'live');
      await expect.poll(() => page.evaluate(() => (document.querySelector('video') as HTMLVideoElement).videoWidth)).toBeGreaterThan(0);
      const input: number[] = [];
      for (let i = 0; i < 20; i++) input.push(await inputLatency(w, 700 + (i % 2) * 200, 500 + i * 5));
      await page.waitForTimeout(1000);
      const cpuBefore = cpuSeconds(agent.pid);
      const samples = await sampleFrames(page, 10_000);
      const cpuAfter = cpuSeconds(agent.pid);
      const frames = samples[samples.length - 1].counter - samples[0].counter;
      const lat = samples.map(latencyMs);
      results[size] = {
        allow_to_first_frame_ms: { median: quantile(firstFrame, 0.5), p95: quantile(firstFrame, 0.95), all: firstFrame.map(Math.round) },
        input_to_injection_ms: { median: quantile(input, 0.5), p95: quantile(input, 0.95), note: 'browser event to X pointer observed by polling xdotool (each poll ~5 ms): an upper bound' },
        glass_to_glass_ms: { median: quantile(lat, 0.5), p95: quantile(lat, 0.95), samples: lat.length },
        frames_captured: frames,
        frames_presented: samples.length,
        agent_cpu_ms_per_frame: Math.round(((cpuAfter - cpuBefore) * 1000 / frames) * 10) / 10,
      };
      await page.getByRole('button', { name: 'Close view' }).click();
    } finally {
      await stopWorld(w);
    }
  }
  fs.writeFileSync(path.join(OUT, 'latency.json'), JSON.stringify(results, null, 2));
  console.log(JSON.stringify(results, null, 2));
});

/** The bytes of every file under `dir`. */
function bytesUnder(dir: string): number {
  let total = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    total += entry.isDirectory() ? bytesUnder(p) : fs.statSync(p).size;
  }
  return total;
}

test('recording cost: relay CPU with and without the recorder, disk per minute, verification rate @bench', async ({ browser }) => {
  test.setTimeout(240_000);
  fs.mkdirSync(OUT, { recursive: true });
  // The same session twice, 1080p30: the sample policy (recording required), then a copy of it
  // with recording off for the agent's segment.
  const off = path.join(tempDir('policy'), 'policy.toml');
  fs.writeFileSync(off, fs.readFileSync(SAMPLE_POLICY, 'utf8').replace('[segments.office]\n', '[segments.office]\nrecording = "off"\n'));
  const results: Record<string, unknown> = { date: new Date().toISOString(), size: '1920x1080', fps: 30, machine: '2 cores, loopback, debug build' };
  for (const [label, policy] of [['recording', SAMPLE_POLICY], ['no_recording', off]] as const) {
    const w = await world(browser, { name: `rec-${label}`, size: '1920x1080' }, { policy });
    try {
      await openView(w.operator, w.relay, `rec-${label}`, w.endpoint);
      await w.operator.waitForTimeout(2000);
      const before = cpuSeconds(w.relay.proc.child.pid!);
      const started = Date.now();
      const samples = await sampleFrames(w.operator, 20_000);
      const seconds = (Date.now() - started) / 1000;
      const cpu = cpuSeconds(w.relay.proc.child.pid!) - before;
      const lat = samples.map(latencyMs);
      const entry: Record<string, unknown> = {
        relay_cpu_ms_per_s: Math.round((cpu * 1000) / seconds),
        glass_to_glass_ms: { median: quantile(lat, 0.5), p95: quantile(lat, 0.95) },
      };
      if (label === 'recording') {
        await w.endpoint.click('end');
        await expect(w.operator.getByTestId('view-state')).toContainText('the user ended the session');
        const dir = path.join(w.relay.dataDir, 'recordings');
        const [id] = fs.readdirSync(dir);
        await expect.poll(() => w.relay.recordingCli(['list']).stdout.includes('"complete":true')).toBe(true);
        const verifyStart = Date.now();
        const verified = w.relay.recordingCli(['verify', id, '--key', w.relay.pinnedKey(), '--identity', auditorKeys().identity]);
        const verifyMs = Date.now() - verifyStart;
        const report = JSON.parse(verified.stdout);
        const bytes = bytesUnder(path.join(dir, id));
        const minutes = (report.last_ms - report.started_ms) / 60_000;
        entry.disk_mb_per_minute = Math.round((bytes / 2 ** 20 / minutes) * 10) / 10;
        entry.verify_mb_per_s = Math.round((bytes / 2 ** 20 / (verifyMs / 1000)) * 10) / 10;
        // The same with the audit log cross-check (every chunk hash, the facts, the device key).
        await expect.poll(() => w.relay.auditRecords().some((r) => r.kind === 'recording.closed')).toBe(true);
        const crossStart = Date.now();
        const crossed = w.relay.recordingCli(['verify', id, '--key', w.relay.pinnedKey(), '--identity', auditorKeys().identity, '--audit-dir', w.relay.auditDir]);
        const crossMs = Date.now() - crossStart;
        expect(crossed.status, crossed.stderr).toBe(0);
        entry.verify_with_log_mb_per_s = Math.round((bytes / 2 ** 20 / (crossMs / 1000)) * 10) / 10;
        entry.verify_note = 'relay recording verify as a process (the auditor\'s tool): start, decrypt (age, auditor identity), hash, parse, check every seal and frame';
        // An auditor: click Search (ticket), click Open (step-up with the virtual authenticator,
        // the manifest and every encrypted chunk fetched, decrypted with the auditor's identity
        // and verified in the browser), first frame drawn. Five runs.
        const auditor = await inviteAndEnrol(browser, w.admin, 'audra', 'auditor');
        await auditor.getByTestId('tab-recordings').click();
        await auditor.locator('input[name="recording-identity"]').fill(auditorKeys().secret);
        await auditor.locator('textarea[name="recording-keys"]').fill(fs.readFileSync(w.relay.pinnedKey(), 'utf8'));
        await auditor.getByTestId('recording-pin').click();
        const firstFrame: number[] = [];
        for (let i = 0; i < 5; i++) {
          await auditor.locator('input[name="recording-ticket"]').fill('INC-4711');
          // The previous run's canvas is not this run's first frame.
          const t0 = await auditor.evaluate(() => {
            document.querySelector('canvas[data-testid="recording-canvas"]')?.setAttribute('data-stale', '');
            return performance.now();
          });
          await auditor.getByTestId('recordings-search').click();
          await auditor.getByTestId('recording-open').click();
          const presented = await auditor.evaluate(() => new Promise<number>((resolve) => {
            const wait = () => {
              const c = document.querySelector('canvas[data-testid="recording-canvas"]:not([data-stale])');
              if (c) c.addEventListener('frame', () => resolve(performance.now()), { once: true }); else setTimeout(wait, 5);
            };
            wait();
          }));
          firstFrame.push(presented - t0);
        }
        entry.search_to_first_frame_ms = { median: Math.round(quantile(firstFrame, 0.5)), all: firstFrame.map(Math.round), recording_s: Math.round(minutes * 60) };
      }
      results[label] = entry;
    } finally {
      await stopWorld(w);
    }
  }
  fs.writeFileSync(path.join(OUT, 'recording.json'), JSON.stringify(results, null, 2));
  console.log(JSON.stringify(results, null, 2));
});

/** Requests per second `wrk` (on core 1) gets from `url` with the session cookie, over `seconds`. */
function wrk(url: string, cookie: string, seconds: number): number {
  const r = spawnSync('taskset', ['-c', '1', 'wrk', '-t1', '-c32', `-d${seconds}s`, '-H', `Cookie: sightline_session=${cookie}`, url], { encoding: 'utf8' });
  const m = r.stdout.match(/Requests\/sec:\s+([\d.]+)/);
  const non2xx = r.stdout.match(/Non-2xx or 3xx responses:\s+(\d+)/);
  if (!m) throw new Error(`wrk failed: ${r.stderr}${r.stdout}`);
  if (non2xx) throw new Error(`wrk saw ${non2xx[1]} refused requests: the session did not hold`);
  return Number(m[1]);
}

test('passkey login round trip and authenticated requests per second on one core @bench', async ({ browser }) => {
  test.setTimeout(180_000);
  fs.mkdirSync(OUT, { recursive: true });
  const results: Record<string, unknown> = { date: new Date().toISOString(), route: 'GET /api/me (verify JWT, load session, revocation and user from the store)' };
  const redis = await RedisServer.start();
  try {
    for (const store of ['embedded', 'redis']) {
      const relay = await Relay.start({ cpu: 0, redis: store === 'redis' ? redis.url() : undefined });
      const w = await worldOn(browser, relay, { name: `bench-${store}` });
      try {
        // Login round trip as the operator's browser does it: start, passkey assertion, finish.
        const times: number[] = [];
        for (let i = 0; i < 20; i++) {
          times.push(await w.operator.evaluate(async () => {
            const t0 = performance.now();
            const start = await fetch('/api/login/start', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'operator' }) });
            const { ceremony_id, options } = await start.json();
            const cred = await navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey) }) as PublicKeyCredential;
            const finish = await fetch('/api/login/finish', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ceremony_id, credential: (cred as any).toJSON() }) });
            if (!finish.ok) throw new Error(`login failed: ${finish.status}`);
            return performance.now() - t0;
          }));
        }
        const cookie = (await w.operator.context().cookies()).find((c) => c.name === 'sightline_session')!.value;
        wrk(`http://127.0.0.1:${relay.port}/api/me`, cookie, 2); // warm-up
        const rps = wrk(`http://127.0.0.1:${relay.port}/api/me`, cookie, 8);
        results[store] = { login_round_trip_ms: { median: quantile(times, 0.5), p95: quantile(times, 0.95) }, authenticated_rps_one_core: Math.round(rps) };
      } finally {
        await stopWorld(w);
      }
    }
  } finally {
    await redis.kill();
  }
  fs.writeFileSync(path.join(OUT, 'auth.json'), JSON.stringify(results, null, 2));
  console.log(JSON.stringify(results, null, 2));
});

test('directory sign-in round trip: the provider, then the passkey @bench @R12', async ({ browser }) => {
  test.setTimeout(180_000);
  fs.mkdirSync(OUT, { recursive: true });
  const port = await freePort();
  const idp = await OidcProvider.start([`http://localhost:${port}/`], { alice: { groups: ['ops'] } });
  const relay = await Relay.start({ port, args: ['--sso-config', idp.ssoFile()] });
  try {
    const { page } = await contextWithPasskeys(browser);
    // The first sign-in enrols the passkey (and signs in at the provider); not measured.
    await signInThroughProvider(page, relay, 'alice');
    // Each measured one, as a person does it with the provider's session still open: the button,
    // the provider's redirect back (no form: its session covers it), the passkey, signed in.
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      // Signed out of the relay alone (the sign-out button would go on to end the provider's
      // session too, and this measures a sign-in that the provider's session covers).
      expect((await api(page, 'POST', '/api/logout', {})).status).toBe(200);
      await page.goto(relay.url);
      await expect(page.getByTestId('sso-start')).toBeVisible();
      const t0 = Date.now();
      await page.getByTestId('sso-start').click();
      await page.getByTestId('sso-passkey').click();
      await expect(page.getByTestId('signed-in-as')).toContainText('alice');
      times.push(Date.now() - t0);
    }
    const results = {
      date: new Date().toISOString(),
      what: 'click on the provider button -> provider (session open: immediate redirect) -> code exchange and ID token check -> passkey assertion -> signed in, in Chromium on loopback',
      sign_in_round_trip_ms: { median: quantile(times, 0.5), p95: quantile(times, 0.95), all: times },
    };
    fs.writeFileSync(path.join(OUT, 'sso.json'), JSON.stringify(results, null, 2));
    console.log(JSON.stringify(results, null, 2));
  } finally {
    await relay.proc.kill();
    await idp.proc.kill();
  }
});

/** Makes every RTCPeerConnection of the page relay-only (TURN), before the page loads. */
async function relayOnly(page: Page): Promise<void> {
  await page.addInitScript(() => {
    const Native = window.RTCPeerConnection;
    const Forced = function (config?: RTCConfiguration) {
      return new Native({ ...(config ?? {}), iceTransportPolicy: 'relay' });
    } as unknown as typeof RTCPeerConnection;
    Forced.prototype = Native.prototype;
    (window as any).RTCPeerConnection = Forced;
  });
  await page.reload();
}

test('media paths: Allow to first frame and glass-to-glass over UDP, ICE-TCP through a proxy (clean and with 1% loss), TURN over TCP and TLS @bench @R1 @R42', async ({ browser, launchOptions }) => {
  test.setTimeout(600_000);
  fs.mkdirSync(OUT, { recursive: true });
  const results: Record<string, unknown> = { date: new Date().toISOString(), machine: '2 cores, loopback and a veth pair, Debian chromium, debug build', rounds: 5 };
  const paths = ['udp', 'ice-tcp via proxy', 'ice-tcp via proxy, 1% loss', 'turn/tcp', 'turn/tls'] as const;
  for (const p of paths) {
    const { Coturn, ProxyNamespace, freePort } = await import('./harness');
    const mediaTcp = await freePort();
    const relay = await Relay.start({ args: ['--media-tcp-port', String(mediaTcp)] });
    let ns: InstanceType<typeof ProxyNamespace> | undefined;
    let coturn: InstanceType<typeof Coturn> | undefined;
    let own: import('@playwright/test').Browser | undefined;
    let w: World | undefined;
    try {
      if (p.startsWith('ice-tcp')) {
        ns = await ProxyNamespace.start([relay.port, mediaTcp]);
        if (p.endsWith('loss')) {
          try {
            ns.netem(['loss', '1%']);
          } catch (e) {
            // Some kernels (this CI machine's) have no sch_netem: say so instead of measuring nothing.
            results[p] = { not_measured: String(e).split('\n')[0] };
            continue;
          }
        }
      }
      let b = browser;
      if (p.startsWith('turn')) {
        await relay.proc.kill();
        coturn = await Coturn.start('127.0.0.1');
        const url = p === 'turn/tcp' ? `turn:127.0.0.1:${coturn.ports.tcp}?transport=tcp` : `turns:127.0.0.1:${coturn.ports.tls}?transport=tcp`;
        if (p === 'turn/tls') {
          own = await (await import('@playwright/test')).chromium.launch({ ...launchOptions, args: [...(launchOptions.args ?? []), `--ignore-certificate-errors-spki-list=${coturn.spki()}`] });
          b = own;
        }
        w = await world(b, { name: 'bench-path' }, { args: ['--media-tcp-port', String(mediaTcp), '--turn-url', url, '--turn-secret-file', coturn.secretFile] });
        await relayOnly(w.operator);
      } else {
        w = await worldOn(b, relay, { name: 'bench-path', behindProxy: ns });
      }
      await expect(w.operator.getByTestId('agent-row').filter({ hasText: 'bench-path' })).toBeVisible({ timeout: 30_000 });
      const firstFrame: number[] = [];
      for (let i = 0; i < 5; i++) {
        firstFrame.push(await allowToFirstFrame(w, 'bench-path'));
        if (i < 4) {
          await closeView(w.operator);
          await w.endpoint.windowGone();
        }
      }
      await w.operator.waitForTimeout(1000);
      const lat = (await sampleFrames(w.operator, 5000)).map(latencyMs);
      const recorded = w.relay.auditRecords().filter((r) => r.kind === 'session.media_path').map((r) => r.detail.split(' ')[3]);
      results[p] = {
        allow_to_first_frame_ms: { median: Math.round(quantile(firstFrame, 0.5)), all: firstFrame.map(Math.round) },
        glass_to_glass_ms: { median: quantile(lat, 0.5), p95: quantile(lat, 0.95), samples: lat.length },
        agent_media_transport_recorded: [...new Set(recorded)],
      };
    } finally {
      await stopWorld(w);
      await relay.proc.kill();
      await ns?.stop();
      await coturn?.proc.kill();
      await own?.close();
    }
  }
  fs.writeFileSync(path.join(OUT, 'paths.json'), JSON.stringify(results, null, 2));
  console.log(JSON.stringify(results, null, 2));
});
