//! Helpers shared by the black-box tests: run the real binary on a real data folder.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_partner-ledger");

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Runs the binary against `data` with `args`, feeding `stdin`.
pub fn run(data: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut command = Command::new(BIN);
    crate::pg::point(&mut command, data);
    let mut child = command
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().unwrap();
        s.write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

pub fn stdout_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `expected` is a partial description of `actual`: objects match on the keys they list, arrays element by element
/// with equal lengths, scalars exactly. Returns the path of the first mismatch.
pub fn mismatch(expected: &Value, actual: &Value, path: &str) -> Option<String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().find_map(|(k, ev)| match a.get(k) {
            None => Some(format!("{path}.{k}: missing (expected {ev})")),
            Some(av) => mismatch(ev, av, &format!("{path}.{k}")),
        }),
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Some(format!(
                    "{path}: expected {} elements, got {}: {actual}",
                    e.len(),
                    a.len()
                ));
            }
            e.iter()
                .zip(a)
                .enumerate()
                .find_map(|(i, (ev, av))| mismatch(ev, av, &format!("{path}[{i}]")))
        }
        _ if expected == actual => None,
        _ => Some(format!("{path}: expected {expected}, got {actual}")),
    }
}

/// A `serve` process on a data folder, on an ephemeral loopback port; killed when dropped.
pub struct Server {
    child: std::process::Child,
    pub addr: std::net::SocketAddr,
    /// What it printed on stdout up to where it listens.
    pub said: String,
}

impl Server {
    /// Starts the real binary's `serve` on `data` without clock ticks, with `extra` arguments; its stderr goes to
    /// `stderr` when given. Fails when the process stops before printing its address.
    pub fn launch(data: &Path, extra: &[&str], stderr: Option<&Path>) -> Result<Server, String> {
        let mut command = Command::new(BIN);
        crate::pg::point(&mut command, data);
        Server::spawn(command, data, extra, stderr)
    }

    /// As [`Server::launch`], from a `command` of the binary the caller prepared (its environment, say).
    pub fn spawn(
        mut command: Command,
        data: &Path,
        extra: &[&str],
        stderr: Option<&Path>,
    ) -> Result<Server, String> {
        use std::io::BufRead;
        let stderr = match stderr {
            Some(p) => Stdio::from(std::fs::File::create(p).map_err(|e| e.to_string())?),
            None => Stdio::null(),
        };
        let mut child = command
            .arg("--data")
            .arg(data)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--clock-interval",
                "86400",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no server output")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut said = String::new();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.wait();
                return Err("the server stopped before listening".into());
            };
            said.push_str(&line);
            said.push('\n');
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                break addr
                    .parse()
                    .map_err(|_| format!("no address in {line:?}"))?;
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server { child, addr, said })
    }

    /// Its base URL, `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills it without warning (`kill -9`) and waits for it.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(|_| ())
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server gracefully (SIGTERM) and waits for it; its exit status.
    pub fn stop(mut self) -> std::io::Result<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` on `data` with `extra` arguments ([`Server`], killed when dropped), retrying while an earlier
/// holder lets go of the folder's lock; its stderr goes to `stderr` when given.
pub fn serve(data: &Path, stderr: Option<&Path>, extra: &[&str]) -> Server {
    let mut last = None;
    for _ in 0..200 {
        match Server::launch(data, extra, stderr) {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the server did not start on {}: {last:?}", data.display());
}

/// Starts `serve` on an ephemeral loopback port with `extra` arguments, keeping its standard output to read on:
/// the process, the rest of its output, its first line and its base URL.
pub fn spawn_serve(
    data: &Path,
    extra: &[&str],
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
    String,
    String,
) {
    use std::io::BufRead;
    let mut command = Command::new(BIN);
    crate::pg::point(&mut command, data);
    let mut child = command
        .arg("--data")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    (child, out, first, url)
}

/// GETs `url` and decodes its JSON body, whatever the status.
pub async fn get_json(c: &reqwest::Client, url: impl reqwest::IntoUrl) -> Value {
    c.get(url).send().await.unwrap().json().await.unwrap()
}

/// A process's resident memory in KiB, from /proc.
pub fn rss_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .expect("/proc gives VmRSS")
}

/// Raw access to a stopped ledger's event log, for tests that play an attacker or a damaged disk. The log packs
/// consecutive envelopes into compressed segments (`src/store/sled/segment.rs`): the key is the first one's big-endian
/// position and the content is the envelopes separated by newlines. Edited segments are written back uncompressed,
/// which the ledger reads too.
pub mod raw_log {
    use std::path::Path;

    fn open(data: &Path) -> (sled::Db, sled::Tree) {
        let db = sled::Config::new().path(data.join("sled")).open().unwrap();
        let tree = db.open_tree("log").unwrap();
        (db, tree)
    }

    fn segment_of(tree: &sled::Tree, position: u64) -> (u64, Vec<Vec<u8>>) {
        let (k, v) = tree
            .range(..=position.to_be_bytes())
            .next_back()
            .unwrap()
            .unwrap();
        let first = u64::from_be_bytes(k.as_ref().try_into().unwrap());
        let content = partner_ledger::store::segment::content(&v).unwrap();
        (
            first,
            content.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect(),
        )
    }

    /// Rewrites the stored envelope at `position` with `edit`.
    pub fn edit(data: &Path, position: u64, edit: impl Fn(String) -> String) {
        let (db, tree) = open(data);
        let (first, mut events) = segment_of(&tree, position);
        let i = usize::try_from(position - first).unwrap();
        events[i] = edit(String::from_utf8(events[i].clone()).unwrap()).into_bytes();
        // Stored as the store stores it (compressed), so the value stays as small as before.
        let rows: Vec<_> = events
            .into_iter()
            .zip(first..)
            .map(|(e, p)| (partner_ledger::domain::Position(p), e))
            .collect();
        for (k, v) in partner_ledger::store::segment::pack(&rows) {
            tree.insert(k, v).unwrap();
        }
        db.flush().unwrap();
    }

    /// The stored bytes of the segment that starts at `first`.
    pub fn stored_segment(data: &Path, first: u64) -> Vec<u8> {
        let (_db, tree) = open(data);
        tree.get(first.to_be_bytes()).unwrap().unwrap().to_vec()
    }

    /// The stored envelope at `position`.
    pub fn get(data: &Path, position: u64) -> String {
        let (_db, tree) = open(data);
        let (first, events) = segment_of(&tree, position);
        String::from_utf8(events[usize::try_from(position - first).unwrap()].clone()).unwrap()
    }

    /// Removes the events from `position` on.
    pub fn truncate_from(data: &Path, position: u64) {
        let (db, tree) = open(data);
        let (first, events) = segment_of(&tree, position);
        let later: Vec<_> = tree
            .range((first + 1).to_be_bytes()..)
            .map(|r| r.unwrap().0)
            .collect();
        for k in later {
            tree.remove(k).unwrap();
        }
        let keep = usize::try_from(position - first).unwrap();
        if keep == 0 {
            tree.remove(first.to_be_bytes()).unwrap();
        } else {
            tree.insert(first.to_be_bytes(), events[..keep].join(&b'\n'))
                .unwrap();
        }
        db.flush().unwrap();
    }

    /// Deletes the stored segment holding `position` (a deleted key); returns its first position.
    pub fn remove_segment(data: &Path, position: u64) -> u64 {
        let (db, tree) = open(data);
        let (first, _) = segment_of(&tree, position);
        tree.remove(first.to_be_bytes()).unwrap();
        db.flush().unwrap();
        first
    }
}
