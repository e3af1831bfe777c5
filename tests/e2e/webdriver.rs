//! Driving Debian's Chromium through ChromeDriver (W3C WebDriver over HTTP), headless.
#![allow(dead_code)]

use crate::http::request;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

fn binary(candidates: &[&str]) -> String {
    candidates
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!(
                "none of {candidates:?} exists: install Debian's chromium and chromium-driver (.ci/run does)"
            )
        })
        .to_string()
}

impl Browser {
    pub fn start() -> Browser {
        let port = crate::agent::free_port();
        let driver = Command::new(binary(&[
            "/usr/bin/chromedriver",
            "/usr/lib/chromium/chromedriver",
        ]))
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
        let ready = crate::agent::wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && request(port, "GET", "/status", &[], b"").json()["value"]["ready"] == true
        });
        assert!(ready, "chromedriver did not become ready");
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": binary(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]),
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                }
            }}
        });
        let r = request(
            port,
            "POST",
            "/session",
            &[("Content-Type", "application/json")],
            caps.to_string().as_bytes(),
        );
        let v = r.json();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        Browser {
            driver,
            port,
            session,
            _profile: profile,
        }
    }

    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let r = request(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        let v = r.json();
        if r.status == 200 {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{method} {path}: {} {}",
                r.status, v["value"]["message"]
            ))
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap().to_owned()
    }

    pub fn try_find(&self, css: &str) -> Option<String> {
        let r = request(
            self.port,
            "POST",
            &format!("/session/{}/element", self.session),
            &[("Content-Type", "application/json")],
            json!({ "using": "css selector", "value": css })
                .to_string()
                .as_bytes(),
        );
        (r.status == 200).then(|| r.json()["value"][ELEMENT].as_str().unwrap().to_owned())
    }

    /// The element, waiting up to 10 s for it to appear.
    pub fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.try_find(css) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element {css} on {}:\n{}",
                self.url(),
                self.source().chars().take(3000).collect::<String>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn find_all(&self, css: &str) -> Vec<String> {
        self.call(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[ELEMENT].as_str().unwrap().to_owned())
        .collect()
    }

    /// Clicks the element, looking it up again if the page replaced it meanwhile.
    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let e = self.find(css);
            match self.try_call("POST", &format!("/element/{e}/click"), Some(json!({}))) {
                Ok(_) => return,
                Err(err) if Instant::now() > deadline => panic!("{css}: {err}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn click_element(&self, e: &str) {
        self.call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// The element's text. A page that is being replaced (after a form post) can take the
    /// element away between finding and reading it: then it is looked up again.
    pub fn text(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let e = self.find(css);
            match self.try_call("GET", &format!("/element/{e}/text"), None) {
                Ok(v) => return v.as_str().unwrap_or("").to_owned(),
                Err(err) if Instant::now() > deadline => panic!("{css}: {err}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn element_text(&self, e: &str) -> String {
        self.call("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    pub fn attribute(&self, e: &str, name: &str) -> Option<String> {
        self.call("GET", &format!("/element/{e}/attribute/{name}"), None)
            .as_str()
            .map(str::to_owned)
    }

    pub fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    pub fn script(&self, js: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": js, "args": [] })),
        )
    }

    /// Saves a PNG of the viewport.
    pub fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            &[],
            b"",
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
