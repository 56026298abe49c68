// Signs in to /dashboard, checks the session cookie's flags, sees the charts, takes a
// screenshot, sees and deletes a user's memories, creates a key with the form and revokes
// another. Prints one JSON line with what
// the Rust test checks next. Env: BASE, TOKEN, CHROMIUM, SHOT, REVOKE (a key id).
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const { BASE, TOKEN, CHROMIUM, SHOT, REVOKE } = process.env;
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 960 } });
  const page = await context.newPage();

  await page.goto(`${BASE}/dashboard`);
  await page.fill("input[name=token]", "not-the-token");
  await page.click("button[type=submit]");
  assert.match(await page.textContent("body"), /not the admin token/);

  await page.fill("input[name=token]", TOKEN);
  await page.click("button[type=submit]");
  await page.waitForSelector("figure.chart svg");
  const [cookie] = await context.cookies();
  assert.equal(cookie.name, "lyss_session");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");
  assert.equal(cookie.secure, true);
  assert.equal(await page.evaluate(() => document.cookie), "", "no script can read the session");

  const spendBars = await page.locator("figure.chart").first().locator("rect").count();
  assert.ok(spendBars > 0, "the spend chart has bars");
  const savedBars = await page.locator("figure.chart").nth(1).locator("rect").count();
  assert.ok(savedBars > 0, "the savings chart has bars");
  await page.screenshot({ path: SHOT, fullPage: true });

  // A user's memories, per scope, with their provenance; one deleted from an end-user's scope.
  await page.goto(`${BASE}/dashboard/users`);
  await page.click("a[title=Memories] >> text=ann");
  assert.match(await page.textContent("main"), /blue Gazelle/);
  assert.doesNotMatch(await page.textContent("main"), /Fairphone/);
  await page.click("text=lobe-7f3a");
  const phone = page.locator("tr.memory", { hasText: "Fairphone" });
  assert.match(await phone.textContent(), /fact/);
  await phone.locator("button", { hasText: "Delete" }).click();
  assert.match(await page.textContent(".msg"), /deleted/);
  assert.doesNotMatch(await page.textContent("main"), /Fairphone/);

  await page.goto(`${BASE}/dashboard/keys`);
  await page.selectOption("select[name=user]", "ann");
  await page.fill("input[name=name]", "from-the-browser");
  await page.click("form[action='/dashboard/keys'] button[type=submit]");
  const created = (await page.textContent("#new-key")).trim();
  assert.match(created, /^lyss-sk-/);

  await page.click(`form[action='/dashboard/keys/${REVOKE}/revoke'] button`);
  assert.match(await page.textContent(".msg"), new RegExp(`Key ${REVOKE} revoked`));

  await page.click("header form button");
  await page.goto(`${BASE}/dashboard`);
  assert.ok(await page.isVisible("input[name=token]"), "signed out");

  console.log(JSON.stringify({ created }));
} finally {
  await browser.close();
}
