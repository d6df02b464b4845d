//! Headless Chromium driven over the DevTools protocol, for tests that need
//! a user's clicks and typing (a login form), not just a page load.
//!
//! Chromium's `--remote-debugging-pipe` reads commands on fd 3 and writes
//! answers on fd 4, each a JSON text ended by a NUL byte. bash wires those
//! fds to two named pipes (no `unsafe` fd juggling in the test), so no
//! WebSocket client is needed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The Debian chromium binary.
pub fn chromium() -> PathBuf {
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("chromium not found: install the Debian package `chromium` (deploy/test.sh does)");
}

/// One browser with one page; killed on drop.
pub struct Browser {
    child: Child,
    to: std::fs::File,
    from: BufReader<std::fs::File>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium with a fresh profile and opens a blank page.
    pub fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let (to_path, from_path) = (profile.path().join("in"), profile.path().join("out"));
        for fifo in [&to_path, &from_path] {
            assert!(Command::new("mkfifo").arg(fifo).status().unwrap().success());
        }
        let child = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "exec {chromium} --headless --no-sandbox --disable-gpu --disable-quic \
                 --no-first-run --disable-background-networking --disable-component-update \
                 --disable-sync --hide-scrollbars --disable-dev-shm-usage --window-size=1400,1000 \
                 --user-data-dir={profile}/data --remote-debugging-pipe about:blank \
                 3<{to} 4>{from}",
                chromium = chromium().display(),
                profile = profile.path().display(),
                to = to_path.display(),
                from = from_path.display(),
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // bash opens fd 3 first (waits for this writer), then fd 4.
        let to = std::fs::OpenOptions::new()
            .write(true)
            .open(&to_path)
            .unwrap();
        let from = BufReader::new(std::fs::File::open(&from_path).unwrap());
        let mut browser = Self {
            child,
            to,
            from,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }), None);
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
            None,
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser.page("Page.enable", json!({}));
        browser
    }

    /// Sends a command (to the page when `session` is given) and waits for
    /// its answer, skipping events.
    fn call(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        match self.try_call(method, params, session) {
            Ok(result) => result,
            Err(answer) => panic!("{method}: {answer}"),
        }
    }

    /// [`Self::call`], the browser's error answer as `Err`.
    fn try_call(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = session.into();
        }
        self.to.write_all(message.to_string().as_bytes()).unwrap();
        self.to.write_all(&[0]).unwrap();
        self.to.flush().unwrap();
        loop {
            let mut raw = Vec::new();
            let n = self.from.read_until(0, &mut raw).unwrap();
            assert!(n > 0, "chromium closed its pipe during {method}");
            raw.pop();
            let answer: Value = serde_json::from_slice(&raw).unwrap();
            if answer["id"] == id {
                if !answer["error"].is_null() {
                    return Err(answer);
                }
                return Ok(answer["result"].clone());
            }
        }
    }

    fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(method, params, Some(&session))
    }

    /// Sends `headers` (a JSON object) with every request of the page, e.g.
    /// an API token: `{"Authorization": "Bearer fp_..."}`.
    pub fn set_headers(&mut self, headers: Value) {
        self.page("Network.enable", json!({}));
        self.page("Network.setExtraHTTPHeaders", json!({ "headers": headers }));
    }

    /// Opens `url`.
    pub fn navigate(&mut self, url: &str) {
        self.page("Page.navigate", json!({ "url": url }));
    }

    /// The value of a JavaScript expression in the page (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.page(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        result["result"]["value"].clone()
    }

    /// Waits up to `within` until `expression` is true. An evaluation the
    /// page's own navigation (a redirect, a form sent) cuts short counts as
    /// not yet.
    pub fn wait_for(&mut self, expression: &str, within: Duration) {
        let started = Instant::now();
        loop {
            let session = self.session.clone();
            let params = json!({
                "expression": format!("Boolean({expression})"),
                "returnByValue": true,
                "awaitPromise": true,
            });
            match self.try_call("Runtime.evaluate", params, Some(&session)) {
                Ok(result) if result["result"]["value"] == Value::Bool(true) => return,
                Ok(_) => {}
                Err(answer) => {
                    let message = answer["error"]["message"].as_str().unwrap_or_default();
                    assert!(
                        message.contains("navigated or closed"),
                        "Runtime.evaluate: {answer}"
                    );
                }
            }
            assert!(
                started.elapsed() < within,
                "`{expression}` not true after {within:?}; page at {}:\n{}",
                self.eval("location.href"),
                self.eval("document.body ? document.body.innerText.slice(0, 2000) : ''")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of the page to `file`; returns its size.
    pub fn screenshot(&mut self, file: &Path) -> usize {
        let shot = self.page("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(file, &png).unwrap();
        println!("screenshot: {}", file.display());
        png.len()
    }
}

impl Drop for Browser {
    /// Closes the browser from within, so it ends its renderer and zygote
    /// processes before it exits: killed, they outlived it and wrote to the
    /// profile while it was removed, leaving a directory in /tmp per test.
    /// Killed only when it does not close within 5 s.
    fn drop(&mut self) {
        self.next_id += 1;
        let close = json!({ "id": self.next_id, "method": "Browser.close" }).to_string();
        let asked = (self.to.write_all(close.as_bytes()))
            .and_then(|()| self.to.write_all(&[0]))
            .and_then(|()| self.to.flush());
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while asked.is_ok() && std::time::Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where tests leave what a person may want to look at (screenshots):
/// `<target>/artifacts`.
pub fn artifacts() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
