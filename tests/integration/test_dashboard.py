"""The dashboard (/ui) in a real browser: Playwright driving Debian's chromium against a
real `bukt serve`. Screenshots of every page go to the test's tmp_path (look at them
when a layout changes)."""
import json
import os

import pytest

from serve_harness import Service, wait_for

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
CHROMIUM = "/usr/bin/chromium"
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 15000
# the browser logs each refused request; in the sign-in test those are the point
REFUSED = ("the server responded with a status of 401",
           "the server responded with a status of 403")

pytestmark = pytest.mark.slow


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path)
    try:
        s.start()
        yield s
        assert s.stop() == 0
    finally:
        s.cleanup()


@pytest.fixture
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A browser page on the service, with its console errors collected."""

    def __init__(self, browser, service, width=1280, height=720):
        self.ctx = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.errors = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.base = f"http://{service.http_bind}"

    def open(self, path="/ui"):
        self.page.goto(self.base + path)

    def sign_in(self, token, bucket=""):
        p = self.page
        p.fill("#signin-token", token)
        p.fill("#signin-bucket", bucket)
        p.click("#signin-form button[type=submit]")

    def shot(self, tmp_path, name):
        path = tmp_path / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def text(self, sel):
        return self.page.locator(sel).inner_text()

    def until(self, sel, predicate, what):
        """Wait for the text of `sel` to satisfy `predicate` (polled from here: the
        page's Content-Security-Policy forbids the eval that wait_for_function uses)."""
        self.page.wait_for_selector(sel, state="attached")
        return wait_for(lambda: predicate(self.page.locator(sel).text_content()),
                        timeout=WAIT_MS / 1000, what=what)


def feed_exists(service):
    status, body = service.http("GET", "/api/v1/openapi.json")
    return "/api/v1/buckets/{name}/watch" in json.loads(body)["paths"]


def test_dashboard_pages(service, browser, tmp_path):
    """Sign in with the admin token, create a bucket, set a key through the page and
    one through the TCP client, find both in the key browser, look at one as text, JSON
    and hex, delete and expire with confirmation, revoke a token, watch the charts
    follow the writes; no console errors; a screenshot of each page."""
    b = Page(browser, service)
    p = b.page
    b.open()
    p.wait_for_selector("#signin-token:focus")              # the form takes the keyboard
    b.shot(tmp_path, "signin")
    b.sign_in(service.admin_token())
    p.wait_for_selector("#bucket-table")
    p.fill("#nb-name", "web")
    p.click("#create-bucket button[type=submit]")
    token = p.locator("#new-bucket-token").inner_text()
    assert len(token) > 20
    p.wait_for_selector("#bucket-table a:text-is('web')")
    with service.client("web", token) as c:
        c.set(b"from/tcp", b'{"via": "tcp", "n": 1}')
        for i in range(300):                                  # something to chart
            c.set(b"load/%d" % i, b"x" * 100)
            c.get(b"load/%d" % i)
    # the charts follow the writes: the ops/s line rises above zero
    wait_for(lambda: float(p.locator("#charts figure").first.get_attribute("data-max")) > 0,
             timeout=WAIT_MS / 1000, what="the ops/s chart to show the writes")
    assert "web" in b.text("#bucket-table")
    b.shot(tmp_path, "buckets")

    p.click("#bucket-table a:text-is('web')")
    p.wait_for_selector("#key-list li")
    p.fill("#sk-key", "from/page")
    p.fill("#sk-value", "hello from the page")
    p.fill("#sk-ttl", "300")
    p.click("#set-key button[type=submit]")
    p.wait_for_selector("#entry-key:text-is('from/page')")
    assert b.text("#entry-value") == "hello from the page"
    ttl1 = b.text("#entry-ttl")
    assert ttl1.endswith(" s") and 290 < float(ttl1[:-2]) <= 300
    wait_for(lambda: b.text("#entry-ttl") != ttl1, timeout=5, what="the TTL to count down")
    with service.client("web", token) as c:
        assert c.get(b"from/page") == b"hello from the page"      # the page's write is real

    # both keys in the key browser, found by prefix
    p.fill("#prefix", "from/")
    p.click("#key-search button[type=submit]")
    p.wait_for_selector("#key-list [data-key='from/tcp']")
    keys = p.locator("#key-list [data-key]").evaluate_all("els => els.map(e => e.dataset.key)")
    assert sorted(keys) == ["from/page", "from/tcp"]
    p.click("#key-list [data-key='from/tcp']")
    p.wait_for_selector("#entry-key:text-is('from/tcp')")
    p.select_option("#entry-format", "json")
    b.until("#entry-value", lambda t: "\n" in t, "the value shown as JSON")
    assert json.loads(b.text("#entry-value")) == {"via": "tcp", "n": 1}
    p.select_option("#entry-format", "hex")
    b.until("#entry-value", lambda t: t.startswith("7b 22"), "the value shown as hex")
    version = b.text("#entry-version")
    # expire, with confirmation: cancelled first, then confirmed
    p.fill("#entry-expire", "120")
    p.click("#entry-expire-btn")
    p.click("#confirm-cancel")
    assert b.text("#entry-ttl") == "none"
    p.click("#entry-expire-btn")
    p.click("#confirm-ok")
    b.until("#entry-ttl", lambda t: t.endswith(" s"), "the TTL to show")
    assert b.text("#entry-version") != version
    with service.client("web", token) as c:
        assert c.get(b"from/tcp") == b'{"via": "tcp", "n": 1}'    # the value kept
        assert 100 < c.ttl(b"from/tcp") <= 120
    # the tail: the feed's events when the server has one, else a clear word
    if feed_exists(service):
        p.wait_for_selector("#tail li[data-key='from/tcp']")
    else:
        p.wait_for_selector("#tail-state[data-state=unavailable]")
        assert "feed not available" in b.text("#tail-state")
    b.until("#bucket-stats", lambda t: "keys" in t, "the bucket's figures")
    b.shot(tmp_path, "bucket")
    # delete, with confirmation
    p.click("#key-list [data-key='from/page']")
    p.wait_for_selector("#entry-key:text-is('from/page')")
    p.click("#entry-delete")
    assert "from/page" in b.text("#confirm-text")
    p.click("#confirm-ok")
    p.wait_for_selector("#key-list [data-key='from/page']", state="detached")
    with service.client("web", token) as c:
        assert c.get(b"from/page") is None

    # the service page
    p.click("#nav a[data-page=service]")
    p.wait_for_selector("#slab-table tbody tr th")
    assert "ready" in b.text("#service-box")
    assert "everysec" in b.text("#service-box")
    assert p.locator("#slab-table tbody tr").count() >= 1
    b.shot(tmp_path, "service")

    # tokens: create one, revoke it; the server then refuses it
    p.click("#nav a[data-page=tokens]")
    p.wait_for_selector("#token-table")
    p.click("#create-token button[type=submit]")
    new = p.locator("#new-token").inner_text()
    status, _ = service.http("GET", "/api/v1/buckets/web", headers={"X-Auth-Token": new})
    assert status == 200
    row = p.locator("#token-table tbody tr").last
    tid = row.get_attribute("data-id")
    row.locator("button").click()
    p.click("#confirm-ok")
    p.wait_for_selector(f"#token-table tr[data-id='{tid}']", state="detached")
    status, _ = service.http("GET", "/api/v1/buckets/web", headers={"X-Auth-Token": new})
    assert status == 401
    b.shot(tmp_path, "tokens")
    assert b.errors == []


def test_live_tail_shows_the_writes(service, browser, tmp_path):
    """The live tail lists changes made through the page and through TCP (the change
    feed's SSE endpoint)."""
    if not feed_exists(service):
        pytest.skip("this server has no change feed yet (GET /api/v1/buckets/{name}/watch); "
                    "the page says 'feed not available' (test_dashboard_pages checks that)")
    token = service.create_bucket("tail")
    b = Page(browser, service)
    p = b.page
    b.open()
    b.sign_in(token, "tail")
    p.wait_for_selector("#tail-state[data-state=connected]")
    with service.client("tail", token) as c:
        c.set(b"via-tcp", b"1")
    p.fill("#sk-key", "via-page")
    p.fill("#sk-value", "2")
    p.click("#set-key button[type=submit]")
    p.wait_for_selector("#tail li[data-key='via-tcp']")
    p.wait_for_selector("#tail li[data-key='via-page']")
    b.shot(tmp_path, "tail")
    assert b.errors == []


def test_wrong_token_and_an_expired_session_say_so(service, browser, tmp_path):
    """A wrong token is refused with a clear message; a session whose token is revoked
    meanwhile ends with one (not with empty pages); the token stays in sessionStorage
    only, and leaves it when the session ends."""
    token = service.create_bucket("mine")
    b = Page(browser, service)
    p = b.page
    b.open()
    b.sign_in("not-a-token-at-all")
    p.wait_for_selector("#notice:not([hidden])")
    assert "Wrong token" in b.text("#notice")
    b.shot(tmp_path, "wrong-token")
    b.sign_in(token)                        # a bucket's token without its bucket's name
    b.until("#notice", lambda t: "bucket" in t, "the bucket token's message")
    assert "give the bucket's name" in b.text("#notice")
    b.sign_in(token, "mine")
    p.wait_for_selector("#bucket-stats dt")
    assert p.evaluate("localStorage.length") == 0
    assert token in p.evaluate("sessionStorage.getItem('bukt.session')")
    # the admin revokes the token: the page's next request learns it
    status, body = service.http("GET", "/api/v1/buckets/mine/tokens",
                                headers={"X-Auth-Token": service.admin_token()})
    tid = json.loads(body)["tokens"][0]["id"]
    status, _ = service.http("DELETE", f"/api/v1/buckets/mine/tokens/{tid}",
                             headers={"X-Auth-Token": service.admin_token()})
    assert status == 204
    b.until("#notice", lambda t: "expired" in t, "the expired session's message")
    assert "session has expired" in b.text("#notice")
    assert p.locator("#signin").is_visible()
    assert p.evaluate("sessionStorage.getItem('bukt.session')") is None
    b.shot(tmp_path, "expired")
    # the only errors are the refused requests themselves
    assert [e for e in b.errors if not any(r in e for r in REFUSED)] == []


def test_keyboard_and_phone_width(service, browser, tmp_path):
    """Sign in and reach a bucket with the keyboard alone, at a phone's width, and
    nothing is wider than the screen."""
    token = service.create_bucket("phone")
    with service.client("phone", token) as c:
        c.set(b"a-rather-long-key-name/that/goes/on/and/on/" * 3, b"v")
    b = Page(browser, service, width=390, height=844)
    p = b.page
    b.open()
    p.wait_for_selector("#signin-token:focus")
    p.keyboard.type(service.admin_token())
    p.keyboard.press("Enter")
    p.wait_for_selector("#bucket-table a:text-is('phone')")
    p.focus("#bucket-table a:text-is('phone')")
    p.keyboard.press("Enter")
    p.wait_for_selector("#key-list [data-key]")
    p.focus("#key-list [data-key]")
    p.keyboard.press("Enter")
    p.wait_for_selector("#entry-value")
    p.wait_for_selector("#bucket-stats dt")
    for page in ("bucket", "service", "tokens", "buckets"):
        if page != "bucket":
            p.click(f"#nav a[data-page={page}]")
            p.wait_for_selector({"service": "#slab-table", "tokens": "#token-table",
                                 "buckets": "#charts"}[page])
        overflow = p.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{page} is {overflow} px wider than the phone"
        b.shot(tmp_path, f"phone-{page}")
    assert b.errors == []
