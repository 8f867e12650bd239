//! One test's world: a private bus with the fake systemd, a local HTTP server that hangs (or
//! answers) on demand, a temp directory for the probe file and the state, and a runner for
//! the real `routewatch` binary.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use assert_cmd::prelude::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::bus::{self, BusDaemon, Fake, UnitSpec};

/// The unit every probe file names.
pub const UNIT: &str = "rw-fake.service";
/// Longest a routewatch run may take before the test kills it and fails.
pub const RUN_DEADLINE: Duration = Duration::from_secs(10);

/// What the local HTTP server does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Accept, read nothing back, never answer: the hung-handler signature.
    Hung = 0,
    /// `200 OK`.
    Ok = 1,
    /// `429 Too Many Requests` on every request.
    TooMany = 2,
}

/// The local HTTP server's switch; cheap to clone.
#[derive(Clone)]
pub struct Http {
    mode: Arc<AtomicU8>,
    pub port: u16,
}

impl Http {
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::Ok,
            2 => Mode::TooMany,
            _ => Mode::Hung,
        }
    }
}

async fn serve_http(listener: tokio::net::TcpListener, http: Http) {
    while let Ok((mut sock, _)) = listener.accept().await {
        let http = http.clone();
        tokio::spawn(async move {
            // Read the request head, then decide (so a flip between accept and request counts).
            let mut head = Vec::new();
            let mut buf = [0u8; 2048];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let reply: &[u8] = match http.mode() {
                Mode::Hung => {
                    // Hold the connection open until the test ends.
                    std::future::pending::<()>().await;
                    return;
                }
                Mode::Ok => {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                }
                Mode::TooMany => {
                    b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                }
            };
            let _ = sock.write_all(reply).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// One routewatch run, finished.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl Run {
    /// The JSON report (stdout must be nothing else).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{self}"))
    }

    pub fn recovery(&self) -> Value {
        self.json()["targets"][0]["recovery"].clone()
    }

    pub fn decision(&self) -> String {
        self.recovery()["decision"]
            .as_str()
            .unwrap_or_else(|| panic!("no recovery.decision:\n{self}"))
            .to_string()
    }

    pub fn reason(&self) -> String {
        self.recovery()["reason"]
            .as_str()
            .unwrap_or_else(|| panic!("no recovery.reason:\n{self}"))
            .to_string()
    }

    pub fn verdict(&self) -> String {
        self.json()["targets"][0]["verdict"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Exit code, the decision and a reason substring, in one assertion with full context.
    pub fn expect(&self, code: i32, decision: &str, reason_has: &str) {
        assert!(!self.timed_out, "routewatch did not finish:\n{self}");
        assert_eq!(self.code, Some(code), "exit code:\n{self}");
        assert_eq!(self.decision(), decision, "decision:\n{self}");
        assert!(
            self.reason().contains(reason_has),
            "reason should mention {reason_has:?}:\n{self}"
        );
        assert!(!self.stderr.contains("panicked"), "a panic:\n{self}");
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}{}\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            self.elapsed,
            if self.timed_out {
                " (killed: timed out)"
            } else {
                ""
            },
            self.stdout,
            self.stderr
        )
    }
}

/// A started routewatch, for running several at once.
pub struct Running {
    child: Child,
    started: Instant,
    out: thread::JoinHandle<String>,
    err: thread::JoinHandle<String>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn finish(mut self, deadline: Duration) -> Run {
        let mut timed_out = false;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for routewatch") {
                break s;
            }
            if self.started.elapsed() > deadline {
                timed_out = true;
                let _ = self.child.kill();
                break self.child.wait().expect("reap routewatch");
            }
            thread::sleep(Duration::from_millis(5));
        };
        Run {
            code: status.code(),
            elapsed: self.started.elapsed(),
            stdout: self.out.join().unwrap_or_default(),
            stderr: self.err.join().unwrap_or_default(),
            timed_out,
        }
    }
}

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

pub struct Lab {
    rt: Option<tokio::runtime::Runtime>,
    conn: Option<zbus::Connection>,
    bus: Option<BusDaemon>,
    pub fake: Fake,
    pub http: Http,
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// A bus with the fake systemd knowing [`UNIT`] as a healthy running service, and a hung
    /// HTTP server.
    pub fn start() -> Lab {
        Lab::build(true)
    }

    /// A bus with nothing on it: no systemd.
    pub fn without_systemd() -> Lab {
        Lab::build(false)
    }

    fn build(with_systemd: bool) -> Lab {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let bus = BusDaemon::start(dir.path());
        let fake = Fake::default();
        fake.set_unit(UNIT, UnitSpec::running(UNIT));
        let conn = with_systemd.then(|| rt.block_on(bus::serve(&bus.address, fake.clone())));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1:0");
        let http = Http {
            mode: Arc::new(AtomicU8::new(Mode::Hung as u8)),
            port: listener.local_addr().expect("local addr").port(),
        };
        rt.spawn(serve_http(listener, http.clone()));
        Lab {
            rt: Some(rt),
            conn,
            bus: Some(bus),
            fake,
            http,
            dir,
        }
    }

    pub fn bus_address(&self) -> &str {
        &self.bus.as_ref().expect("bus is up").address
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Write a probe file: one target, one core route, [`UNIT`], and `recovery` with these
    /// keys over the test defaults (`action: restart`, `startup_grace: 0s`,
    /// `verify_timeout: 1s`).
    pub fn probe_file(&self, recovery: &[(&str, &str)]) -> PathBuf {
        let mut keys: Vec<(&str, &str)> = vec![
            ("action", "restart"),
            ("startup_grace", "0s"),
            ("verify_timeout", "1s"),
        ];
        for &(k, v) in recovery {
            match keys.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => keys.push((k, v)),
            }
        }
        let recovery: String = keys
            .iter()
            .map(|(k, v)| format!("      {k}: {v}\n"))
            .collect();
        let yaml = [
            "defaults:".to_string(),
            "  timeout: 200ms".into(),
            "  connect_timeout: 100ms".into(),
            "  retries: 0".into(),
            "targets:".into(),
            "  - name: api".into(),
            format!("    base_url: http://127.0.0.1:{}", self.http.port),
            format!("    unit: {UNIT}"),
            "    recovery:".into(),
            recovery.trim_end().into(),
            "    routes:".into(),
            "      - { path: /health, class: core }".into(),
        ]
        .join("\n")
            + "\n";
        let path = self.dir.path().join("probes.yaml");
        std::fs::write(&path, yaml).expect("write the probe file");
        path
    }

    /// `routewatch check --config <probe file> --state-dir <dir> <extra>` (`--format json` unless
    /// `extra` names a format), with the private bus as the system bus.
    pub fn command(&self, config: &Path, state_dir: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("routewatch").expect("the routewatch binary");
        cmd.arg("check")
            .arg("--config")
            .arg(config)
            .arg("--state-dir")
            .arg(state_dir)
            .args(if extra.contains(&"--format") {
                &[][..]
            } else {
                &["--format", "json"][..]
            })
            .args(extra)
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus_address())
            .env("NO_COLOR", "1")
            .env_remove("JOURNAL_STREAM")
            .env_remove("STATE_DIRECTORY")
            .env_remove("ROUTEWATCH_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    pub fn spawn(mut cmd: Command) -> Running {
        let started = Instant::now();
        let mut child = cmd.spawn().expect("start routewatch");
        let out = drain(child.stdout.take().expect("piped stdout"));
        let err = drain(child.stderr.take().expect("piped stderr"));
        Running {
            child,
            started,
            out,
            err,
        }
    }

    /// Run `check` on `config` with the lab's state directory.
    pub fn check(&self, config: &Path, extra: &[&str]) -> Run {
        Lab::spawn(self.command(config, &self.state_dir(), extra)).finish(RUN_DEADLINE)
    }

    /// The state file as JSON.
    pub fn state(&self) -> Value {
        let text = std::fs::read_to_string(self.state_dir().join("state.json"))
            .expect("state.json exists");
        serde_json::from_str(&text).expect("state.json is JSON")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            {
                let _guard = rt.enter();
                drop(self.conn.take());
            }
            rt.shutdown_background();
        }
        drop(self.bus.take());
    }
}
