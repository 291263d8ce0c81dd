//! A real headless Chromium for the console tests, driven through chromedriver (WebDriver)
//! with `fantoccini`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without them a
//! browser test prints `*** browser test SKIPPED` on the real stderr and passes, unless
//! `SHOPD_TEST_REQUIRE_BROWSER=1` (set by `.ci/run`), which turns the skip into a failure.
//! `SHOPD_CHROMEDRIVER` and `SHOPD_CHROMIUM` override the binaries' paths.
//!
//! Browser tests run one at a time (a process-wide lock): each Chromium wants most of a core.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

pub struct Browser {
    pub client: Client,
    driver: Child,
    base: String,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

fn find_binary(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(env)
        && !path.is_empty()
    {
        return Some(PathBuf::from(path));
    }
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

fn required() -> bool {
    matches!(
        std::env::var("SHOPD_TEST_REQUIRE_BROWSER").as_deref(),
        Ok("1")
    )
}

/// Say on the real stderr (not captured by libtest) that a browser test did not run.
pub fn announce_skip(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "*** browser test SKIPPED ({test}): {reason}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("console-screenshots")
}

impl Browser {
    /// A browser on the console of the server at `base` (`http://127.0.0.1:PORT`), or `None`
    /// (announced) when chromedriver or Chromium is missing and not required.
    pub async fn open(test: &str, base: &str) -> Option<Browser> {
        static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let driver_bin = find_binary("SHOPD_CHROMEDRIVER", &["chromedriver"]);
        let chromium = find_binary(
            "SHOPD_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        let (Some(driver_bin), Some(chromium)) = (driver_bin, chromium) else {
            let reason =
                "chromedriver or chromium not found (apt-get install chromium chromium-driver)";
            if required() {
                panic!("SHOPD_TEST_REQUIRE_BROWSER=1 but {reason}");
            }
            announce_skip(test, reason);
            return None;
        };
        let turn = TURN.lock().await;
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            // Its own process group: the group (chromedriver and its Chromium) is ended with it.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_bin.display()));
        let webdriver = format!("http://127.0.0.1:{port}");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         "--no-first-run", "--disable-extensions", "--lang=en-US"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            match ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&webdriver)
                .await
            {
                Ok(client) => break client,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("cannot start a Chromium session through chromedriver: {err}"),
            }
        };
        Some(Browser {
            client,
            driver,
            base: base.to_string(),
            _turn: turn,
        })
    }

    pub async fn goto(&self, hash: &str) {
        let url = format!("{}/console{hash}", self.base);
        self.client.goto(&url).await.expect("navigate");
    }

    /// The visible text of the page.
    pub async fn page_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Wait until the element `css` exists and its text contains `needle`; fails with the
    /// page's text (and a screenshot `failed-<name>.png`) otherwise.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(elements) = self.client.find_all(Locator::Css(css)).await {
                for el in elements {
                    if let Ok(text) = el.text().await
                        && text.contains(needle)
                    {
                        return text;
                    }
                }
            }
            if Instant::now() > deadline {
                self.screenshot(&format!("failed-{}", sanitize(needle)))
                    .await;
                panic!(
                    "no {css:?} with text {needle:?} within 15 s; the page says:\n{}",
                    self.page_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css:?}: {e}"))
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("type");
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Click the button whose text is exactly `label` (inside `scope`, a CSS selector).
    pub async fn click_button(&self, scope: &str, label: &str) {
        let xpath = format!(
            "{}//button[normalize-space(.)='{label}']",
            css_scope_xpath(scope)
        );
        let button = self
            .client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button {label:?} in {scope}: {e}"));
        button.click().await.expect("click");
    }

    pub async fn script(&self, js: &str) -> serde_json::Value {
        self.client.execute(js, vec![]).await.expect("script")
    }

    /// Save a PNG of the page as `target/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let dir = screenshot_dir();
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(dir.join(format!("{name}.png")), png);
        }
    }

    /// Sign in through the form.
    pub async fn sign_in(&self, token: &str) {
        self.goto("#/dashboard").await;
        self.fill("input[name=token]", token).await;
        self.click("form.signin button[type=submit]").await;
        self.wait_text("main h1", "Dashboard").await;
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
        // Drop ends chromedriver's process group.
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Also when a test failed before `close`: never leave chromedriver or Chromium behind.
        // The group is the one chromedriver leads (spawned with `process_group(0)`).
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn css_scope_xpath(scope: &str) -> String {
    match scope {
        "dialog" => "//dialog[@open]".to_string(),
        "main" => "//main".to_string(),
        other => format!("//*[@id='{}']", other.trim_start_matches('#')),
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect()
}
