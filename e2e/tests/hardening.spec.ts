// Browser hardening: the relay's security headers, and a CSP that Chromium enforces while the
// viewer keeps working under it. (Every other test also fails on any CSP violation: see the
// `contextGuard` fixture in the harness.)
import { expect } from '@playwright/test';
import * as tls from 'node:tls';
import * as fs from 'node:fs';
import { test, Relay, contextWithPasskeys, enrolFromLink, inviteAndEnrol, api, CSP_VIOLATION, tempDir, testCertificate } from './harness';

let relay: Relay | undefined;

test.afterEach(async () => {
  await relay?.proc.kill();
  relay = undefined;
});

test('the relay sends a strict CSP and security headers; the viewer works under the CSP and Chromium enforces it @hardening', async ({ browser }) => {
  relay = await Relay.start();
  const base = `http://127.0.0.1:${relay.port}`;
  const csp = (h: Headers) => Object.fromEntries(h.get('content-security-policy')!.split('; ').map((d) => [d.split(' ')[0], d.split(' ').slice(1).join(' ')]));
  for (const route of ['/', '/main.js', '/api/me', '/healthz', '/readyz']) {
    const r = await fetch(base + route);
    const h = r.headers;
    const policy = csp(h);
    expect(policy['default-src'], route).toBe("'none'");
    expect(policy['script-src'], route).toBe("'self' 'wasm-unsafe-eval'");
    expect(policy['style-src'], route).toBe("'self'");
    expect(policy['connect-src'], route).toBe(`'self' ws://localhost:${relay.port}`);
    expect(policy['object-src'], route).toBe("'none'");
    expect(policy['base-uri'], route).toBe("'none'");
    expect(policy['frame-ancestors'], route).toBe("'none'");
    expect(h.get('x-content-type-options'), route).toBe('nosniff');
    expect(h.get('x-frame-options'), route).toBe('DENY');
    expect(h.get('referrer-policy'), route).toBe('no-referrer');
    expect(h.get('permissions-policy'), route).toContain('camera=()');
    // No TLS here, so no HSTS (the unit test covers the TLS case).
    expect(h.get('strict-transport-security'), route).toBeNull();
    expect(h.get('cache-control'), route).toBe(route.startsWith('/api/') || route === '/healthz' || route === '/readyz' ? 'no-store' : null);
  }
  // /healthz says whether the node is alive, /readyz whether it takes sessions, nothing else.
  expect(await (await fetch(`${base}/healthz`)).json()).toEqual({ status: 'ok' });
  expect(await (await fetch(`${base}/readyz`)).json()).toEqual({ status: 'ready' });

  // The viewer works under the policy: the admin enrols with a passkey and is signed in.
  const { page } = await contextWithPasskeys(browser);
  const seen: string[] = [];
  page.on('console', (m) => { if (CSP_VIOLATION.test(m.text())) seen.push(m.text()); });
  await enrolFromLink(page, relay.bootstrapLink(), 'admin');
  expect(seen, 'no violation while the viewer runs').toEqual([]);

  // The control: an inline script is refused, and the refusal is reported where the guard looks.
  test.info().annotations.push({ type: 'csp-violation-expected', description: 'the control injects an inline script' });
  const ran = await page.evaluate(async () => {
    const s = document.createElement('script');
    s.textContent = 'window.__inlineRan = true;';
    document.head.appendChild(s);
    await new Promise((r) => setTimeout(r, 100));
    return (window as any).__inlineRan === true;
  });
  expect(ran, 'the inline script ran').toBe(false);
  await expect.poll(() => seen.length, { message: 'Chromium reported the violation' }).toBeGreaterThan(0);
  expect(seen[0]).toContain("script-src 'self' 'wasm-unsafe-eval'");
});

test('with the shortest token lifetime an active user stays signed in for several lifetimes and an idle one is signed out @hardening @R17', async ({ browser }) => {
  test.setTimeout(200_000);
  relay = await Relay.start({ args: ['--token-ttl-s', '30'] });
  const { page: active } = await contextWithPasskeys(browser);
  await enrolFromLink(active, relay.bootstrapLink(), 'admin');
  const idle = await inviteAndEnrol(browser, active, 'idle-operator', 'operator');
  const started = Date.now();
  // Four lifetimes: one user moves the pointer now and then, the other does nothing (and the test
  // sends nothing on its behalf, since any request could renew its token).
  while (Date.now() - started < 120_000) {
    await active.mouse.move(100 + Math.random() * 200, 100 + Math.random() * 200);
    await active.waitForTimeout(3_000);
  }
  expect((await api(active, 'GET', '/api/me')).status, 'the active user is still signed in').toBe(200);
  expect((await api(idle, 'GET', '/api/me')).status, 'the idle user is signed out').toBe(401);
});

/** A TLS handshake with the relay limited to `version`: the protocol agreed, or the error code. */
function handshake(port: number, ca: string, version: tls.SecureVersion): Promise<{ protocol?: string; error?: string }> {
  return new Promise((resolve) => {
    const socket = tls.connect({
      host: '127.0.0.1', port, servername: 'localhost', ca: fs.readFileSync(ca),
      minVersion: version, maxVersion: version,
      // The client side allows the old protocol (OpenSSL's default security level would refuse it
      // itself, and the probe would prove nothing about the relay).
      ciphers: 'DEFAULT:@SECLEVEL=0',
    }, () => { resolve({ protocol: socket.getProtocol() ?? undefined }); socket.end(); });
    socket.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
  });
}

test('the relay speaks TLS 1.2 and 1.3 only: TLS 1.0 and 1.1 clients are refused in the handshake @R42 @hardening', async () => {
  const certificate = testCertificate(tempDir('tls'));
  relay = await Relay.start({ tls: certificate });
  // The controls: both current versions complete the handshake (so the probe works).
  expect(await handshake(relay.port, certificate.ca, 'TLSv1.3')).toEqual({ protocol: 'TLSv1.3' });
  expect(await handshake(relay.port, certificate.ca, 'TLSv1.2')).toEqual({ protocol: 'TLSv1.2' });
  // The relay ends the old versions' handshakes with an alert of its own (protocol_version, or
  // handshake_failure where nothing the old hello offers is acceptable): these are alerts
  // received from the relay, not the client giving up.
  for (const old of ['TLSv1.1', 'TLSv1'] as const) {
    const refused = await handshake(relay.port, certificate.ca, old);
    expect(['ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE'], `${old}: ${JSON.stringify(refused)}`).toContain(refused.error);
  }
});
