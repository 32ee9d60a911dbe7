// Loads the test page in headless Chromium (Debian's, via playwright-core)
// and prints the page's result as one JSON line.
// Usage: node run.mjs PAGE_URL WS_URL CREDS_FILE [CHROMIUM]
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [pageUrl, wsUrl, credsFile, executablePath = "/usr/bin/chromium"] = process.argv.slice(2);
const creds = readFileSync(credsFile, "utf8");
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  timeout: 20000,
});
try {
  const page = await browser.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(pageUrl, { timeout: 10000 });
  let result;
  try {
    result = await page.evaluate(([url, c]) => window.natsTest.run(url, c), [wsUrl, creds]);
  } catch (e) {
    result = { error: e.message };
  }
  result.userAgent = await page.evaluate(() => navigator.userAgent);
  result.logs = logs;
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
