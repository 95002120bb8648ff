// Real-browser tests of the inspector page: the real `meethook` binary (`meethook dev` with
// its inspector, `meethook trigger`), a tiny handler, and headless Debian Chromium driven by
// playwright-core. Loopback only; every process is killed at the end.
//
//   MEETHOOK_BIN   the binary (default: <repo>/target/debug/meethook)
//   CHROMIUM       the browser (default: /usr/bin/chromium)
//   SCREENSHOTS    where screenshots go (default: <repo>/target/inspector-screenshots)
//
// Run with scripts/test-browser, or `node --test` in this directory.

import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import http from "node:http";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomUUID, randomBytes, createHmac } from "node:crypto";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../../../..");
const BIN = process.env.MEETHOOK_BIN || path.join(repo, "target/debug/meethook");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = process.env.SCREENSHOTS || path.join(repo, "target/inspector-screenshots");
const EVENTS = 8; // events in v2-meeting-success and meeting-success
const T = 15_000; // bound on any one wait

let browser;
const procs = new Set(); // every child still running
const servers = new Set();
const tmps = [];

before(async () => {
  assert.ok(fs.existsSync(BIN), `no binary at ${BIN}: cargo build --bin meethook`);
  fs.mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
});

async function cleanup() {
  for (const p of procs) {
    if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
  }
  procs.clear();
  for (const s of servers) s.closeAllConnections?.(), s.close();
  servers.clear();
}
afterEach(cleanup);
after(async () => {
  await browser?.close();
  await cleanup();
  for (const d of tmps) fs.rmSync(d, { recursive: true, force: true });
});
// A test run that is interrupted still kills what it started.
process.on("exit", () => { for (const p of procs) try { p.kill("SIGKILL"); } catch {} });

/// A handler on 127.0.0.1:0 that answers 200 and records every request; `answer` (a string)
/// replaces its `{"ok":true}`.
async function handler(answer = '{"ok":true}') {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const bytes = Buffer.concat(chunks);
      requests.push({ method: req.method, url: req.url, rawHeaders: req.rawHeaders, bytes, body: bytes.toString() });
      res.writeHead(200, { "content-type": "application/json", "x-handler": "browser-test" });
      res.end(answer);
    });
  });
  servers.add(server);
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return { url: `http://127.0.0.1:${server.address().port}/webhook`, requests };
}

/// Spawns the binary; resolves once `ready(stdout, stderr)` returns a value (or rejects).
function start(args, ready, timeout = T) {
  const p = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
  procs.add(p);
  let out = "", err = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`meethook ${args[0]} not ready in ${timeout} ms\nstdout:\n${out}\nstderr:\n${err}`)), timeout);
    const check = () => {
      const v = ready(out, err);
      if (v) { clearTimeout(timer); resolve({ proc: p, ...v, logs: () => ({ out, err }) }); }
    };
    p.stdout.on("data", (d) => { out += d; check(); });
    p.stderr.on("data", (d) => { err += d; check(); });
    p.on("exit", (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`meethook ${args[0]} exited (${code ?? sig})\nstdout:\n${out}\nstderr:\n${err}`));
    });
  });
}

/// `meethook dev` forwarding to a fresh handler, its inspector on a port of its choosing
/// (`extra`: more flags, e.g. `--signing-secret`).
async function dev(...extra) {
  const answer = extra[0]?.answer;
  if (answer) extra = extra.slice(1);
  const h = await handler(answer);
  const data = fs.mkdtempSync(path.join(os.tmpdir(), "meethook-browser-"));
  tmps.push(data);
  const d = await start(
    ["dev", "--listen", "127.0.0.1:0", "--forward-to", h.url, "--data", data, "--inspect", "127.0.0.1:0", ...extra],
    (out, err) => {
      const webhook = /^Webhook URL: (\S+)/m.exec(out)?.[1];
      const inspector = /^Inspector: (http\S+)/m.exec(err)?.[1];
      return webhook && inspector ? { webhook, inspector } : null;
    },
  );
  d.proc.removeAllListeners("exit");
  return { ...d, handler: h };
}

/// `meethook trigger SCENARIO --to URL ARGS…`, to completion.
function trigger(scenario, to, ...args) {
  const p = spawn(BIN, ["trigger", scenario, "--to", to, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  procs.add(p);
  let out = "";
  p.stdout.on("data", (d) => (out += d));
  p.stderr.on("data", (d) => (out += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { p.kill("SIGKILL"); reject(new Error(`trigger timed out:\n${out}`)); }, T);
    p.on("exit", (code) => {
      clearTimeout(timer);
      procs.delete(p);
      code === 0 ? resolve(out) : reject(new Error(`trigger ${scenario} exited ${code}:\n${out}`));
    });
  });
}

/// A page that records console errors and uncaught exceptions; `done()` asserts there were none.
async function open(url, context = null) {
  context ??= await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.setDefaultTimeout(T);
  const page = await context.newPage();
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()} (${m.location().url})`); });
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("requestfailed", (r) => {
    // The event stream is cut when the page closes; anything else is a failure.
    if (!r.url().includes("/api/stream")) errors.push(`requestfailed: ${r.url()} ${r.failure()?.errorText}`);
  });
  await page.goto(url);
  // Errors a test provokes on purpose (e.g. a 400 for a filter it knows is wrong).
  const allowed = [];
  page.allow = (re) => allowed.push(re);
  page.done = async () => {
    await context.close();
    assert.deepEqual(errors.filter((e) => !allowed.some((re) => re.test(e))), [], "no console errors");
  };
  return page;
}

/// The rows of the list as {seq, bot, event, state}.
const listed = (page) => page.$$eval("#rows tr", (trs) => trs.map((tr) => ({
  seq: Number(tr.dataset.seq),
  event: tr.children[2].textContent,
  bot: tr.children[3].title,
  state: tr.children[5].textContent,
})));

/// Waits until n rows are listed (with `where`, n rows whose column `col` reads `is`).
async function waitRows(page, n, where = null) {
  await page.waitForFunction(
    ([n, w]) => [...document.querySelectorAll("#rows tr")].filter((tr) => !w || (w.col === 3 ? tr.children[3].title : tr.children[w.col].textContent) === w.is).length === n,
    [n, where], { timeout: T, polling: 50 },
  ).catch(async (e) => { throw new Error(`${e.message}\nrows: ${JSON.stringify(await listed(page))}`); });
}

const live = (page) => page.waitForFunction(() => document.querySelector("#conn").textContent.includes("live"), null, { timeout: T });
const signingSecret = () => "whsec_" + randomBytes(24).toString("base64");
/// Whether a request's svix-signature is a `v1,` HMAC-SHA256 of `id.timestamp.body` under the
/// key the `whsec_` secret encodes.
const svixVerifies = (secret, r) => {
  const [id, ts, sig] = ["svix-id", "svix-timestamp", "svix-signature"].map((n) => header(r.rawHeaders, n));
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const mac = createHmac("sha256", key).update(`${id}.${ts}.`).update(r.bytes).digest("base64");
  return (sig || "").split(" ").includes(`v1,${mac}`);
};
const header = (raw, name) => { for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() === name) return raw[i + 1]; };

test("the list shows every event of the scenario live, without a reload", async () => {
  const d = await dev();
  const page = await open(d.inspector + "/");
  await live(page);
  // The stream's hello can come before the first read of the list has been answered.
  await page.locator("#empty").waitFor({ state: "visible" }); // an empty journal says so
  await page.evaluate(() => { window.__sameDocument = true; });
  const bot = randomUUID();
  await trigger("v2-meeting-success", d.webhook, "--bot-id", bot, "--signing-secret", signingSecret());
  await waitRows(page, EVENTS);
  // Every event gets delivered, and the rows follow their state as it changes.
  await waitRows(page, EVENTS, { col: 5, is: "delivered" });
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "the page was not reloaded");
  const rows = await listed(page);
  assert.deepEqual(rows.map((r) => r.seq), [...rows.map((r) => r.seq)].sort((a, b) => b - a), "newest first");
  assert.ok(rows.every((r) => r.bot === bot), "every row shows the bot");
  assert.equal(rows.at(-1).event, "bot.status_change");
  assert.equal(await page.locator("#empty").isVisible(), false);
  assert.equal(d.handler.requests.length, EVENTS, "the handler got every event");
  await page.screenshot({ path: path.join(SHOTS, "list.png") });
  await page.done();
});

test("events that arrive while the list is being read are not lost", async () => {
  const d = await dev();
  // Hold the list's answers (read before any event exists) until the scenario has been sent:
  // the stream tells the page about every event before the stale answers arrive.
  let release, fetched = 0;
  const gate = new Promise((ok) => (release = ok));
  const context = await browser.newContext();
  await context.route((u) => u.pathname === "/api/events", async (route) => {
    const response = await route.fetch();
    fetched++;
    await gate;
    await route.fulfill({ response });
  });
  const page = await open(d.inspector + "/", context);
  const deadline = Date.now() + T;
  while (fetched < 2 && Date.now() < deadline) await new Promise((ok) => setTimeout(ok, 20)); // the first load and the stream's
  assert.equal(fetched, 2, "both loads read the journal");
  await live(page);
  const bot = randomUUID();
  await trigger("v2-meeting-success", d.webhook, "--bot-id", bot);
  await waitRows(page, EVENTS, { col: 5, is: "delivered" });
  release();
  await new Promise((ok) => setTimeout(ok, 300));
  await waitRows(page, EVENTS, { col: 5, is: "delivered" });
  assert.equal((await listed(page)).length, EVENTS);
  await page.done();
});

test("a row opens the detail: headers in order, the body pretty-printed", async () => {
  const d = await dev();
  const bot = randomUUID();
  await trigger("v2-meeting-success", d.webhook, "--bot-id", bot, "--signing-secret", signingSecret());
  const page = await open(d.inspector + "/");
  await waitRows(page, EVENTS);
  const rows = await listed(page);
  const seq = rows.at(-1).seq; // the oldest: bot.status_change joining_call
  await page.locator(`#rows tr[data-seq="${seq}"]`).click();
  await page.locator("#detail.open h2").filter({ hasText: `#${seq}` }).waitFor();
  assert.ok(new URL(page.url()).hash === `#${seq}`, "the address names the event");
  assert.equal(await page.locator(`#rows tr[data-seq="${seq}"]`).getAttribute("class"), "sel");

  const api = await (await page.request.get(`${d.inspector}/api/events/${seq}`)).json();
  const shown = await page.$$eval("#detail table.headers tr", (trs) => trs.map((tr) => [tr.children[0].textContent, tr.children[1].textContent]));
  assert.deepEqual(shown, api.headers, "the headers as received, in order");
  const names = shown.map(([k]) => k.toLowerCase());
  for (const [a, b] of [["svix-id", "svix-timestamp"], ["svix-timestamp", "svix-signature"]]) {
    assert.ok(names.indexOf(a) >= 0 && names.indexOf(a) < names.indexOf(b), `${a} before ${b}: ${names}`);
  }
  // The relay forwarded them in the same order.
  const forwarded = d.handler.requests.find((r) => JSON.parse(r.body).data?.status?.code === "joining_call");
  const fwdNames = [];
  for (let i = 0; i < forwarded.rawHeaders.length; i += 2) fwdNames.push(forwarded.rawHeaders[i].toLowerCase());
  const common = names.filter((n) => fwdNames.includes(n) && n !== "host" && n !== "content-length");
  assert.deepEqual(fwdNames.filter((n) => common.includes(n)), common, "the handler got them in the same order");

  // And in the order `meethook trigger` sends them, as a handler of its own sees them.
  const direct = await handler();
  await trigger("v2-meeting-success", direct.url, "--bot-id", bot, "--signing-secret", signingSecret());
  const sent = direct.requests.find((r) => JSON.parse(r.body).data?.status?.code === "joining_call").rawHeaders;
  assert.deepEqual(sent.filter((_, i) => i % 2 === 0).map((k) => k.toLowerCase()), names, "the order trigger sent");

  const body = await page.locator("#detail pre#body").textContent();
  assert.equal(body, JSON.stringify(JSON.parse(api.body), null, 2), "pretty JSON");
  assert.match(body, /^\{\n  "event": "bot.status_change",\n  "data": \{\n    "bot_id": /);
  assert.equal(JSON.parse(body).data.bot_id, bot);
  assert.match(await page.locator("#detail").textContent(), /Attempts \(1\)#/, "the attempts table follows its title");
  await page.done();

  // #SEQ in the address opens that event directly.
  const deep = await open(`${d.inspector}/#${rows[0].seq}`);
  await deep.locator("#detail.open h2").filter({ hasText: `#${rows[0].seq}` }).waitFor();
  await deep.done();
});

test("secret headers are masked until Reveal is clicked (v2 svix-signature)", async () => {
  const d = await dev();
  await trigger("v2-meeting-success", d.webhook, "--signing-secret", signingSecret());
  const page = await open(d.inspector + "/");
  await waitRows(page, EVENTS);
  const seq = (await listed(page)).at(-1).seq;
  await page.locator(`#rows tr[data-seq="${seq}"]`).click();
  const sig = page.locator("#detail table.headers tr").filter({ has: page.locator("td:first-child", { hasText: /^svix-signature$/i }) }).locator("td").nth(1);
  await sig.waitFor();
  assert.equal(await sig.textContent(), "••••", "masked");
  assert.ok(!(await page.locator("#detail").textContent()).includes("v1,"), "the signature is nowhere on the page");
  await page.getByRole("button", { name: "Reveal secrets" }).click();
  await page.getByRole("button", { name: "Mask secrets" }).waitFor();
  const forwarded = d.handler.requests.find((r) => JSON.parse(r.body).data?.status?.code === "joining_call");
  const real = header(forwarded.rawHeaders, "svix-signature");
  assert.match(real, /^v1,/);
  assert.equal(await sig.textContent(), real, "revealed: the signature as received");
  await page.getByRole("button", { name: "Mask secrets" }).click();
  await page.getByRole("button", { name: "Reveal secrets" }).waitFor();
  assert.equal(await sig.textContent(), "••••", "masked again");
  // Another event is masked again, whatever the previous one showed.
  await page.getByRole("button", { name: "Reveal secrets" }).click();
  await page.getByRole("button", { name: "Mask secrets" }).waitFor();
  const other = (await listed(page))[0].seq;
  await page.locator(`#rows tr[data-seq="${other}"]`).click();
  await page.locator("#detail h2").filter({ hasText: `#${other}` }).waitFor();
  assert.equal(await sig.textContent(), "••••", "a newly opened event is masked");
  await page.done();
});

test("secret headers are masked until Reveal is clicked (v1 x-meeting-baas-api-key)", async () => {
  const d = await dev();
  await trigger("meeting-success", d.webhook, "--api-key", "mb_test");
  const page = await open(d.inspector + "/");
  await waitRows(page, EVENTS);
  await page.locator("#rows tr").first().click();
  const key = page.locator("#detail table.headers tr").filter({ has: page.locator("td:first-child", { hasText: /^x-meeting-baas-api-key$/i }) }).locator("td").nth(1);
  await key.waitFor();
  assert.equal(await key.textContent(), "••••");
  assert.ok(!(await page.locator("#detail").textContent()).includes("mb_test"));
  await page.getByRole("button", { name: "Reveal secrets" }).click();
  await page.getByRole("button", { name: "Mask secrets" }).waitFor();
  assert.equal(await key.textContent(), "mb_test");
  await page.done();
});

test("filtering by bot, from the address and from the inputs, narrows the list (live too)", async () => {
  const d = await dev();
  const [a, b, c] = [randomUUID(), randomUUID(), randomUUID()];
  await trigger("v2-meeting-success", d.webhook, "--bot-id", a);
  await trigger("meeting-success", d.webhook, "--bot-id", b);

  // From the address: a bookmarkable prefix of the bot id.
  const page = await open(`${d.inspector}/?bot=${a.slice(0, 8)}`);
  await live(page);
  await waitRows(page, EVENTS);
  assert.ok((await listed(page)).every((r) => r.bot === a));
  assert.equal(await page.locator("input[name=bot]").inputValue(), a.slice(0, 8), "the input shows the filter");

  // A new event of another bot does not show up under the filter; one of this bot does.
  await trigger("v2-meeting-success", d.webhook, "--bot-id", c);
  await trigger("meeting-success", d.webhook, "--bot-id", a);
  await waitRows(page, 2 * EVENTS);
  assert.ok((await listed(page)).every((r) => r.bot === a), "only bot a, live");

  // From the inputs: the list and the address follow.
  await page.locator("input[name=bot]").fill(b);
  await page.getByRole("button", { name: "Filter" }).click();
  await waitRows(page, EVENTS, { col: 3, is: b });
  await waitRows(page, EVENTS);
  assert.equal(new URL(page.url()).searchParams.get("bot"), b);

  // With the event type too.
  await page.locator("input[name=event]").fill("bot.status_change");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.waitForFunction(() => new URL(location.href).searchParams.get("event") === "bot.status_change");
  await page.waitForFunction(() => [...document.querySelectorAll("#rows tr")].every((tr) => tr.children[2].textContent === "bot.status_change"));
  const sc = await listed(page);
  assert.ok(sc.length > 0 && sc.length < EVENTS && sc.every((r) => r.bot === b), JSON.stringify(sc));

  // Cleared: everything.
  await page.locator("input[name=bot]").fill("");
  await page.locator("input[name=event]").fill("");
  await page.getByRole("button", { name: "Filter" }).click();
  await waitRows(page, 4 * EVENTS);
  assert.equal(new URL(page.url()).search, "");
  await page.done();
});

test("the meeting view: the bot's statuses in order, the chat, the recording and its expiry", async () => {
  const d = await dev();
  const bot = randomUUID();
  await trigger("v2-meeting-success", d.webhook, "--bot-id", bot, "--signing-secret", signingSecret());
  const page = await open(d.inspector + "/");
  await waitRows(page, EVENTS, { col: 5, is: "delivered" });
  const codes = ["joining_call", "in_waiting_room", "in_call_not_recording", "in_call_recording", "call_ended", "transcribing", "bot.completed"];
  const api = await (await page.request.get(`${d.inspector}/api/bots/${bot}`)).json();
  assert.deepEqual(api.statuses.map((s) => s.code), codes, "the scenario's statuses");
  const completed = JSON.parse(d.handler.requests.find((r) => JSON.parse(r.body).event === "bot.completed").body).data;

  const check = async (page) => {
    await page.locator("#detail.open h2#meeting").filter({ hasText: bot }).waitFor();
    assert.match(await page.locator("#meeting .state").textContent(), /^completed$/);
    // The bar: one segment per status, in order.
    assert.deepEqual(await page.$$eval("#timeline .seg", (ss) => ss.map((s) => s.firstChild.textContent)), codes);
    // The table: the same, with their seqs, oldest first.
    const table = await page.$$eval("#bot-statuses tr", (trs) => trs.slice(1).map((tr) => [Number(tr.children[0].textContent), tr.children[2].textContent, tr.children[3].textContent]));
    assert.deepEqual(table, api.statuses.map((s) => [s.seq, s.code, s.state]));
    assert.deepEqual(table.map((r) => r[1]), codes);
    assert.deepEqual(table.at(-1).slice(1), ["bot.completed", "completed"]);
    assert.equal(await page.locator("#bot-statuses .badge").count(), 0, "no redelivery");
    // The chat message.
    const chat = await page.locator("#bot-chat > div").allTextContents();
    assert.equal(chat.length, 1);
    assert.match(chat[0], / Maya Chen: Bot, please share the notes after the call\.$/);
    // The recordings, with their expiry (4 h after the pre-signed URL's date: not expired).
    const arts = await page.$$eval("#bot-artifacts > div", (ds) => ds.map((d) => ({ kind: d.querySelector("a").textContent, href: d.querySelector("a").href, badge: d.querySelector(".badge")?.textContent, expired: d.querySelector(".badge")?.classList.contains("expired") })));
    const links = ["video", "audio", "diarization", "raw_transcription", "transcription"];
    assert.deepEqual(arts.map((a) => [a.kind, a.href]), links.map((k) => [k, completed[k]]));
    const exp = api.artifacts[0].expires_at;
    assert.ok(Math.abs(exp - (Date.now() + 4 * 3600_000)) < 10 * 60_000, `expires in about 4 h: ${new Date(exp).toISOString()}`);
    const shown = await page.evaluate((ms) => "link expires " + new Date(ms).toLocaleString(), exp);
    assert.ok(arts.every((a) => a.badge === shown && !a.expired), JSON.stringify(arts));
  };

  // The bot link in the list opens it, and the address names it.
  await page.locator("#rows tr a.bot-link").first().click();
  await check(page);
  assert.equal(decodeURIComponent(new URL(page.url()).hash), `#bot=${bot}`);
  await page.screenshot({ path: path.join(SHOTS, "meeting.png") });
  await page.done();

  // /#bot=ID opens it directly.
  const deep = await open(`${d.inspector}/#bot=${bot}`);
  await check(deep);
  await deep.done();
});

test("Edit & replay re-signed: the handler gets the edited body, signed with --signing-secret", async () => {
  const secret = "whsec_" + randomBytes(32).toString("base64");
  const d = await dev("--signing-secret", secret);
  await trigger("v2-meeting-success", d.webhook, "--bot-id", randomUUID(), "--signing-secret", secret);
  const page = await open(d.inspector + "/");
  await waitRows(page, EVENTS, { col: 5, is: "delivered" });
  const seq = (await listed(page)).at(-1).seq; // bot.status_change joining_call
  await page.locator(`#rows tr[data-seq="${seq}"]`).click();
  await page.locator("#detail.open h2").filter({ hasText: `#${seq}` }).waitFor();
  const api = await (await page.request.get(`${d.inspector}/api/events/${seq}`)).json();
  const original = d.handler.requests.find((r) => r.body === api.body);
  assert.ok(svixVerifies(secret, original), "the delivered event verifies with the secret");

  // Edited and re-signed.
  const edited = api.body.replace('"joining_call"', '"edited in the browser ✓"');
  assert.notEqual(edited, api.body);
  await page.locator("#edit-replay").click();
  await page.locator("#edit-body").fill(edited);
  await page.locator("#edit-warning").filter({ hasText: "the edited body no longer matches its signature" }).waitFor();
  await page.locator("#edit-resign").check();
  assert.equal(await page.locator("#edit-warning").textContent(), "", "re-signed: no warning");
  const before = d.handler.requests.length;
  await page.locator("#edit-send").click();
  await page.locator("#replay-msg").filter({ hasText: /^replayed: 200 → http:\/\/127\.0\.0\.1:\d+\/webhook \(re-signed\)$/ }).waitFor();
  assert.equal(await page.locator("#replay-warning").count(), 0);
  assert.equal(d.handler.requests.length, before + 1);
  const resigned = d.handler.requests.at(-1);
  assert.equal(resigned.body, edited, "the edited body");
  assert.equal(header(resigned.rawHeaders, "meethook-replay"), "true");
  assert.ok(svixVerifies(secret, resigned), `the new signature verifies: ${header(resigned.rawHeaders, "svix-signature")}`);
  assert.ok(Math.abs(Number(header(resigned.rawHeaders, "svix-timestamp")) - Date.now() / 1000) < 300, "a fresh timestamp");
  await page.locator("#detail h3").filter({ hasText: "Attempts (2)" }).waitFor();

  // Edited, not re-signed: the page warns, and the handler gets the old signature.
  const edited2 = api.body.replace('"joining_call"', '"edited again"');
  await page.locator("#edit-replay").click();
  await page.locator("#edit-body").fill(edited2);
  await page.locator("#edit-warning").filter({ hasText: "the edited body no longer matches its signature" }).waitFor();
  await page.locator("#edit-send").click();
  await page.locator("#replay-warning").filter({ hasText: "the edited body no longer matches its signature; replay with resign" }).waitFor();
  assert.match(await page.locator("#replay-msg").textContent(), /^replayed: 200 → \S+$/);
  assert.equal(d.handler.requests.length, before + 2);
  const unsigned = d.handler.requests.at(-1);
  assert.equal(unsigned.body, edited2);
  assert.equal(header(unsigned.rawHeaders, "meethook-replay"), "true");
  assert.equal(header(unsigned.rawHeaders, "svix-signature"), header(original.rawHeaders, "svix-signature"), "the stored signature");
  assert.ok(!svixVerifies(secret, unsigned), "which no longer verifies");
  await page.done();
});

test("Copy as curl: the command sends the body byte for byte", async () => {
  const d = await dev();
  // A body with what a shell could mangle: quotes, %, backslashes, $, backticks, non-ASCII.
  const note = "it's 100% \"quoted\" \\n $HOME `id` ü ✓ '' \\'";
  await trigger("v2-meeting-success", d.webhook, "--bot-id", randomUUID(), "--override", `extra.note=${note}`);
  const page = await open(d.inspector + "/");
  await waitRows(page, EVENTS, { col: 5, is: "delivered" });
  const seq = (await listed(page)).at(-1).seq;
  await page.locator(`#rows tr[data-seq="${seq}"]`).click();
  await page.locator("#detail.open h2").filter({ hasText: `#${seq}` }).waitFor();
  const api = await (await page.request.get(`${d.inspector}/api/events/${seq}`)).json();
  const stored = Buffer.from(api.body_base64, "base64");
  assert.equal(JSON.parse(stored.toString()).extra.note, note, "the override is in the body");

  await page.locator("#copy-curl").click();
  const cmd = await page.locator("#curl").textContent();
  assert.match(cmd, /^printf '%s' '/);
  assert.ok(cmd.includes(`curl -sS -X POST '${d.handler.url}'`), cmd);
  const before = d.handler.requests.length;
  await new Promise((ok, fail) => execFile("bash", ["-c", cmd], { timeout: T }, (e, out, err) => e ? fail(new Error(`${e.message}\n${err}\n${cmd}`)) : ok(out)));
  assert.equal(d.handler.requests.length, before + 1);
  const got = d.handler.requests.at(-1);
  assert.equal(got.method, "POST");
  assert.equal(got.url, new URL(d.handler.url).pathname);
  assert.ok(got.bytes.equals(stored), `byte for byte:\n${got.bytes}\n${stored}`);
  assert.equal(header(got.rawHeaders, "content-type"), header(api.headers.flat(), "content-type"));
  await page.done();
});

test("filtering by JSON path, from the address and the inputs, with a bot, live, and exported", async () => {
  const d = await dev();
  const [a, b] = [randomUUID(), randomUUID()];
  await trigger("v2-meeting-success", d.webhook, "--bot-id", a);
  await trigger("v2-meeting-success", d.webhook, "--bot-id", b);
  const cond = "data.status.code = in_call_recording";
  const page = await open(`${d.inspector}/?where=${encodeURIComponent(cond)}`);
  await live(page);
  await waitRows(page, 2);
  assert.deepEqual((await listed(page)).map((r) => r.bot).sort(), [a, b].sort());
  assert.ok((await page.$$eval("#rows td.summary", (tds) => tds.map((t) => t.textContent))).every((t) => t.includes("in_call_recording")));
  assert.equal(await page.locator("input[name=where]").inputValue(), cond, "the input shows the filter");

  // From the inputs, with the bot: the list, the address and the export link follow.
  await page.locator("input[name=where]").fill("data.status.code ~ CALL");
  await page.locator("input[name=bot]").fill(a.slice(0, 8));
  await page.getByRole("button", { name: "Filter" }).click();
  // joining_call, in_call_not_recording, in_call_recording, call_ended
  await waitRows(page, 4, { col: 3, is: a });
  await waitRows(page, 4);
  const u = new URL(page.url());
  assert.equal(u.searchParams.get("where"), "data.status.code ~ CALL");
  assert.equal(u.searchParams.get("bot"), a.slice(0, 8));
  const href = await page.locator("#export").getAttribute("href");
  const exported = await (await page.request.get(d.inspector + href)).text();
  const lines = exported.trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.seq), (await listed(page)).map((r) => r.seq).reverse(), "the export is the list, oldest first");
  assert.ok(lines.every((l) => l.bot_id === a));

  // Live: a new meeting of bot a adds its 4 matches, none of another bot's.
  await trigger("v2-meeting-success", d.webhook, "--bot-id", randomUUID());
  await trigger("v2-meeting-success", d.webhook, "--bot-id", a);
  await waitRows(page, 8);
  assert.ok((await listed(page)).every((r) => r.bot === a));

  // A condition that cannot be read says why, in red; the next good filter clears it.
  page.allow(/status of 400 \(Bad Request\) \(http:\S+where=data\.status\.code\+%3E%3E\+3\)$/);
  await page.locator("input[name=where]").fill("data.status.code >> 3");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.locator("#empty.error").filter({ hasText: "expected PATH = VALUE" }).waitFor();
  await page.locator("input[name=where]").fill("data.status.code = nothing_like_it");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.locator("#empty").filter({ hasText: /^No events match these filters\.$/ }).waitFor();
  assert.equal(await page.locator("#empty.error").count(), 0);
  await page.done();
});

test("the detail: the handler's answer, cut at 64 KiB; pin; no sideways scroll; the latest click wins", async () => {
  const big = JSON.stringify({ ok: true, pad: "x".repeat(70_000) });
  const d = await dev({ answer: big });
  await trigger("v2-meeting-success", d.webhook, "--bot-id", randomUUID());
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // The first detail read is held back: its answer comes after the second one's.
  let first = true;
  await context.route((u) => /^\/api\/events\/\d+$/.test(u.pathname), async (route) => {
    const response = await route.fetch();
    if (first) { first = false; await new Promise((ok) => setTimeout(ok, 800)); }
    await route.fulfill({ response });
  });
  const page = await open(d.inspector + "/", context);
  await waitRows(page, EVENTS, { col: 5, is: "delivered" });
  const rows = await listed(page);
  const [older, newer] = [rows.at(-1).seq, rows[0].seq];
  await page.locator(`#rows tr[data-seq="${older}"]`).click();
  await page.locator(`#rows tr[data-seq="${newer}"]`).click();
  await page.locator("#detail.open h2").filter({ hasText: `#${newer}` }).waitFor();
  await new Promise((ok) => setTimeout(ok, 1200)); // the held answer has come by now
  assert.match(await page.locator("#detail h2").textContent(), new RegExp(`^#${newer} `), "the stale answer was dropped");


  // The attempt's answer: its headers, its body up to 64 KiB, and the cut marker.
  const att = page.locator("#answers details.response").first();
  await att.locator("summary").click();
  assert.match(await att.locator("summary").textContent(), /^#1 answered 200: 65536 bytes cut at 64 KiB$/);
  assert.ok(await att.locator(".cut").isVisible(), "the cut is visible");
  assert.match(await att.locator(".response-headers").textContent(), /^x-handler: browser-test$/m);
  const shown = await att.locator(".response-body").textContent();
  assert.ok(shown.startsWith('{"ok":true,"pad":"xxx') && shown.length === 65536, `${shown.length} characters`);
  const api = await (await page.request.get(`${d.inspector}/api/events/${newer}`)).json();
  assert.equal(api.attempts[0].truncated, true);
  // The list keeps to its pane beside the detail, and so does the detail (a column cut off
  // is tens of pixels; a few are sub-pixel rounding of the percentage widths).
  for (const pane of ["#list", "#detail"]) {
    const sideways = await page.$eval(pane, (l) => l.scrollWidth - l.clientWidth);
    assert.ok(sideways <= 3, `${pane} scrolls sideways by ${sideways} px`);
  }
  await page.screenshot({ path: path.join(SHOTS, "detail.png") });

  // Pin: kept past the retention, as `meethook events pin` does.
  await page.locator("#pin").click();
  await page.locator("#detail h2 #pinned").waitFor();
  assert.equal((await (await page.request.get(`${d.inspector}/api/events/${newer}`)).json()).pinned, true);
  await page.getByRole("button", { name: "Unpin" }).click();
  await page.getByRole("button", { name: "Pin", exact: true }).waitFor();
  assert.equal(await page.locator("#detail h2 #pinned").count(), 0);
  await page.done();
});
