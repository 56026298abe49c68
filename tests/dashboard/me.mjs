// The key holder's page (/me) in headless Chromium: signs in with a key, checks the cookie's
// flags, sees the profile, memories, usage and budgets, takes a screenshot, corrects a memory,
// deletes one, opens an end-user's scope, forgets everything, signs out; another key sees
// none of it; a link an app minted, followed from another site, opens one end-user's scope.
// Env: BASE, KEY, OTHER_KEY, CHROMIUM, SHOT, BIKE and CAT (memory ids), LINK (a minted path).
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const { BASE, KEY, OTHER_KEY, CHROMIUM, SHOT, BIKE, CAT, LINK } = process.env;
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
// The memories listed (each one's text is in its correction field).
const listed = async (page) =>
  (await page.locator("#memories input[name=text]").evaluateAll((els) => els.map((e) => e.value))).join("\n");
const signIn = async (page, key) => {
  await page.goto(`${BASE}/me`);
  await page.fill("input[name=key]", key);
  await page.click("button[type=submit]");
};
try {
  // The person follows the app's link from the app's own site (here: a page of no origin).
  const visitor = await (await browser.newContext()).newPage();
  await visitor.setContent(`<a href="${BASE}${LINK}">My memory</a>`);
  await visitor.click("a");
  await visitor.click("text=Open my page");
  await visitor.waitForSelector("#memories");
  assert.match(await listed(visitor), /Fairphone/);
  assert.doesNotMatch(await listed(visitor) + (await visitor.textContent("body")), /Gazelle|vegetarian|Budgets/);
  assert.match(await visitor.textContent("body"), /as lobe-7f3a/);

  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  const page = await context.newPage();

  await signIn(page, "lyss-sk-not-a-key");
  assert.match(await page.textContent("body"), /That key does not work/);

  await signIn(page, KEY);
  await page.waitForSelector("#memories");
  const [cookie] = await context.cookies();
  assert.equal(cookie.name, "lyss_me");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");
  assert.equal(cookie.secure, true);
  assert.equal(cookie.path, "/me");
  assert.equal(await page.evaluate(() => document.cookie), "", "no script can read the key");

  assert.match(await page.textContent("#profile"), /I am vegetarian\./);
  const memories = await listed(page);
  assert.match(memories, /blue Gazelle/);
  assert.doesNotMatch(memories, /Fairphone/, "an end-user's scope is not mixed in");
  assert.match(await page.textContent("#usage"), /1 request,/);
  assert.match(await page.textContent("#usage"), /\$20\.00/, "the budget that applies");
  await page.screenshot({ path: SHOT, fullPage: true });

  // Correct one memory, delete another.
  const bike = page.locator(`tr.memory[data-id='${BIKE}']`);
  await bike.locator("input[name=text]").fill("My bike is a green Gazelle with a wicker basket.");
  await bike.locator("button", { hasText: "Save" }).click();
  assert.match(await page.textContent(".msg"), /Corrected/);
  assert.match(await listed(page), /green Gazelle/);
  await page.locator(`tr.memory[data-id='${CAT}'] button`, { hasText: "Delete" }).click();
  assert.match(await page.textContent(".msg"), /Deleted/);
  assert.doesNotMatch(await listed(page), /Miso/);

  // Search, and an end-user's scope.
  await page.fill("input[name=q]", "Gazelle basket");
  await page.click("#memories form[method=get] button");
  assert.match(await listed(page), /green Gazelle/);
  await page.click("text=lobe-7f3a");
  assert.match(await listed(page), /Fairphone/);
  assert.doesNotMatch(await listed(page), /Gazelle/);

  // Another key sees none of it.
  const other = await (await browser.newContext()).newPage();
  await signIn(other, OTHER_KEY);
  await other.waitForSelector("#memories");
  assert.doesNotMatch(await other.textContent("body") + (await listed(other)), /Gazelle|Fairphone|vegetarian/);
  await other.goto(`${BASE}/me?end_user=lobe-7f3a`);
  assert.doesNotMatch(await listed(other), /Fairphone/);

  // Forget everything, then sign out.
  await page.goto(`${BASE}/me`);
  await page.fill("#forget input[name=confirm]", "FORGET");
  await page.click("#forget button");
  assert.match(await page.textContent(".msg"), /Forgot everything: 3 memories deleted/);
  assert.match(await page.textContent("#memories"), /Nothing remembered/);
  await page.click("header form button");
  await page.goto(`${BASE}/me`);
  assert.ok(await page.isVisible("input[name=key]"), "signed out");
  console.log(JSON.stringify({ ok: true }));
} finally {
  await browser.close();
}
