// Opens Adminer (docker/compose.yaml's adminer service) in headless Debian chromium the way a
// person would: fills in the login form, opens the schema epc, then the production table, and
// reports what the pages show. tests/deploy/test_image.py judges the result.
//
// Usage: node adminer_check.cjs PLAYWRIGHT_DIR URL USER PASSWORD DATABASE SCREENSHOT_DIR
//   PLAYWRIGHT_DIR  where bin/install-deps put playwright-core (~/.cache/epc-import/playwright)
// Prints one JSON object: {"tables": [...names listed in schema epc...], "count_text": "...",
// "screenshots": [...]}; exits 1 with a message when a page cannot be reached or logged into.
"use strict";
const path = require("path");

async function main() {
  const [pwDir, url, user, password, database, shots] = process.argv.slice(2);
  const { chromium } = require(path.join(pwDir, "node_modules", "playwright-core"));
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    // As root (CI) chromium refuses its sandbox; the page is our own local Adminer.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const out = { screenshots: [] };
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(url, { waitUntil: "load", timeout: 30000 });
    await page.selectOption('select[name="auth[driver]"]', "pgsql");
    await page.fill('input[name="auth[server]"]', "postgres");
    await page.fill('input[name="auth[username]"]', user);
    await page.fill('input[name="auth[password]"]', password);
    await page.fill('input[name="auth[db]"]', database);
    await Promise.all([page.waitForNavigation({ timeout: 30000 }), page.click('input[type="submit"]')]);
    const error = await page.locator(".error").allInnerTexts();
    if (error.length) throw new Error("Adminer refused the login: " + error.join(" "));

    // The schema epc: its tables, each a link to its data.
    const base = page.url().split("#")[0];
    await page.goto(base + "&ns=epc", { waitUntil: "load", timeout: 30000 });
    out.tables = await page.locator("#tables a.structure, #tables a.select").allInnerTexts();
    out.tables = [...new Set(out.tables.map((t) => t.trim()).filter((t) => t && t !== "select"))];
    out.screenshots.push(path.join(shots, "adminer-schema-epc.png"));
    await page.screenshot({ path: out.screenshots.at(-1), fullPage: true });

    // The production table's count, as a person would ask it: the SQL command page (its editor
    // takes the query from the address, as Adminer's own links do), then Execute.
    const query = "SELECT count(*) AS published_rows FROM epc.domestic_certificates";
    await page.goto(base + "&ns=epc&sql=" + encodeURIComponent(query), { waitUntil: "load", timeout: 30000 });
    await Promise.all([page.waitForNavigation({ timeout: 60000 }), page.click('input[type="submit"][value="Execute"]')]);
    out.count_text = (await page.locator("table.nowrap").first().innerText()).trim();
    out.screenshots.push(path.join(shots, "adminer-count.png"));
    await page.screenshot({ path: out.screenshots.at(-1), fullPage: true });
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
  process.stderr.write("adminer_check: " + (e && e.stack ? e.stack : e) + "\n");
  process.exit(1);
});
