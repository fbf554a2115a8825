"""Headless Chromium through Selenium, for the browser tests and the page's benchmark rows.

    driver = browser.chromium(profile_dir)                 # WASM only (no GPU)
    driver = browser.chromium(profile_dir, webgpu=True)    # WebGPU through SwiftShader

Debian's `/usr/bin/chromium` and `/usr/bin/chromedriver` (apt-get install chromium
chromium-driver), found on PATH; nothing is downloaded. The browser may reach 127.0.0.1 only
(every other host name resolves to nothing), its console and network logs are kept for
`driver.get_log`, and with `downloads` it saves downloads into that folder without asking. The
`ifan_jax` package does not import this module (it needs Selenium, a test requirement).
"""

from __future__ import annotations

import shutil

HOST = "127.0.0.1"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
MISSING = "needs Chromium and its driver: apt-get install chromium chromium-driver"
# A WebGPU adapter without a GPU: SwiftShader, the software Vulkan that Debian's chromium-common
# ships (libvk_swiftshader.so). It is slow (a software GPU): it checks correctness, not speed.
WEBGPU_FLAGS = ("--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-angle=vulkan",
                "--use-vulkan=swiftshader", "--use-webgpu-adapter=swiftshader", "--disable-vulkan-surface",
                "--ignore-gpu-blocklist", "--enable-unsafe-swiftshader")
COMMON_FLAGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {HOST}")


def available() -> bool:
    """Whether Chromium and chromedriver are installed."""
    return bool(CHROMIUM and CHROMEDRIVER)


def chromium(profile: str, *, webgpu: bool = False, downloads: str | None = None,
             performance_log: bool = True, window: tuple[int, int] = (1200, 1500)):
    """A headless Chromium (a `selenium.webdriver.Chrome`) with its user profile in `profile` (a
    fresh folder) and a `window` (width, height); `webgpu`: with SwiftShader's WebGPU adapter, else
    without any GPU; `downloads`: the folder downloads go to; `performance_log`: keep the network
    log. The caller quits it. Raises ImportError without Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*COMMON_FLAGS, *(WEBGPU_FLAGS if webgpu else ("--disable-gpu",)),
                f"--window-size={window[0]},{window[1]}", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    logs = {"browser": "ALL", **({"performance": "ALL"} if performance_log else {})}
    options.set_capability("goog:loggingPrefs", logs)
    if downloads:
        options.add_experimental_option("prefs", {"download.default_directory": downloads,
                                                  "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    if downloads:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                               {"behavior": "allow", "downloadPath": downloads})
    return driver


def page_state(driver) -> str:
    """The static page's `<body data-state>` (web/src/main.js)."""
    return driver.execute_script("return document.body.dataset.state")


def page_message(driver) -> str:
    return driver.execute_script("return document.getElementById('message').textContent")


def wait_for_page(driver, states, timeout: float) -> str:
    """Poll the page's state until it is one of `states`; returns it. A page whose thread is busy
    for longer than Selenium's script timeout (encoding a 12-megapixel PNG on a loaded machine) is
    polled again; a TimeoutError names the state it stayed in and its message."""
    import time

    from selenium.common.exceptions import TimeoutException

    deadline = time.monotonic() + timeout
    state = None
    while True:
        try:
            state = page_state(driver)
        except TimeoutException:
            state = "busy"
        if state in states:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page stayed {state!r} ({page_message(driver)!r}), waiting for "
                               f"{sorted(states)}")
        time.sleep(0.05)
