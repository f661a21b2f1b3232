"""The dn console in headless Chromium (run by console_check.sh against a live `dn serve`): signs in with the
key, finds both jobs in the list (the queued one named with a script-injection probe, shown as text),
opens the running job and sees its loss curve gain points as steps complete, reads its logs, cancels the
queued job through its page (confirming the dialog), picks the watched job and a third one in the list and
compares them (both curves drawn, by step and by tokens seen; the config fields that differ listed), lists
the datasets (one described with the probe),
opens the dataset viewer on the probe dataset (supervised tokens highlighted, the bad row listed as
skipped), and checks after every page that nothing the probe carries ran. Screenshots go to --screenshots.
Every wait is bounded."""

import argparse
import os
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait


def chromium():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1100", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def main():
    parser = argparse.ArgumentParser()
    for name in ("url", "key", "watched", "queued", "compared", "probe", "screenshots"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args()
    driver = chromium()
    # The job page redraws its header as the job moves on: an element found may be replaced next moment.
    wait = WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException,))
    failures = []

    def check(condition, message):
        print(("ok: " if condition else "FAILED: ") + message, flush=True)
        if not condition:
            failures.append(message)

    def shot(name):
        path = os.path.join(args.screenshots, f"{name}.png")
        driver.save_screenshot(path)
        print(f"screenshot {path}", flush=True)

    def text_of(css):
        for _ in range(50):
            try:
                return driver.find_element(By.CSS_SELECTOR, css).text
            except StaleElementReferenceException:
                time.sleep(0.1)
        raise AssertionError(f"{css} kept being replaced")

    def nothing_ran(where):
        pwned = driver.execute_script("return window.__pwned === undefined ? null : window.__pwned;")
        check(pwned is None, f"{where}: the probe's script did not run")

    try:
        driver.get(args.url + "/")
        wait.until(EC.presence_of_element_located((By.ID, "key"))).send_keys(args.key)
        driver.find_element(By.CSS_SELECTOR, "#signin button[type=submit]").click()
        wait.until(EC.presence_of_element_located((By.ID, "ws")))
        check(driver.execute_script("return document.cookie") == "", "no cookie after sign-in")
        check(args.key not in driver.current_url, "the key is not in the URL")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#workspaces option")) >= 1)
        picks = [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#workspaces option")]
        check(picks == ["main"], f"the workspace picker offers the workspaces with jobs ({picks})")
        ws = driver.find_element(By.ID, "ws")
        ws.clear()
        ws.send_keys("main\n")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs .job-row")) >= 2)
        links = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#jobs .job-link")]
        check(args.probe in links, "the probe job name is shown literally in the list")
        check(not driver.find_elements(By.CSS_SELECTOR, "#jobs img"), "no <img> element made from a name")
        nothing_ran("jobs list")
        shot("jobs")

        driver.get(f"{args.url}/#/job/{args.watched}")
        chart = wait.until(EC.presence_of_element_located((By.ID, "loss-chart")))
        deadline = time.time() + 300
        first = None
        while time.time() < deadline:
            points = int(driver.find_element(By.ID, "loss-chart").get_attribute("data-points") or 0)
            if first is None and points >= 1:
                first = points
            if first is not None and points > first:
                break
            time.sleep(0.5)
        later = int(driver.find_element(By.ID, "loss-chart").get_attribute("data-points") or 0)
        check(first is not None and later > first,
              f"the curve gained points without a reload ({first} then {later})")
        check(len(driver.find_elements(By.CSS_SELECTOR, "#loss-chart polyline.train")) == 1, "a train-loss line is drawn")
        logs = driver.find_element(By.ID, "logs").text
        check("training started" in logs, "the logs show the training start")
        nothing_ran("job page")
        # Until the job ends (bounded), for the eval points and samples in the screenshot.
        deadline = time.time() + 300
        while time.time() < deadline:
            badge = text_of("#job-header .badge")
            if badge in ("completed", "failed", "cancelled"):
                break
            time.sleep(1)
        check(badge == "completed", f"the watched job completed ({badge})")
        evals = int(chart.get_attribute("data-eval-points") or 0) if chart.is_displayed() else 0
        check(evals >= 1, f"eval-loss points are drawn ({evals})")
        driver.execute_script("window.scrollTo(0, 0)")
        shot("job")

        driver.get(f"{args.url}/#/job/{args.queued}")
        wait.until(EC.element_to_be_clickable((By.ID, "cancel")))
        heading = text_of("#job-header h1")
        check(heading == args.probe, "the job page shows the probe name as text")
        nothing_ran("probe job page")
        for _ in range(50):
            try:
                driver.find_element(By.ID, "cancel").click()
                break
            except StaleElementReferenceException:
                time.sleep(0.1)
        WebDriverWait(driver, 10).until(EC.alert_is_present()).accept()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#job-header .badge").text in ("cancelled",))
        check(True, "the queued job was cancelled from its page")
        shot("cancelled")

        # The third job runs once the probe job is cancelled; then both trained jobs are compared.
        driver.get(f"{args.url}/#/job/{args.compared}")
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#job-header .badge")))
        deadline = time.time() + 300
        while time.time() < deadline:
            badge = text_of("#job-header .badge")
            if badge in ("completed", "failed", "cancelled"):
                break
            time.sleep(1)
        check(badge == "completed", f"the compared job completed ({badge})")
        check(bool(driver.find_elements(By.ID, "metrics-csv")), "the job page offers its metrics as CSV")
        driver.get(f"{args.url}/#/jobs")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs input.pick")) >= 3)
        for job_id in (args.watched, args.compared):
            driver.find_element(By.CSS_SELECTOR, f'#jobs input.pick[value="{job_id}"]').click()
        driver.find_element(By.ID, "compare").click()
        wait.until(EC.presence_of_element_located((By.ID, "compare-chart")))
        lines = driver.find_elements(By.CSS_SELECTOR, "#compare-chart polyline.series")
        drawn = [line.get_attribute("data-job") for line in lines if line.get_attribute("points")]
        check(sorted(drawn) == sorted([args.watched, args.compared]), f"both jobs' curves are drawn ({drawn})")
        differing = [row.find_element(By.TAG_NAME, "th").text for row in driver.find_elements(By.CSS_SELECTOR, "#config-diff .diff-row")]
        check("lora_rank" in differing and "learning_rate" in differing,
              f"the config fields that differ are listed ({differing})")
        check("steps" in differing and "batch_size" not in differing, "fields both jobs share are not listed")
        for option in driver.find_elements(By.CSS_SELECTOR, "#compare-axis option"):
            if option.get_attribute("value") == "tokens":
                option.click()
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '#compare-chart[aria-label="loss by tokens"]')))
        by_tokens = driver.find_elements(By.CSS_SELECTOR, "#compare-chart polyline.series")
        check(len(by_tokens) == 2, f"by tokens seen, both curves again ({len(by_tokens)})")
        nothing_ran("compare")
        shot("compare")

        driver.get(f"{args.url}/#/datasets")
        rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#datasets .datasets-row") or None)
        text = " ".join(r.text for r in rows)
        check("probe@0.1.0" in text and args.probe in text, "the probe dataset's description is shown as text")
        nothing_ran("datasets")
        shot("datasets")

        # The viewer: the probe row rendered with the model's template and the capability's prompt.
        driver.get(f"{args.url}/#/datasets/probe/0.1.0")
        wait.until(EC.presence_of_element_located((By.ID, "preview-run")))
        capability = driver.find_element(By.ID, "preview-capability")
        for option in capability.find_elements(By.TAG_NAME, "option"):
            if option.get_attribute("value") == "support-agent@1.0.0":
                option.click()
        driver.find_element(By.ID, "preview-run").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#preview .tok.sup") or d.find_elements(By.CSS_SELECTOR, "#preview .error"))
        supervised = driver.find_elements(By.CSS_SELECTOR, "#preview .tok.sup")
        check(len(supervised) > 0, f"the viewer highlights supervised tokens ({len(supervised)})")
        tokens = driver.find_element(By.CSS_SELECTOR, "#preview pre.tokens").text
        check("window.__pwned=1" in tokens and "<script>" in tokens, "the probe row is shown as text")
        check("support" in tokens.lower(), "the capability's system prompt scaffolds the row")
        unsupervised_text = "".join(t.text for t in driver.find_elements(By.CSS_SELECTOR, "#preview .tok:not(.sup)"))
        check("<|im_start|>" in unsupervised_text or "system" in unsupervised_text, "the template's own tokens are shown unsupervised")
        skipped = driver.find_elements(By.CSS_SELECTOR, "#preview .skipped li")
        check(len(skipped) == 1 and "row 2" in skipped[0].text, "the bad row is listed as skipped with its row")
        nothing_ran("viewer")
        shot("viewer")
    finally:
        driver.quit()
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("console check passed")


if __name__ == "__main__":
    main()
