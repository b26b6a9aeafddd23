// Opens the playground of a running server in headless Chromium with every
// request to another host blocked, types a query, runs it, and checks that
// data shows in the result pane and that nothing tried to leave localhost.
//
//   node playground.mjs http://127.0.0.1:PORT [screenshot.png]
//
// Exits 0 on success; prints what went wrong and exits 1 otherwise.
// Run by tests/api/playground.rs, which starts the server with demo data and
// offline assets.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.argv[2];
const screenshot = process.argv[3];
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const LOCAL_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]"]);
const QUERY = "{ profiles(first: 2) { totalCount nodes { name } } }";

const profile = mkdtempSync(join(tmpdir(), "catalynx-chromium-"));
const offHost = [];
let context;
let failed = false;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const local = [];
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (LOCAL_HOSTS.has(url.hostname)) {
      local.push(url.pathname);
      return route.continue();
    }
    offHost.push(url.href);
    return route.abort("blockedbyclient");
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));

  await page.goto(`${base}/`, { waitUntil: "load" });
  const editor = page.locator(".graphiql-query-editor .CodeMirror").first();
  await editor.waitFor({ state: "visible", timeout: 30_000 });

  // Replace the default query by typing a new one.
  await editor.click();
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Delete");
  await page.keyboard.type(QUERY);
  const typed = await page.evaluate(
    () => document.querySelector(".graphiql-query-editor .CodeMirror").CodeMirror.getValue(),
  );
  if (typed.replace(/\s+/g, "") !== QUERY.replace(/\s+/g, "")) {
    throw new Error(`the editor holds ${JSON.stringify(typed)} after typing`);
  }

  await page.locator(".graphiql-execute-button").click();
  const result = page.locator(".graphiql-response .CodeMirror").first();
  await page.waitForFunction(
    () => {
      const cm = document.querySelector(".graphiql-response .CodeMirror");
      return cm && cm.CodeMirror.getValue().includes("totalCount");
    },
    null,
    { timeout: 30_000 },
  );
  const text = await result.evaluate((el) => el.CodeMirror.getValue());
  const shown = JSON.parse(text);
  const nodes = shown?.data?.profiles?.nodes ?? [];
  if (!(shown.data.profiles.totalCount > 0) || nodes.length !== 2 || !nodes[0].name) {
    throw new Error(`unexpected result: ${text}`);
  }
  if (screenshot) await page.screenshot({ path: screenshot });

  const assets = local.filter((p) => p.startsWith("/playground-assets/"));
  if (offHost.length > 0) {
    throw new Error(`requests to other hosts were attempted: ${offHost.join(", ")}`);
  }
  if (assets.length < 4) {
    throw new Error(`expected the page to load its assets from the server, saw: ${local.join(", ")}`);
  }
  if (pageErrors.length > 0) {
    throw new Error(`errors in the page: ${pageErrors.join("; ")}`);
  }
  console.log(
    `ok: playground rendered, ran the typed query (${nodes.length} profiles of ` +
      `${shown.data.profiles.totalCount}), ${local.length} local requests, none elsewhere`,
  );
} catch (e) {
  failed = true;
  console.error(`playground browser test failed: ${e?.stack ?? e}`);
  if (offHost.length > 0) {
    console.error(`blocked requests to other hosts: ${offHost.join(", ")}`);
  }
} finally {
  await context?.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
