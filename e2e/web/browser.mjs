// Drives headless Chromium through nixbus's web pages, against the nixbus
// that e2e/web_browser_test.go started (it passes everything in the
// environment and checks the bus afterwards). Each step fails loudly.
import { chromium } from "playwright-core";
import { writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const base = env("BASE_URL");
const run = env("RUN");
const shots = env("SHOTS");
mkdirSync(shots, { recursive: true });
const timeout = 120_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const step = (s) => console.log(`step: ${s}`);
const shot = async (page, name) => page.screenshot({ path: join(shots, name + ".png"), fullPage: true });

try {
  // A phone-sized window: the pages must work there too.
  const anon = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const page = await anon.newPage();
  page.setDefaultTimeout(timeout);

  step("the runs page lists the running run");
  await page.goto(base + "/");
  await page.locator(`#runs a[href="/runs/${run}"]`).waitFor();
  const row = page.locator("#runs tr", { has: page.locator(`a[href="/runs/${run}"]`) });
  if (!(await row.textContent()).includes("running")) throw new Error("the run is not shown running");
  await shot(page, "runs");

  step("the run page shows the held build building");
  await page.goto(`${base}/runs/${run}`);
  const held = page.locator("#jobs tr", { has: page.getByRole("link", { name: "held", exact: true }) });
  await held.locator(".st-building").waitFor();
  await shot(page, "run-building");

  step("the job page tails the log live");
  await held.getByRole("link", { name: "held", exact: true }).click();
  await page.locator("#log").filter({ hasText: "live line one" }).waitFor();
  if ((await page.locator("#log").textContent()).includes("live line two")) throw new Error("line two before the release");
  await shot(page, "job-live");
  writeFileSync(env("RELEASE"), "go\n");
  // The second line arrives live; then the page reloads with the stored log.
  await page.locator("#log").filter({ hasText: "live line two" }).waitFor();
  await page.locator("#job-status.st-succeeded").waitFor();
  await shot(page, "job-finished");

  step("the run ends failed (flaky failed)");
  await page.goto(`${base}/runs/${run}`);
  for (let i = 0; !(await page.locator("h1 .st-failed").count()); i++) {
    if (i > 600) throw new Error("the run never ended");
    await page.waitForTimeout(200);
    await page.reload();
  }
  await shot(page, "run-failed-anonymous");
  if (await page.locator("form[action$='/restart'] button").count()) throw new Error("buttons shown to an anonymous reader");

  const loginAs = async (ctx, name) => {
    const p = await ctx.newPage();
    p.setDefaultTimeout(timeout);
    p.on("dialog", (d) => d.accept());
    await p.goto(`${base}/runs/${run}`);
    await p.locator("#login").click();
    await p.locator("input#login").fill(name);
    await p.locator("#submit").click();
    await p.waitForURL(`${base}/runs/${run}`);
    await p.getByText(name, { exact: false }).first().waitFor();
    return p;
  };

  step("a non-admin logs in and cannot restart");
  const bobCtx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const bob = await loginAs(bobCtx, "bob");
  if (await bob.locator("button.restart-job, #restart-run, #cancel-run").count()) throw new Error("bob sees admin buttons");
  const flakyLink = bob.getByRole("link", { name: "flaky", exact: true });
  const flakyHref = await flakyLink.getAttribute("href");
  // A forged press with bob's own session and token is refused too.
  const status = await bob.evaluate(async (url) => {
    const csrf = document.querySelector("input[name=csrf]").value;
    const r = await fetch(url, { method: "POST", body: new URLSearchParams({ csrf }), redirect: "manual" });
    return r.status;
  }, flakyHref + "/restart");
  if (status !== 403) throw new Error(`bob's restart answered ${status}, want 403`);
  await shot(bob, "run-non-admin");
  await bobCtx.close();

  step("an admin logs in and restarts the failed job");
  const aliceCtx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const alice = await loginAs(aliceCtx, "alice");
  await alice.locator("#restart-run").waitFor();
  await shot(alice, "run-admin");
  writeFileSync(env("FIX"), "fixed\n"); // the flaky job passes from now on
  await alice.getByRole("button", { name: "Restart flaky" }).click();
  await alice.waitForURL(`${base}${flakyHref}`);
  await alice.locator("#job-status.st-succeeded").waitFor();
  await alice.locator("#log").filter({ hasText: "flaky is fixed" }).waitFor();
  await shot(alice, "job-restarted");
  await alice.goto(`${base}/runs/${run}`);
  const flakyRow = alice.locator("#jobs tr", { has: alice.getByRole("link", { name: "flaky", exact: true }) });
  if (!(await flakyRow.textContent()).includes("rebuilt")) throw new Error("the run page does not show the rebuild");
  await shot(alice, "run-after-restart");
  await aliceCtx.close();
  await anon.close();
  console.log("browser test passed");
} finally {
  await browser.close();
}
