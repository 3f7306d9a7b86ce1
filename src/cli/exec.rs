//! `exec`: NDJSON commands in, outcomes out, pipelined through the writer.
//!
//! A reader thread parses lines and submits them without waiting, so many commands are in flight and the writer
//! commits them in large batches; this thread prints each outcome in input order as soon as it is acknowledged.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc::{sync_channel, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::domain::command::MAX_COMMAND_BYTES;
use crate::domain::parse_line;
use crate::ledger::{Ledger, LedgerConfig, Outcome, Ticket};

enum Pending {
    Invalid { line: u64, message: String },
    Submitted(Ticket),
}

enum LineRead {
    Line,
    TooLong(usize),
    End,
}

/// Reads one line into `buf` (without its newline), keeping at most `limit + 1` bytes of an over-long line.
fn read_bounded_line(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    let mut total = 0usize;
    let mut any = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(match (any, total > limit) {
                (false, _) => LineRead::End,
                (true, true) => LineRead::TooLong(total),
                (true, false) => LineRead::Line,
            });
        }
        any = true;
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if buf.len() <= limit {
            let room = (limit + 1).saturating_sub(buf.len()).min(take);
            buf.extend_from_slice(&chunk[..room]);
        }
        total += take;
        r.consume(if done { take + 1 } else { take });
        if done {
            if buf.last() == Some(&b'\r') {
                buf.pop();
                total -= 1;
            }
            return Ok(if total > limit {
                LineRead::TooLong(total)
            } else {
                LineRead::Line
            });
        }
    }
}

/// A line of a backup or an event envelope is not a command: say which command the user wanted.
fn with_hint(message: String, line: &str) -> String {
    let backup = [
        "{\"partner_ledger_backup\"",
        "{\"command\"",
        "{\"refusal\"",
        "{\"consumer\"",
        "{\"end\"",
    ]
    .iter()
    .any(|p| line.starts_with(p));
    if backup || (line.contains("\"prev_hash\"") && line.contains("\"position\"")) {
        format!("{message} (this line is from a backup or an event export, not a command: restore such a file with `partner-ledger import FILE` into an empty ledger)")
    } else {
        message
    }
}

pub fn run(data: &Path, file: &str) -> anyhow::Result<ExitCode> {
    let input: Box<dyn Read + Send> = if file == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(file)
                .with_context(|| format!("cannot open the command file {file}"))?,
        )
    };
    let ledger = Arc::new(Ledger::open(LedgerConfig::new(data))?);
    let started = Instant::now();
    let (tx, rx) = sync_channel::<Pending>(100_000);
    let submitter = Arc::clone(&ledger);
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        let mut r = BufReader::with_capacity(1 << 20, input);
        let mut buf = Vec::with_capacity(4096);
        let mut line_no = 0u64;
        loop {
            let read = read_bounded_line(&mut r, &mut buf, MAX_COMMAND_BYTES)?;
            line_no += 1;
            let pending = match read {
                LineRead::End => return Ok(()),
                LineRead::TooLong(n) => Pending::Invalid {
                    line: line_no,
                    message: format!("the command is {n} bytes; at most {MAX_COMMAND_BYTES} bytes are accepted (R38)"),
                },
                LineRead::Line => {
                    let Ok(text) = std::str::from_utf8(&buf) else {
                        let p = Pending::Invalid { line: line_no, message: "the line is not valid UTF-8".into() };
                        if tx.send(p).is_err() {
                            return Ok(());
                        }
                        continue;
                    };
                    let trimmed = text.trim();
                    if trimmed.is_empty() || trimmed.starts_with('#') {
                        continue;
                    }
                    match parse_line(trimmed) {
                        Ok(submitted) => Pending::Submitted(submitter.submit(submitted)),
                        Err(e) => Pending::Invalid { line: line_no, message: with_hint(e.0, trimmed) },
                    }
                }
            };
            if tx.send(pending).is_err() {
                return Ok(());
            }
        }
    });

    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let (mut committed, mut refused, mut invalid, mut unknown) = (0u64, 0u64, 0u64, 0u64);
    loop {
        let pending = match rx.try_recv() {
            Ok(p) => p,
            Err(TryRecvError::Empty) => {
                w.flush()?;
                match rx.recv() {
                    Ok(p) => p,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let outcome = match pending {
            Pending::Invalid { line, message } => Outcome::Invalid { line, message },
            Pending::Submitted(mut ticket) => {
                match ticket.try_now() {
                    Some(o) => o,
                    None => {
                        // Everything before this command is printed; show it before waiting for the next batch.
                        w.flush()?;
                        ticket.wait()
                    }
                }
            }
        };
        match outcome {
            Outcome::Committed { .. } => committed += 1,
            Outcome::Refused { .. } => refused += 1,
            Outcome::Unknown { .. } => unknown += 1,
            Outcome::Invalid { .. } => invalid += 1,
        }
        serde_json::to_writer(&mut w, &outcome.to_json())?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    let read_result = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the input reader panicked"))?;
    read_result.with_context(|| format!("cannot read {file}"))?;
    ledger.close();
    let secs = started.elapsed().as_secs_f64();
    let total = committed + refused + invalid + unknown;
    let stats = ledger.stats();
    eprintln!(
        "{committed} committed, {refused} refused, {invalid} invalid, {unknown} unknown in {secs:.2} s ({:.0} commands/s; {} durable batches, {} fdatasyncs)",
        total as f64 / secs.max(1e-9),
        stats.batches,
        stats.fdatasyncs
    );
    Ok(if unknown > 0 {
        ExitCode::from(super::exit::STORAGE)
    } else if invalid > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &str, limit: usize) -> Vec<String> {
        let mut r = std::io::Cursor::new(input.as_bytes().to_vec());
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_bounded_line(&mut r, &mut buf, limit).unwrap() {
                LineRead::End => return out,
                LineRead::Line => out.push(String::from_utf8(buf.clone()).unwrap()),
                LineRead::TooLong(n) => out.push(format!("TOO LONG {n}")),
            }
        }
    }

    #[test]
    fn bounded_lines_split_on_newlines_and_flag_long_lines_without_keeping_them() {
        assert_eq!(lines("a\nbb\r\n\nccc", 10), vec!["a", "bb", "", "ccc"]);
        assert_eq!(lines("0123456789AB\nok\n", 10), vec!["TOO LONG 12", "ok"]);
        assert_eq!(lines("0123456789\n", 10), vec!["0123456789"]);
    }
}
