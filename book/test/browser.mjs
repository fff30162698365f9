// The built book, opened page by page in a real browser (headless Chromium), the way a
// learner sees it. Run by `cargo xtask book --browser` (and so by `cargo xtask test`):
//
//   node --experimental-websocket book/test/browser.mjs BOOK_DIR SCREENSHOT_DIR
//
// No npm package: Chromium is driven over its DevTools protocol with Node's own
// WebSocket and http modules. Every page must load without a console error or a failed
// request; every internal link and #anchor must resolve; every figure must be an SVG that
// renders; no terminal-output block may overflow its column at 1280 px; and the search box
// must find "conntrack"; the article's Chinese title must be drawn with a CJK font, not
// as empty boxes. Screenshots of the world's figure and of the hop table are written
// to SCREENSHOT_DIR for people to look at.

import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";

const [bookDir, shotDir] = process.argv.slice(2).map((p) => p && path.resolve(p));
if (!bookDir || !shotDir) {
  console.error("usage: browser.mjs BOOK_DIR SCREENSHOT_DIR");
  process.exit(2);
}
const problems = [];
const fail = (page, what) => problems.push(`${page}: ${what}`);

// ---------------------------------------------------------------- a static server
const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css",
  ".svg": "image/svg+xml", ".json": "application/json", ".png": "image/png", ".woff2": "font/woff2",
  ".woff": "font/woff", ".ttf": "font/ttf", ".txt": "text/plain; charset=utf-8", ".ico": "image/x-icon" };
const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  let file = path.join(bookDir, decodeURIComponent(url.pathname));
  if (existsSync(file) && statSync(file).isDirectory()) file = path.join(file, "index.html");
  if (!file.startsWith(path.resolve(bookDir)) || !existsSync(file)) {
    res.writeHead(404);
    res.end("not found");
    return;
  }
  res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream" });
  res.end(readFileSync(file));
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const origin = `http://127.0.0.1:${server.address().port}`;

// ---------------------------------------------------------------- Chromium over CDP
const profile = mkdtempSync(path.join(os.tmpdir(), "book-chromium-"));
const chromium = spawn(process.env.CHROMIUM ?? "chromium", [
  "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
  "--remote-debugging-port=0", `--user-data-dir=${profile}`, "--window-size=1280,900", "about:blank",
], { stdio: ["ignore", "ignore", "pipe"] });
const wsUrl = await new Promise((ok, ko) => {
  let err = "";
  const timer = setTimeout(() => ko(new Error(`chromium did not start:\n${err}`)), 30000);
  chromium.stderr.on("data", (d) => {
    err += d;
    const m = err.match(/DevTools listening on (ws:\/\/\S+)/);
    if (m) { clearTimeout(timer); ok(m[1]); }
  });
  chromium.on("exit", (code) => ko(new Error(`chromium exited (${code}):\n${err}`)));
});
const ws = new WebSocket(wsUrl);
await new Promise((ok, ko) => { ws.onopen = ok; ws.onerror = ko; });
let nextId = 1;
const pending = new Map();
const listeners = new Set();
ws.onmessage = (msg) => {
  const data = JSON.parse(msg.data);
  if (data.id && pending.has(data.id)) {
    const { ok, ko } = pending.get(data.id);
    pending.delete(data.id);
    data.error ? ko(new Error(JSON.stringify(data.error))) : ok(data.result);
  } else {
    for (const l of listeners) l(data);
  }
};
const send = (method, params = {}, sessionId) => new Promise((ok, ko) => {
  const id = nextId++;
  pending.set(id, { ok, ko });
  ws.send(JSON.stringify({ id, method, params, sessionId }));
});
const { targetId } = await send("Target.createTarget", { url: "about:blank" });
const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
const page = (method, params) => send(method, params, sessionId);
await page("Page.enable");
await page("Runtime.enable");
await page("Log.enable");
await page("Network.enable");
await page("Emulation.setDeviceMetricsOverride", { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false });

let current = "";
listeners.add((e) => {
  if (e.sessionId !== sessionId) return;
  if (e.method === "Runtime.exceptionThrown") fail(current, `uncaught: ${e.params.exceptionDetails.exception?.description ?? e.params.exceptionDetails.text}`);
  if (e.method === "Runtime.consoleAPICalled" && e.params.type === "error") fail(current, `console error: ${e.params.args.map((a) => a.value ?? a.description).join(" ")}`);
  if (e.method === "Log.entryAdded" && e.params.entry.level === "error") fail(current, `browser error: ${e.params.entry.text} ${e.params.entry.url ?? ""}`);
  if (e.method === "Network.loadingFailed" && !e.params.canceled) fail(current, `request failed: ${e.params.errorText}`);
});
const loaded = () => new Promise((ok) => {
  const l = (e) => { if (e.sessionId === sessionId && e.method === "Page.loadEventFired") { listeners.delete(l); ok(); } };
  listeners.add(l);
});
const evaluate = async (expression) => {
  const r = await page("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true });
  if (r.exceptionDetails) throw new Error(`${expression}: ${r.exceptionDetails.exception?.description}`);
  return r.result.value;
};
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
async function open(rel) {
  current = rel;
  const done = loaded();
  await page("Page.navigate", { url: `${origin}/${rel}` });
  await done;
  await evaluate("document.fonts.ready.then(() => true)");
}
async function screenshot(name, selector, containing = "") {
  const y = await evaluate(`(() => { const e = [...document.querySelectorAll(${JSON.stringify(selector)})].find((e) => e.textContent.includes(${JSON.stringify(containing)})); if (!e) return null; e.scrollIntoView({block: "start"}); window.scrollBy(0, -40); return true; })()`);
  if (y === null) { fail(current, `no ${selector} to screenshot`); return; }
  await sleep(200);
  const { data } = await page("Page.captureScreenshot", { format: "png" });
  writeFileSync(path.join(shotDir, name), Buffer.from(data, "base64"));
}

// ---------------------------------------------------------------- every page
const pages = readdirSync(bookDir).filter((f) => f.endsWith(".html") && !["404.html", "print.html", "toc.html"].includes(f)).sort();
const anchors = new Map(); // page → ids
const links = []; // [from, page, fragment]
mkdirSync(shotDir, { recursive: true });
for (const rel of pages) {
  await open(rel);
  if (process.env.DEBUG) console.log(rel, await evaluate("document.URL + ' ' + document.readyState + ' ' + document.title"));
  const found = await evaluate(`(() => {
    const main = document.querySelector("main");
    const ids = [...document.querySelectorAll("[id]")].map((e) => e.id);
    const hrefs = [...main.querySelectorAll("a[href]")].map((a) => a.getAttribute("href"))
      .concat([...document.querySelectorAll("nav#sidebar a[href], .sidebar a[href]")].map((a) => a.getAttribute("href")));
    const overflowing = [...main.querySelectorAll("pre > code.language-text, pre > code.language-console, pre > code.language-sh")]
      .filter((code) => [code, code.parentElement].some((e) => e.scrollWidth > e.clientWidth + 1
        || e.getBoundingClientRect().right > main.getBoundingClientRect().right + 1))
      .map((code) => code.textContent.split("\\n")[0].slice(0, 60));
    const figures = [...main.querySelectorAll("img")].map((img) => ({ src: img.getAttribute("src"), ok: img.complete && img.naturalWidth > 0,
      svg: img.currentSrc.endsWith(".svg"), wide: img.getBoundingClientRect().right > main.getBoundingClientRect().right + 1 }));
    return { ids, hrefs, overflowing, figures };
  })()`);
  anchors.set(rel, new Set(found.ids));
  for (const href of found.hrefs) {
    if (/^[a-z]+:/.test(href) || href.startsWith("//")) continue;
    const [target, fragment] = href.split("#");
    links.push([rel, target === "" ? rel : path.posix.normalize(target), fragment]);
  }
  for (const block of found.overflowing) fail(rel, `output block overflows its column at 1280 px: "${block}…"`);
  for (const fig of found.figures) {
    if (!fig.svg) fail(rel, `figure ${fig.src} is not an SVG`);
    if (!fig.ok) fail(rel, `figure ${fig.src} does not render`);
    if (fig.wide) fail(rel, `figure ${fig.src} is wider than the column`);
  }
  if (rel === "ch02-world.html") {
    if (found.figures.length === 0) fail(rel, "the world's figure is missing");
    await screenshot("world.png", "main img[src$='.svg']");
  }
  if (rel === "ch07-skb-path.html") {
    await screenshot("hop-table.png", "main pre", "DROPPED");
    await screenshot("journey.png", "main img[src$='journey.svg']");
  }
}
for (const [from, target, fragment] of links) {
  const file = target.replace(/^\.\//, "");
  if (!existsSync(path.join(bookDir, file))) { fail(from, `link to ${target}: no such page`); continue; }
  if (fragment && file.endsWith(".html")) {
    if (!anchors.has(file)) { await open(file); anchors.set(file, new Set(await evaluate(`[...document.querySelectorAll("[id]")].map((e) => e.id)`))); }
    if (!anchors.get(file).has(decodeURIComponent(fragment))) fail(from, `link to ${target}#${fragment}: no such anchor`);
  }
}

// ---------------------------------------------------------------- the article's CJK title
// The article's title is Chinese. Without a CJK font the browser draws each character as an
// empty box ("tofu") and no error is logged anywhere, so ask Chromium which font it really
// used: a probe with the title's characters, placed beside the title (same CSS), must be
// drawn by a font that has CJK glyphs (Debian: fonts-noto-cjk).
await open("index.html");
await page("DOM.enable");
await page("CSS.enable");
// The probe is new: wait until it is laid out and its fonts are loaded (two frames), or
// Chromium may answer that no font drew it yet.
const probed = await evaluate(`(async () => {
  const title = [...document.querySelectorAll("main *")].find((e) => e.children.length === 0 && e.textContent.includes("我的包去哪了"));
  if (!title) return false;
  const probe = document.createElement("span");
  probe.id = "cjk-probe";
  probe.textContent = "日志我的包去哪了";
  title.appendChild(probe);
  probe.getBoundingClientRect();
  await document.fonts.ready;
  await new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok)));
  return true;
})()`);
if (!probed) fail("index.html", "the article's title (我的包去哪了) is not on the first page");
else {
  const { root } = await page("DOM.getDocument", { depth: -1 });
  const { nodeId } = await page("DOM.querySelector", { nodeId: root.nodeId, selector: "#cjk-probe" });
  // Fonts are matched when the text is first drawn: ask again for a while if none drew it yet.
  let fonts = [];
  for (let tries = 0; tries < 50 && fonts.length === 0; tries++) {
    if (tries > 0) await sleep(100);
    ({ fonts } = await page("CSS.getPlatformFontsForNode", { nodeId }));
  }
  const cjk = fonts.filter((f) => f.glyphCount > 0 && /CJK|Han |WenQuanYi|Droid Sans Fallback|Source Han|\b(SC|TC|JP|KR)\b/i.test(f.familyName));
  const drawn = fonts.map((f) => `${f.familyName} (${f.glyphCount} glyphs)`).join(", ") || "no font";
  if (cjk.reduce((n, f) => n + f.glyphCount, 0) < 8) {
    fail("index.html", `the article's CJK title is not drawn with a CJK font (tofu): drawn with ${drawn}; install one (Debian: apt-get install fonts-noto-cjk)`);
  } else {
    console.log(`browser: the CJK title is drawn with ${drawn}`);
  }
}

// ---------------------------------------------------------------- search
await open("index.html");
const hits = await evaluate(`(async () => {
  document.getElementById("search-toggle")?.click();
  const bar = document.getElementById("searchbar");
  bar.value = "conntrack";
  bar.dispatchEvent(new KeyboardEvent("keyup", { key: "k" }));
  for (let i = 0; i < 50; i++) {
    const n = document.querySelectorAll("#searchresults li").length;
    if (n > 0) return n;
    await new Promise((ok) => setTimeout(ok, 100));
  }
  return 0;
})()`);
if (hits === 0) fail("index.html", 'the search box finds nothing for "conntrack"');

ws.close();
chromium.kill();
server.close();
await new Promise((ok) => chromium.on("exit", ok));
// Chromium's helper processes may still be writing its profile for a moment: retry, and
// never fail the test over a temporary directory.
try { rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 }); } catch { /* left in /tmp */ }
console.log(`browser: ${pages.length} pages, ${links.length} internal links, search "conntrack": ${hits} results; screenshots in ${shotDir}`);
if (problems.length) {
  for (const p of problems) console.log(`  FAIL  ${p}`);
  process.exit(1);
}
console.log("browser: every page loads cleanly, every link resolves, no output block overflows at 1280 px");
