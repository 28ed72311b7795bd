// The drill report (bulwark-drill's HTML page, proxy/drill/report_html.cc) in a real browser:
// Debian's Chromium, headless, driven by playwright-core. Run by scripts/browser-test.sh,
// itself run by ctest as browser.drill_report.
//
// The report is one made by the real bulwark-drill: DRILL_REPORT=FILE.html names an existing
// one (its JSON summary is read from FILE.json when there is one), else this runs
// `scripts/drill.sh config/drills/spike.yaml` (bulwark-testd backends and Bulwark on ephemeral
// ports, about 25 s) into a temporary directory. Opened from its file:// URL, the page must
// show no console error or warning and no page error, request nothing but file:// URLs, draw
// every chart (load and outcomes, latency, one per control chart of the JSON) as a visible
// SVG of non-zero size, with the verdict the JSON states (and drill.sh's exit status agrees:
// 0 when the objectives held, 1 when one failed), one objectives row per objective, and never
// overflow sideways at 1280 or 700 px.
//
// Environment: BULWARK_BIN, BULWARK_TESTD, BULWARK_DRILL (the binaries drill.sh runs; default
// build/...), BULWARK_BROWSER_TOOLS (where playwright-core is installed), CHROMIUM;
// DRILL_REPORT=FILE.html (use that report); BULWARK_SCREENSHOT_DRILL=PATH saves a full-page
// screenshot at 1280 px there.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { after, before, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BULWARK = process.env.BULWARK_BIN || path.join(root, 'build/bulwark');
const TESTD = process.env.BULWARK_TESTD || path.join(root, 'build/bulwark-testd');
const DRILL = process.env.BULWARK_DRILL || path.join(root, 'build/bulwark-drill');
const TOOLS = path.resolve(process.env.BULWARK_BROWSER_TOOLS || path.join(root, 'build/browser-tools'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOT = process.env.BULWARK_SCREENSHOT_DRILL || '';
const GIVEN = process.env.DRILL_REPORT || '';
const { chromium } = createRequire(path.join(TOOLS, 'package.json'))('playwright-core');

// The drill itself runs 20 s; Bulwark and the backends start in well under a second.
const DRILL_TIMEOUT_MS = 120000;

let browser;
let tmp;
const report = { html: '', json: null, exitCode: null };

// Runs scripts/drill.sh from the repository root; resolves with its exit status and output.
function runDrill(args) {
  for (const [what, file] of [['bulwark', BULWARK], ['bulwark-testd', TESTD], ['bulwark-drill', DRILL]]) {
    try {
      fs.accessSync(file, fs.constants.X_OK);
    } catch {
      throw new Error(`no ${what} at ${file} (build it, or set ${what === 'bulwark' ? 'BULWARK_BIN' : what === 'bulwark-testd' ? 'BULWARK_TESTD' : 'BULWARK_DRILL'})`);
    }
  }
  return new Promise((resolve, reject) => {
    const proc = spawn('bash', [path.join(root, 'scripts/drill.sh'), ...args], {
      cwd: root,
      env: { ...process.env, BULWARK_BIN: BULWARK, BULWARK_TESTD: TESTD, BULWARK_DRILL: DRILL },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    proc.stdout.on('data', (d) => { output += d; });
    proc.stderr.on('data', (d) => { output += d; });
    const timer = setTimeout(() => proc.kill('SIGTERM'), DRILL_TIMEOUT_MS);
    proc.on('error', reject);
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: signal ? `signal ${signal}` : code, output });
    });
  });
}

// A page that records what went wrong on it, and every request that was not for a file://
// URL (those are refused, so that nothing is fetched from anywhere).
async function openPage(url, viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const problems = [];
  const external = [];
  await context.route((u) => u.protocol !== 'file:', (route) => {
    external.push(route.request().url());
    return route.abort();
  });
  page.on('request', (r) => {
    if (!r.url().startsWith('file:')) external.push(r.url());
  });
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  await page.goto(url, { waitUntil: 'load' });
  return { page, problems, close: () => context.close(), externalNow: () => [...new Set(external)] };
}

before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  if (GIVEN && fs.existsSync(GIVEN)) {
    report.html = path.resolve(GIVEN);
    const json = report.html.replace(/\.html?$/, '') + '.json';
    if (fs.existsSync(json)) report.json = JSON.parse(fs.readFileSync(json, 'utf8'));
    console.log(`# report: ${report.html} (given by DRILL_REPORT)`);
    return;
  }
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bulwark-drill-report-'));
  report.html = path.join(tmp, 'report.html');
  const jsonFile = path.join(tmp, 'report.json');
  // A shorter spike than the bundled 5 + 10 + 5 s keeps the suite fast; the screenshot for the
  // docs is taken of the full one.
  const short = SCREENSHOT ? [] : ['--set', 'before=2s', '--set', 'spike_for=5s', '--set', 'after=2s'];
  const run = await runDrill(['config/drills/spike.yaml', '--report', report.html, '--json', jsonFile, ...short]);
  report.exitCode = run.code;
  // 0: the objectives held, 1: one failed; both write the report. Anything else is a failure
  // to run the drill.
  assert.ok(run.code === 0 || run.code === 1, `drill.sh exited with ${run.code}:\n${run.output}`);
  assert.ok(fs.existsSync(report.html), `no report at ${report.html}:\n${run.output}`);
  assert.ok(fs.existsSync(jsonFile), `no JSON summary at ${jsonFile}:\n${run.output}`);
  report.json = JSON.parse(fs.readFileSync(jsonFile, 'utf8'));
  console.log(`# drill.sh exited ${run.code}; report: ${report.html}`);
});

after(async () => {
  if (browser) await browser.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('the harness notices a page that fetches from elsewhere', async () => {
  // What the report must never do, to show that the checks below would see it.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bulwark-drill-harness-'));
  try {
    const file = path.join(dir, 'bad.html');
    fs.writeFileSync(file, '<!doctype html><title>x</title><img src="http://127.0.0.1:9/x.png" alt="">');
    const view = await openPage(pathToFileURL(file).href);
    await view.page.waitForTimeout(200);
    assert.deepEqual(view.externalNow(), ['http://127.0.0.1:9/x.png']);
    await view.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('drill report: self-contained, every chart drawn, the verdict of the run, no overflow', async () => {
  const view = await openPage(pathToFileURL(report.html).href);
  const { page } = view;
  try {
    // Charts: every <svg> on the page is a chart; each visible, with a size.
    const charts = await page.$$eval('svg', (svgs) => svgs.map((s) => {
      const r = s.getBoundingClientRect();
      const style = getComputedStyle(s);
      return {
        id: s.id, width: r.width, height: r.height, title: s.querySelector('title')?.textContent || '',
        visible: style.visibility !== 'hidden' && style.display !== 'none' && Number(style.opacity) > 0,
        marks: s.querySelectorAll('path, circle').length,
      };
    }));
    console.log(`# charts: ${charts.map((c) => `${c.title} (${Math.round(c.width)}x${Math.round(c.height)})`).join(', ')}`);
    assert.ok(charts.length >= 3, `at least 3 charts (found ${charts.length})`);
    for (const c of charts) {
      assert.ok(c.visible && c.width > 100 && c.height > 100, `chart ${c.id} is visible with a size: ${JSON.stringify(c)}`);
      assert.ok(c.title.length > 0, `chart ${c.id} has a title`);
    }
    for (const id of ['chart-load', 'chart-latency']) {
      assert.ok(await page.locator(`svg#${id}`).isVisible(), `${id} is visible`);
    }

    // The verdict is the JSON's (and drill.sh's exit status).
    const verdict = (await page.locator('#verdict').innerText()).trim();
    assert.match(verdict, /^(PASSED|FAILED)$/);
    if (report.json) {
      assert.equal(verdict, report.json.passed ? 'PASSED' : 'FAILED', 'verdict matches the JSON');
      assert.equal(charts.length, 2 + report.json.controls.length, 'one chart per control chart, plus two');
      assert.equal(await page.locator('#objectives tbody tr').count(), report.json.objectives.length);
      if (report.json.offered.some((v) => v > 0)) {
        assert.ok(charts.find((c) => c.id === 'chart-load').marks > 0, 'the load chart has data drawn');
      }
      // The name as text (escaped in the HTML, so shown as written, never run).
      if (report.json.scenario) assert.equal(await page.locator('#scenario').innerText(), report.json.scenario);
    }
    if (report.exitCode !== null) {
      assert.equal(report.exitCode === 0, verdict === 'PASSED', `drill.sh exited ${report.exitCode}, page says ${verdict}`);
    }

    // No sideways overflow, wide or narrow.
    for (const width of [1280, 700]) {
      await page.setViewportSize({ width, height: 900 });
      const o = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
      assert.ok(o.scroll <= o.inner + 1, `no horizontal overflow at ${width} px (scrollWidth ${o.scroll}, innerWidth ${o.inner})`);
    }
    await page.setViewportSize({ width: 1280, height: 900 });

    if (SCREENSHOT) {
      fs.mkdirSync(path.dirname(path.resolve(SCREENSHOT)), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
      console.log(`# screenshot: ${SCREENSHOT}`);
    }
    assert.deepEqual(view.externalNow(), [], 'nothing requested but file:// URLs');
    assert.deepEqual(view.problems, [], 'no console error or warning, no page error, no failed request');
  } finally {
    await view.close();
  }
});
