//! The stream: created with settings under which it can always hold positions 1..head (file storage, no limits,
//! nothing deletable), or checked to have them; and where the relay continues, once its last message is shown to be
//! the ledger's event at that position.

use std::time::Duration;

use async_nats::jetstream::{self, stream as js};

use super::{Config, Described, Fault, Source};
use crate::domain::Position;

/// How long the stream remembers a message id: a publish retried within it is answered as a duplicate.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

fn settings(config: &Config) -> js::Config {
    js::Config {
        name: config.stream.clone(),
        description: Some(
            "partner-ledger events: stream sequence N is ledger position N (docs/streams.md)"
                .into(),
        ),
        subjects: vec![format!("{}.>", config.prefix)],
        storage: js::StorageType::File,
        retention: js::RetentionPolicy::Limits,
        max_messages: -1,
        max_bytes: -1,
        max_messages_per_subject: -1,
        max_age: Duration::ZERO,
        num_replicas: config.replicas.max(1),
        duplicate_window: DUPLICATE_WINDOW,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        ..Default::default()
    }
}

/// What an existing stream has that would let it lose or refuse a position, if anything.
fn unfit(found: &js::Config, config: &Config) -> Option<String> {
    let subjects = format!("{}.>", config.prefix);
    let mut why = Vec::new();
    if found.storage != js::StorageType::File {
        why.push("its storage is not file".to_string());
    }
    if found.retention != js::RetentionPolicy::Limits {
        why.push("its retention is not limits (messages would be removed once consumed)".into());
    }
    if found.max_messages > 0 || found.max_bytes > 0 || found.max_messages_per_subject > 0 {
        why.push("it has a message or byte limit".into());
    }
    if found.max_age > Duration::ZERO {
        why.push(format!("its messages expire (max_age {:?})", found.max_age));
    }
    if !found.deny_delete || !found.deny_purge {
        why.push(
            "it allows deleting or purging messages (deny_delete and deny_purge must be set)"
                .into(),
        );
    }
    if found.duplicate_window.is_zero() {
        why.push("it has no duplicate window".into());
    }
    if found.subjects != [subjects.clone()] {
        why.push(format!(
            "its subjects ({}) are not exactly {subjects}",
            found.subjects.join(", ")
        ));
    }
    if found.sealed {
        why.push("it is sealed".into());
    }
    if found.mirror.is_some() || found.sources.as_ref().is_some_and(|s| !s.is_empty()) {
        why.push("it mirrors or sources another stream".into());
    }
    if found.max_message_size > 0 && found.max_message_size < 1024 * 1024 {
        why.push(format!(
            "its largest message ({} bytes) is below 1 MiB",
            found.max_message_size
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// The stream, created when missing, or checked when it exists.
pub(super) async fn ensure(
    context: &jetstream::Context,
    config: &Config,
) -> Result<js::Stream, Fault> {
    match context.get_stream(&config.stream).await {
        Ok(mut stream) => {
            let info = stream
                .info()
                .await
                .map_err(|e| Fault::Passing(format!("reading stream {}: {e}", config.stream)))?;
            if let Some(why) = unfit(&info.config, config) {
                return Err(Fault::Fatal(format!(
                    "stream {} cannot hold the ledger's positions 1..head: {why}. Fix its settings (nats stream edit) or choose another --nats-stream (docs/streams.md)",
                    config.stream
                )));
            }
            Ok(stream)
        }
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            tracing::info!(stream = %config.stream, "creating the JetStream stream; relaying from position 1");
            context
                .create_stream(settings(config))
                .await
                .map_err(|e| Fault::Passing(format!("cannot create stream {}: {e}", config.stream)))
        }
        Err(e) => Err(Fault::Passing(format!(
            "cannot read stream {} at {}: {e}",
            config.stream,
            config.place()
        ))),
    }
}

/// The position the stream ends at, once its last message is shown to be the ledger's event there. The last message
/// is enough: every publish requires the stream to end with the ledger's previous event
/// (`Nats-Expected-Last-Msg-Id` and `Nats-Expected-Last-Sequence`), so after a foreign message nothing of the ledger's
/// can be appended, and a foreign message can only ever be the last one.
pub(super) async fn check(
    stream: &mut js::Stream,
    source: &Source,
    config: &Config,
) -> Result<Position, Fault> {
    let name = &config.stream;
    let state = stream
        .info()
        .await
        .map_err(|e| Fault::Passing(format!("reading stream {name}: {e}")))?
        .state
        .clone();
    let last = state.last_sequence;
    if last == 0 {
        return Ok(Position(0));
    }
    if state.first_sequence != 1 || state.messages != last {
        return Err(Fault::Fatal(format!(
            "stream {name} holds {} messages between sequences {} and {last}: some were removed, so it can no longer hold positions 1..head. Delete the stream to have it rebuilt from position 1",
            state.messages, state.first_sequence
        )));
    }
    // A process that follows a shared ledger may not have read up to what another process's relay published yet: it
    // waits a little for its own head before judging the stream beyond it.
    let mut head = source.head().await.map_err(Fault::Passing)?;
    let waiting = std::time::Instant::now();
    while last > head.0 && waiting.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        head = source.head().await.map_err(Fault::Passing)?;
    }
    let message = stream
        .get_raw_message(last)
        .await
        .map_err(|e| Fault::Passing(format!("reading sequence {last} of stream {name}: {e}")))?;
    let header = |h: &str| {
        message
            .headers
            .get(h)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default()
    };
    if last > head.0 {
        return Err(Fault::Fatal(format!(
            "stream {name} ends at sequence {last}, beyond the ledger's head {head}: its message at sequence {last} (subject {}, Nats-Msg-Id `{}`) was not published by this ledger's relay. Remove what published it, then delete the stream to have it rebuilt",
            message.subject,
            header("Nats-Msg-Id")
        )));
    }
    let raw = source
        .event_at(Position(last))
        .await
        .map_err(Fault::Passing)?;
    let ours = Described::of(&raw).map_err(Fault::Passing)?;
    if header("Nats-Msg-Id") != ours.event_id || header("ce-ledgerhash") != ours.hash {
        return Err(Fault::Fatal(format!(
            "stream {name}'s message at sequence {last} is not the ledger's event at position {last}: it has Nats-Msg-Id `{}` and ce-ledgerhash `{}` (subject {}), the ledger has event {} with hash {}. Something else published into the stream, or it holds another ledger's events; delete it to have it rebuilt",
            header("Nats-Msg-Id"),
            header("ce-ledgerhash"),
            message.subject,
            ours.event_id,
            ours.hash
        )));
    }
    Ok(Position(last))
}
