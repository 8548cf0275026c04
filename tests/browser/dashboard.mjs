// Opens the dashboard of a running application in headless Chromium, checks its numbers against
// the API, retries a dead letter by clicking and waits for it to succeed, and saves a screenshot.
// Usage: node dashboard.mjs BASE_URL SCREENSHOT.png   (RAINDROP_CHROMIUM: the browser to use)
import { chromium } from 'playwright-core';

const [base, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.RAINDROP_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const queues = await (await fetch(`${base}/v1/queues`)).json();
  await page.goto(`${base}/dashboard`);
  for (const queue of queues) {
    for (const [state, n] of Object.entries(queue.counts)) {
      const cell = page.locator(`a[href="/dashboard/jobs?queue=${queue.name}&state=${state}"]`);
      const shown = (await cell.textContent()).trim();
      if (shown !== String(n)) {
        throw new Error(`${queue.name}/${state}: the dashboard shows ${shown}, the API says ${n}`);
      }
    }
  }
  console.log(`overview matches the API for ${queues.length} queue(s)`);

  await page.getByRole('link', { name: 'Dead letters' }).click();
  const rows = page.locator('table tr', { has: page.getByRole('button', { name: 'Retry', exact: true }) });
  if ((await rows.count()) !== 1) throw new Error(`expected one dead letter, found ${await rows.count()}`);
  const id = (await rows.first().locator('code').textContent()).trim();
  await rows.first().getByRole('button', { name: 'Retry', exact: true }).click();
  await page.waitForURL(`**/dashboard/jobs/${id}`);
  let state = '';
  for (let i = 0; i < 200 && state !== 'succeeded'; i++) {
    // The job runs in the application's workers: look again until it is done (bounded).
    if (i > 0) {
      await page.waitForTimeout(100);
      await page.reload();
    }
    state = (await page.locator('td.state').first().textContent()).trim();
  }
  if (state !== 'succeeded') throw new Error(`job ${id} is ${state} after its retry`);
  console.log(`dead letter ${id} retried by a click and succeeded`);

  await page.goto(`${base}/dashboard`);
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);

  // A phone's width: no page scrolls sideways (wide tables scroll inside themselves).
  await page.setViewportSize({ width: 375, height: 800 });
  for (const path of ['/dashboard', '/dashboard/jobs', '/dashboard/dead-letters', `/dashboard/jobs/${id}`, '/dashboard/workers']) {
    await page.goto(`${base}${path}`);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    if (width > 375) throw new Error(`${path} is ${width}px wide at 375px`);
  }
  console.log('no page is wider than 375px');

  // Dark mode follows the system's setting.
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.goto(`${base}/dashboard`);
  const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  if (background !== 'rgb(13, 17, 23)') throw new Error(`dark mode background is ${background}`);
  console.log('dark mode follows prefers-color-scheme');
  const phone = shot.replace(/\.png$/, '-dark-phone.png');
  await page.screenshot({ path: phone, fullPage: true });
  console.log(`screenshot: ${phone}`);
} finally {
  await browser.close();
}
